'use strict';
/**
 * "Zixly AU Rules": Australian business rules as an n8n node (ABN/ACN/TFN check digits,
 * GST, the BAS GST section, PAYG withholding, the super guarantee).
 *
 * All arithmetic is in ../../lib/au-rules.js (exact cents, the Python library's rounding)
 * and all rates come from ../../lib/au-rules-data.json, generated from the Python tables.
 * This file only maps node parameters to those functions and results back to items.
 * A bad input fails the execution with a NodeOperationError naming the item and field
 * (or, with "On Error: Continue", becomes that item's `error`), never a crash.
 */

const rules = require('../../lib/au-rules.js');
const { nodeError } = require('../../lib/node-errors.js');

const IDENTIFIER_OPS = ['validateAbn', 'validateAcn', 'validateTfn'];
const GST_OPS = ['gstFromInclusive', 'gstFromExclusive'];

const show = (operations) => ({ show: { operation: operations } });

const properties = [
	{
		displayName: 'Operation',
		name: 'operation',
		type: 'options',
		noDataExpression: true,
		default: 'validateAbn',
		options: [
			{ name: 'Validate ABN', value: 'validateAbn', action: 'Validate an ABN', description: 'Check an Australian Business Number (ABR check digits)' },
			{ name: 'Validate ACN', value: 'validateAcn', action: 'Validate an ACN', description: 'Check an Australian Company Number (ASIC check digit; also ARBN/ARSN)' },
			{ name: 'Validate TFN', value: 'validateTfn', action: 'Validate a TFN', description: 'Check a Tax File Number; payroll substitute codes are recognised, not accepted' },
			{ name: 'GST From GST-Inclusive Amount', value: 'gstFromInclusive', action: 'GST in a GST-inclusive amount', description: 'The GST contained in an amount (amount / 11, half a cent up)' },
			{ name: 'GST From GST-Exclusive Amount', value: 'gstFromExclusive', action: 'GST to add to an amount', description: 'The GST to add to an amount (10%, half a cent up)' },
			{ name: 'BAS GST Summary', value: 'basGstSummary', action: 'Summarise BAS GST labels', description: 'G1-G20, 1A, 1B and net GST over all input items (one item per sale or purchase)' },
			{ name: 'PAYG Withholding', value: 'paygWithholding', action: 'Work out PAYG withholding', description: 'Tax to withhold from one pay (Schedule 1, NAT 1004, from 1 July 2024)' },
			{ name: 'Super Guarantee', value: 'superGuarantee', action: 'Look up the super guarantee', description: 'SG rate for a payment date, quarterly due date and maximum contribution base' },
		],
	},
	// identifiers
	{
		displayName: 'Number',
		name: 'value',
		type: 'string',
		default: '',
		placeholder: '51 824 753 556',
		description: 'The number to check; spaces are ignored',
		displayOptions: show(IDENTIFIER_OPS),
	},
	{
		displayName: 'Fail on Invalid Number',
		name: 'failOnInvalid',
		type: 'boolean',
		default: false,
		description: 'Whether an invalid number fails the node (instead of being reported with valid = false and a reason)',
		displayOptions: show(IDENTIFIER_OPS),
	},
	// GST
	{
		displayName: 'Amount',
		name: 'amount',
		type: 'string',
		default: '',
		placeholder: '110.00',
		description: 'Dollars with at most two decimal places, e.g. 110 or "1234.50"; not negative',
		displayOptions: show(GST_OPS),
	},
	// BAS
	{
		displayName: 'Each input item is one sale or purchase line; the summary covers all items and comes out as one item.',
		name: 'basNotice',
		type: 'notice',
		default: '',
		displayOptions: show(['basGstSummary']),
	},
	{
		displayName: 'Line Type',
		name: 'lineType',
		type: 'string',
		default: '={{ $json.type }}',
		description: '"sale" or "purchase"',
		displayOptions: show(['basGstSummary']),
	},
	{
		displayName: 'Line Amount',
		name: 'lineAmount',
		type: 'string',
		default: '={{ $json.amount }}',
		description: 'GST-inclusive amount of the line, at most two decimal places',
		displayOptions: show(['basGstSummary']),
	},
	{
		displayName: 'Treatment',
		name: 'treatment',
		type: 'string',
		default: '={{ $json.treatment }}',
		description: 'Sales: taxable, gst_free, export, input_taxed. Purchases: taxable, gst_free, input_taxed. Empty: taxable.',
		displayOptions: show(['basGstSummary']),
	},
	{
		displayName: 'Capital Purchase',
		name: 'capital',
		type: 'string',
		default: '={{ $json.capital }}',
		description: 'Purchases only: true for G10 (capital), otherwise G11. Empty: false.',
		displayOptions: show(['basGstSummary']),
	},
	{
		displayName: 'Purchase Use',
		name: 'use',
		type: 'string',
		default: '={{ $json.use }}',
		description: 'Purchases only: business, input_taxed_sales (G13) or private (G15). Empty: business.',
		displayOptions: show(['basGstSummary']),
	},
	{
		displayName: 'G7 Adjustments (Whole Dollars)',
		name: 'g7',
		type: 'number',
		default: 0,
		typeOptions: { minValue: 0, numberPrecision: 0 },
		displayOptions: show(['basGstSummary']),
	},
	{
		displayName: 'G18 Adjustments (Whole Dollars)',
		name: 'g18',
		type: 'number',
		default: 0,
		typeOptions: { minValue: 0, numberPrecision: 0 },
		displayOptions: show(['basGstSummary']),
	},
	// PAYG
	{
		displayName: 'Earnings',
		name: 'earnings',
		type: 'string',
		default: '',
		placeholder: '1000.00',
		description: 'Gross earnings of this pay (with allowances subject to withholding), at most two decimal places',
		displayOptions: show(['paygWithholding']),
	},
	{
		displayName: 'Pay Period',
		name: 'period',
		type: 'options',
		default: 'weekly',
		options: [
			{ name: 'Weekly', value: 'weekly' },
			{ name: 'Fortnightly', value: 'fortnightly' },
			{ name: 'Monthly', value: 'monthly' },
			{ name: 'Quarterly', value: 'quarterly' },
		],
		displayOptions: show(['paygWithholding']),
	},
	{
		displayName: 'Tax-Free Threshold Claimed',
		name: 'taxFreeThreshold',
		type: 'boolean',
		default: true,
		description: 'Whether the employee claimed the tax-free threshold (scale 2); otherwise scale 1',
		displayOptions: show(['paygWithholding']),
	},
	// super
	{
		displayName: 'Payment Date',
		name: 'paymentDate',
		type: 'string',
		default: '',
		placeholder: '2025-07-01',
		description: 'The date the contribution is paid (YYYY-MM-DD): the SG rate follows the payment date, not the work period',
		displayOptions: show(['superGuarantee']),
	},
	{
		displayName: 'Result Field',
		name: 'resultField',
		type: 'string',
		default: 'result',
		description: 'Name of the field the result is written to (the input fields are kept)',
	},
];

