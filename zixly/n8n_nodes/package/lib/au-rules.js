'use strict';
/**
 * Australian business rules for the Zixly n8n nodes: the JavaScript twin of the Python
 * library zixly.n8n_nodes (identifiers, GST, BAS, PAYG withholding, super guarantee).
 *
 * Why a twin: n8n cannot import Python, and a node that called the Zixly API for every item
 * would make every workflow depend on the control plane being up. So the arithmetic is
 * written twice, but the DATA is not: every rate, weight and coefficient comes from
 * au-rules-data.json, which `python -m zixly.n8n_nodes.export` generates from the Python
 * tables (a test fails when it drifts), and both implementations are checked against one
 * file of published test vectors (tests/au_rules_vectors.json).
 *
 * Money is exact: amounts are parsed into BigInt cents and every division rounds the way
 * the Python library does (GST half a cent up, BAS cents dropped, PAYG to the nearest
 * dollar with 50 cents up). A JSON number is accepted only if its shortest decimal form has
 * at most two decimal places (so 0.1 + 0.2 is refused, not rounded).
 *
 * Plain CommonJS with no dependencies: n8n loads this file from N8N_CUSTOM_EXTENSIONS.
 */

const DATA = require('./au-rules-data.json');

class RuleError extends Error {
	/**
	 * @param {string} message
	 * @param {{code?: string, field?: string, reason?: string}} [details]
	 */
	constructor(message, details = {}) {
		super(message);
		this.name = 'RuleError';
		this.code = details.code || 'VALIDATION_ERROR';
		this.field = details.field;
		this.reason = details.reason;
	}
}

// --- decimals ------------------------------------------------------------------------------

const DECIMAL = /^([+-]?)(\d*)(?:\.(\d*))?(?:[eE]([+-]?\d+))?$/;
const NOT_FINITE = /^[+-]?(?:s?nan|inf|infinity)$/i;
const MAX_EXPONENT = 64;

/** `text` as {negative, digits (BigInt), exponent} or null when it is not a decimal. */
function parseDecimal(text) {
	const match = DECIMAL.exec(text);
	if (!match || (match[2] === '' && (match[3] === undefined || match[3] === ''))) return null;
	const fraction = match[3] || '';
	const exponent = Number(match[4] || '0') - fraction.length;
	if (!Number.isSafeInteger(exponent) || Math.abs(exponent) > MAX_EXPONENT) return null;
	return { negative: match[1] === '-', digits: BigInt((match[2] || '0') + fraction), exponent };
}

/** A decimal string with up to `places` decimals, as an integer scaled by 10^places. */
function scaled(text, places) {
	const parsed = parseDecimal(String(text));
	if (parsed === null) throw new RuleError(`not a decimal: ${text}`);
	const shift = parsed.exponent + places;
	if (shift < 0 && parsed.digits % 10n ** BigInt(-shift) !== 0n) {
		throw new RuleError(`${text} has more than ${places} decimal places`);
	}
	const value = shift >= 0 ? parsed.digits * 10n ** BigInt(shift) : parsed.digits / 10n ** BigInt(-shift);
	return parsed.negative ? -value : value;
}

/**
 * A money input as BigInt cents; a RuleError with the Python library's reasons otherwise
 * (type, not_a_number, not_finite, negative, precision).
 */
function cents(value, field = 'amount') {
	let text;
	if (typeof value === 'string') {
		text = value.trim();
	} else if (typeof value === 'number') {
		if (!Number.isFinite(value)) {
			throw new RuleError(`${field} must be finite`, { field, reason: 'not_finite' });
		}
		text = String(value);
	} else if (typeof value === 'bigint') {
		text = value.toString();
	} else {
		const kind = value === null ? 'null' : Array.isArray(value) ? 'array' : typeof value;
		throw new RuleError(`${field} must be a decimal string or a number, not ${kind}`, {
			field,
			reason: 'type',
		});
	}
	if (NOT_FINITE.test(text)) {
		throw new RuleError(`${field} must be finite`, { field, reason: 'not_finite' });
	}
	const parsed = parseDecimal(text);
	if (parsed === null) {
		throw new RuleError(`${field} is not a number: ${JSON.stringify(value)}`, {
			field,
			reason: 'not_a_number',
		});
	}
	if (parsed.negative && parsed.digits !== 0n) {
		throw new RuleError(`${field} must not be negative`, { field, reason: 'negative' });
	}
	const shift = parsed.exponent + 2;
	if (shift < 0) {
		const divisor = 10n ** BigInt(-shift);
		if (parsed.digits % divisor !== 0n) {
			throw new RuleError(`${field} has more than two decimal places`, {
				field,
				reason: 'precision',
			});
		}
		return parsed.digits / divisor;
	}
	return parsed.digits * 10n ** BigInt(shift);
}

/** BigInt cents as "1234.56" (and "-0.50" for negatives). */
function formatCents(amount) {
	const sign = amount < 0n ? '-' : '';
	const abs = amount < 0n ? -amount : amount;
	return `${sign}${abs / 100n}.${String(abs % 100n).padStart(2, '0')}`;
}

/** n / d rounded to the nearest integer, halves away from zero (ROUND_HALF_UP). */
function roundHalfUp(n, d) {
	const negative = (n < 0n) !== (d < 0n);
	const an = n < 0n ? -n : n;
	const ad = d < 0n ? -d : d;
	const q = (2n * an + ad) / (2n * ad);
	return negative ? -q : q;
}

function toSafeNumber(value, field) {
	if (value > BigInt(Number.MAX_SAFE_INTEGER)) {
		throw new RuleError(`${field} is too large`, { field, reason: 'out_of_range' });
	}
	return Number(value);
}

// --- identifiers (ABR "Format of the ABN"; ASIC ACN check digit; TFN de facto) -----------

const IDS = DATA.identifiers;

function shape(kind, value, length) {
	if (typeof value === 'number' && Number.isSafeInteger(value) && value >= 0) value = String(value);
	if (typeof value !== 'string') {
		throw new RuleError(`${kind} must be text`, { field: 'value', reason: 'type' });
	}
	const digits = value.split(' ').join('');
	if (digits !== '' && !/^[0-9]+$/.test(digits)) {
		return { result: { kind, valid: false, digits, reason: 'non_digits', substitute: null } };
	}
	if (digits.length !== length) {
		return { result: { kind, valid: false, digits, reason: 'wrong_length', substitute: null } };
	}
	return { numbers: Array.from(digits, Number), digits };
}

function weighted(weights, numbers) {
	return weights.reduce((sum, weight, i) => sum + weight * numbers[i], 0);
}

function outcome(kind, digits, ok) {
	return { kind, valid: ok, digits, reason: ok ? null : 'check_digit', substitute: null };
}

function validateAbn(value) {
	const shaped = shape('ABN', value, 11);
	if (shaped.result) return shaped.result;
	const adjusted = [shaped.numbers[0] - 1, ...shaped.numbers.slice(1)];
	return outcome('ABN', shaped.digits, weighted(IDS.abn.weights, adjusted) % IDS.abn.modulus === 0);
}

function validateAcn(value, kind = 'ACN') {
	const shaped = shape(kind, value, 9);
	if (shaped.result) return shaped.result;
	const total = weighted(IDS.acn.weights, shaped.numbers.slice(0, 8));
	const check = (10 - (total % 10)) % 10;
	return outcome(kind, shaped.digits, check === shaped.numbers[8]);
}