function compute(ctx, operation, i) {
	const param = (name, fallback) => ctx.getNodeParameter(name, i, fallback);
	switch (operation) {
		case 'validateAbn':
		case 'validateAcn':
		case 'validateTfn': {
			const check = { validateAbn: rules.validateAbn, validateAcn: rules.validateAcn, validateTfn: rules.validateTfn }[operation];
			const result = check(param('value', ''));
			if (!result.valid && param('failOnInvalid', false)) {
				throw new rules.RuleError(rules.describeInvalid(result), { field: 'value', reason: result.reason });
			}
			return result;
		}
		case 'gstFromInclusive':
			return rules.gstFromInclusive(param('amount', ''));
		case 'gstFromExclusive':
			return rules.gstFromExclusive(param('amount', ''));
		case 'paygWithholding':
			return rules.paygWithholding(param('earnings', ''), param('period', 'weekly'), param('taxFreeThreshold', true));
		case 'superGuarantee':
			return rules.superGuarantee(param('paymentDate', ''));
		default:
			throw new rules.RuleError(`unknown operation ${JSON.stringify(operation)}`, { field: 'operation', reason: 'unknown_value' });
	}
}

function parseFlag(value) {
	if (value === 'true') return true;
	if (value === 'false') return false;
	return value;
}

/** The failure as the node reports it: the rule's message, plus which field and why. */
function describe(error) {
	const parts = [];
	if (error.field) parts.push(`field: ${error.field}`);
	if (error.reason) parts.push(`reason: ${error.reason}`);
	return parts.join(', ');
}

function failure(ctx, error, itemIndex) {
	if (!(error instanceof rules.RuleError)) return error;
	const where = itemIndex === undefined ? '' : ` (item ${itemIndex})`;
	return nodeError(ctx, `${error.message}${where}`, { itemIndex, description: describe(error) });
}

class ZixlyAuRules {
	constructor() {
		this.description = {
			displayName: 'Zixly AU Rules',
			name: 'zixlyAuRules',
			icon: 'file:zixly.svg',
			group: ['transform'],
			version: 1,
			subtitle: '={{ $parameter["operation"] }}',
			description: 'Australian business rules: ABN/ACN/TFN, GST, BAS GST summary, PAYG withholding, super guarantee',
			defaults: { name: 'Zixly AU Rules' },
			inputs: ['main'],
			outputs: ['main'],
			properties,
		};
	}

	async execute() {
		const items = this.getInputData();
		const operation = this.getNodeParameter('operation', 0);
		const resultField = this.getNodeParameter('resultField', 0, 'result') || 'result';
		if (operation === 'basGstSummary') return [await basSummary(this, items, resultField)];
		const out = [];
		for (let i = 0; i < items.length; i++) {
			try {
				const result = compute(this, operation, i);
				out.push({ json: { ...items[i].json, [resultField]: result }, pairedItem: { item: i } });
			} catch (error) {
				if (this.continueOnFail() && error instanceof rules.RuleError) {
					out.push({
						json: { ...items[i].json, error: error.message, errorField: error.field || null, errorReason: error.reason || null },
						pairedItem: { item: i },
					});
					continue;
				}
				throw failure(this, error, i);
			}
		}
		return [out];
	}
}

async function basSummary(ctx, items, resultField) {
	const lines = items.map((_, i) => ({
		type: ctx.getNodeParameter('lineType', i, undefined),
		amount: ctx.getNodeParameter('lineAmount', i, undefined),
		treatment: ctx.getNodeParameter('treatment', i, undefined),
		capital: parseFlag(ctx.getNodeParameter('capital', i, undefined)),
		use: ctx.getNodeParameter('use', i, undefined),
	}));
	try {
		const summary = rules.basGstSummary(lines, {
			g7: ctx.getNodeParameter('g7', 0, 0),
			g18: ctx.getNodeParameter('g18', 0, 0),
		});
		return [{ json: { [resultField]: summary, lines: lines.length }, pairedItem: items.map((_, i) => ({ item: i })) }];
	} catch (error) {
		const match = error instanceof rules.RuleError && /^lines\[(\d+)\]/.exec(error.field || '');
		const itemIndex = match ? Number(match[1]) : undefined;
		if (ctx.continueOnFail() && error instanceof rules.RuleError) {
			return [{ json: { error: error.message, errorField: error.field || null, errorReason: error.reason || null } }];
		}
		throw failure(ctx, error, itemIndex);
	}
}

module.exports = { ZixlyAuRules };