function validateTfn(value) {
	if (typeof value === 'string') {
		const code = value.split(' ').join('');
		if (Object.prototype.hasOwnProperty.call(IDS.tfnSubstitutes, code)) {
			return {
				kind: 'TFN',
				valid: false,
				digits: code,
				reason: 'substitute_code',
				substitute: IDS.tfnSubstitutes[code],
			};
		}
	}
	const shaped = shape('TFN', value, 9);
	if (shaped.result) return shaped.result;
	return outcome('TFN', shaped.digits, weighted(IDS.tfn.weights, shaped.numbers) % IDS.tfn.modulus === 0);
}

const REASON_TEXT = {
	non_digits: 'contains characters other than digits and spaces',
	wrong_length: 'has the wrong number of digits',
	check_digit: 'fails the check-digit test',
	substitute_code: 'is a payroll substitute code, not a TFN',
};

function describeInvalid(result) {
	return `${result.kind} "${result.digits}" is not valid: ${REASON_TEXT[result.reason] || result.reason}`;
}

// --- GST (rate from the data; GST Act s9-90: half a cent rounds up) -----------------------

const GST_RATE = scaled(DATA.gst.rate, 4); // 0.10 -> 1000 (per 10,000)
const TEN_THOUSAND = 10000n;

function gstFromInclusive(amount) {
	const total = cents(amount);
	const gst = roundHalfUp(total * GST_RATE, TEN_THOUSAND + GST_RATE);
	return { amount: formatCents(total), gst: formatCents(gst), exclusiveAmount: formatCents(total - gst) };
}

function gstFromExclusive(amount) {
	const net = cents(amount);
	const gst = roundHalfUp(net * GST_RATE, TEN_THOUSAND);
	return { amount: formatCents(net), gst: formatCents(gst), inclusiveAmount: formatCents(net + gst) };
}

// --- BAS GST section (NAT 5107 worksheet; whole dollars, cents dropped) -------------------

const SALE_TREATMENTS = ['taxable', 'gst_free', 'export', 'input_taxed'];
const PURCHASE_TREATMENTS = ['taxable', 'gst_free', 'input_taxed'];
const PURCHASE_USES = ['business', 'input_taxed_sales', 'private'];

function choice(value, allowed, field, fallback) {
	if (value === undefined || value === null || value === '') return fallback;
	if (typeof value !== 'string' || !allowed.includes(value)) {
		throw new RuleError(`${field} must be one of ${allowed.join(', ')}, not ${JSON.stringify(value)}`, {
			field,
			reason: 'unknown_value',
		});
	}
	return value;
}

function flag(value, field) {
	if (value === undefined || value === null || value === '') return false;
	if (typeof value !== 'boolean') {
		throw new RuleError(`${field} must be true or false, not ${JSON.stringify(value)}`, {
			field,
			reason: 'type',
		});
	}
	return value;
}

function wholeDollars(value, field) {
	if (value === undefined || value === null || value === '') return 0n;
	const ok = (typeof value === 'number' && Number.isSafeInteger(value)) ||
		(typeof value === 'string' && /^[+-]?\d+$/.test(value.trim()));
	if (!ok) throw new RuleError(`${field} must be whole dollars (an integer)`, { field, reason: 'type' });
	const amount = BigInt(typeof value === 'string' ? value.trim() : value);
	if (amount < 0n) throw new RuleError(`${field} must not be negative`, { field, reason: 'negative' });
	return amount;
}

/**
 * @param {Array<{type: string, amount: unknown, treatment?: string, capital?: boolean, use?: string}>} lines
 */
function basGstSummary(lines, adjustments = {}) {
	if (!Array.isArray(lines)) throw new RuleError('lines must be a list', { field: 'lines', reason: 'type' });
	const sales = [];
	const purchases = [];
	lines.forEach((line, i) => {
		if (line === null || typeof line !== 'object') {
			throw new RuleError(`lines[${i}] must be an object`, { field: `lines[${i}]`, reason: 'type' });
		}
		const type = choice(line.type, ['sale', 'purchase'], `lines[${i}].type`, undefined);
		if (type === undefined) {
			throw new RuleError(`lines[${i}].type must be sale or purchase`, {
				field: `lines[${i}].type`,
				reason: 'missing',
			});
		}
		const amount = cents(line.amount, `lines[${i}].amount`);
		if (type === 'sale') {
			sales.push({ amount, treatment: choice(line.treatment, SALE_TREATMENTS, `lines[${i}].treatment`, 'taxable') });
		} else {
			purchases.push({
				amount,
				treatment: choice(line.treatment, PURCHASE_TREATMENTS, `lines[${i}].treatment`, 'taxable'),
				capital: flag(line.capital, `lines[${i}].capital`),
				use: choice(line.use, PURCHASE_USES, `lines[${i}].use`, 'business'),
			});
		}
	});
	const whole = (items) => items.reduce((sum, item) => sum + item.amount, 0n) / 100n;
	const g1 = whole(sales);
	const g2 = whole(sales.filter((s) => s.treatment === 'export'));
	const g3 = whole(sales.filter((s) => s.treatment === 'gst_free'));
	const g4 = whole(sales.filter((s) => s.treatment === 'input_taxed'));
	const g5 = g2 + g3 + g4;
	const g6 = g1 - g5;
	const g7 = wholeDollars(adjustments.g7, 'g7');
	const g8 = g6 + g7;
	const g9 = g8 / 11n;
	// Each purchase is excluded at most once: no GST in the price (G14) wins over its use.
	const withGst = purchases.filter((p) => p.treatment === 'taxable');
	const g10 = whole(purchases.filter((p) => p.capital));
	const g11 = whole(purchases.filter((p) => !p.capital));
	const g12 = g10 + g11;
	const g13 = whole(withGst.filter((p) => p.use === 'input_taxed_sales'));
	const g14 = whole(purchases.filter((p) => p.treatment !== 'taxable'));
	const g15 = whole(withGst.filter((p) => p.use === 'private'));
	const g16 = g13 + g14 + g15;
	const g17 = g12 - g16 > 0n ? g12 - g16 : 0n;
	const g18 = wholeDollars(adjustments.g18, 'g18');
	const g19 = g17 + g18;
	const g20 = g19 / 11n;
	const labels = { g1, g2, g3, g4, g5, g6, g7, g8, g9, g10, g11, g12, g13, g14, g15, g16, g17, g18, g19, g20 };
	const summary = {};
	for (const [label, amount] of Object.entries(labels)) summary[label] = toSafeNumber(amount, label);
	summary.label1A = summary.g9;
	summary.label1B = summary.g20;
	summary.netGst = summary.g9 - summary.g20;
	return summary;
}

// --- PAYG withholding (Schedule 1, NAT 1004; coefficients from the data) ------------------

const PERIODS = ['weekly', 'fortnightly', 'monthly', 'quarterly'];
const SCALES = Object.fromEntries(
	Object.entries(DATA.payg.scales).map(([scale, rows]) => [
		scale,
		rows.map((row) => ({
			below: row.lessThan === null ? null : BigInt(row.lessThan) * 100n,
			a: scaled(row.a, 4),
			b: scaled(row.b, 4),
		})),
	]),
);

/** Whole dollars withheld from weekly earnings of `dollars` whole dollars. */
function weeklyDollars(dollars, scale) {
	const x = dollars * 100n + 99n; // x in cents: whole dollars + $0.99
	const row = SCALES[scale].find((r) => r.below === null || x < r.below);
	const y = row.a * x - row.b * 100n; // dollars x 10^6
	return y > 0n ? roundHalfUp(y, 1000000n) : 0n;
}

function paygWithholding(earnings, period, taxFreeThreshold) {
	if (!PERIODS.includes(period)) {
		throw new RuleError(`unknown period ${JSON.stringify(period)} (expected one of: ${PERIODS.join(', ')})`, {
			field: 'period',
			reason: 'unknown_value',
		});
	}
	if (typeof taxFreeThreshold !== 'boolean') {
		throw new RuleError('taxFreeThreshold must be true or false', { field: 'taxFreeThreshold', reason: 'type' });
	}
	const scale = taxFreeThreshold ? '2' : '1';
	const original = cents(earnings, 'earnings');
	let amount = original;
	let dollars;
	if (period === 'weekly') {
		dollars = weeklyDollars(amount / 100n, scale);
	} else if (period === 'fortnightly') {
		dollars = weeklyDollars(amount / 200n, scale) * 2n;
	} else if (period === 'quarterly') {
		dollars = weeklyDollars(amount / 1300n, scale) * 13n;
	} else {
		if (amount % 100n === 33n) amount += 1n;
		const weekly = weeklyDollars((amount * 3n) / 1300n, scale);
		dollars = roundHalfUp(weekly * 13n, 3n);
	}
	return {
		earnings: formatCents(original),
		period,
		scale: Number(scale),
		taxFreeThreshold,
		withholding: formatCents(dollars * 100n),
	};
}

// --- super guarantee (ATO "Key super rates"; "When to pay super") --------------------------

const SG = DATA.superGuarantee;
const PAYDAY_SUPER_START = SG.paydaySuperStart;

function parseDay(value) {
	const text = typeof value === 'string' ? value.trim() : '';
	const match = /^(\d{4})-(\d{2})-(\d{2})(?:$|T)/.exec(text);
	if (match) {
		const [year, month, day] = [Number(match[1]), Number(match[2]), Number(match[3])];
		const check = new Date(Date.UTC(year, month - 1, day));
		if (check.getUTCFullYear() === year && check.getUTCMonth() === month - 1 && check.getUTCDate() === day) {
			return { year, month, day, iso: text.slice(0, 10) };
		}
	}
	throw new RuleError(`date must be a calendar date YYYY-MM-DD, not ${JSON.stringify(value)}`, {
		field: 'payment_date',
		reason: 'not_a_date',
	});
}

function fyLabel(fy) {
	return `${fy}-${String((fy + 1) % 100).padStart(2, '0')}`;
}

function superGuarantee(date) {
	const day = parseDay(date);
	const fy = day.month >= 7 ? day.year : day.year - 1;
	let rate;
	if (fy >= SG.rateFrom.financialYear) {
		rate = SG.rateFrom.rate;
	} else if (Object.prototype.hasOwnProperty.call(SG.rates, String(fy))) {
		rate = SG.rates[String(fy)];
	} else {
		throw new RuleError(`no SG rate recorded for ${fyLabel(fy)}`, { field: 'payment_date', reason: 'unavailable' });
	}
	const base = SG.maxContributionBasePerQuarter[String(fy)];
	const paydaySuper = day.iso >= PAYDAY_SUPER_START;
	let quarterlyDueDate = null;
	if (!paydaySuper) {
		const quarterEnd = Math.floor((day.month - 1) / 3) * 3 + 3;
		const dueMonth = (quarterEnd % 12) + 1;
		const dueYear = quarterEnd === 12 ? day.year + 1 : day.year;
		quarterlyDueDate = `${dueYear}-${String(dueMonth).padStart(2, '0')}-${String(SG.quarterlyDueDay).padStart(2, '0')}`;
	}
	return {
		date: day.iso,
		financialYear: fyLabel(fy),
		rate,
		maxContributionBasePerQuarter: base === undefined ? null : formatCents(scaled(base, 2)),
		quarterlyDueDate,
		paydaySuper,
	};
}

module.exports = {
	RuleError,
	basGstSummary,
	cents,
	describeInvalid,
	formatCents,
	gstFromExclusive,
	gstFromInclusive,
	paygWithholding,
	superGuarantee,
	validateAbn,
	validateAcn,
	validateTfn,
	PERIODS,
	DATA,
	_internal: { roundHalfUp, scaled },
};
