'use strict';
/**
 * The parts of the "Zixly Ingest" node that need no n8n: batching, the request body of
 * contract C1, and turning the endpoint's answers into messages a workflow author can act on.
 */

const KINDS = ['financials', 'lead-events', 'custom-metrics'];
const MAX_SHOWN_ERRORS = 10;

/** [[start, end), ...] covering `count` items in batches of `size`. */
function batchRanges(count, size) {
	const step = Math.max(1, Math.floor(size));
	const ranges = [];
	for (let start = 0; start < count; start += step) ranges.push([start, Math.min(count, start + step)]);
	return ranges;
}

/** The C1 body: lineage (workflow, execution), where the data came from, the records. */
function envelope({ workflowId, executionId, sourceSystem, records }) {
	return {
		workflow_id: workflowId === undefined || workflowId === null ? null : String(workflowId),
		execution_id: executionId === undefined || executionId === null ? null : String(executionId),
		source_system: sourceSystem,
		records,
	};
}

/** Seconds to wait before retrying (Retry-After: delta-seconds or an HTTP date), capped. */
function retryAfterSeconds(headers, fallback, cap) {
	const raw = headers && (headers['retry-after'] || headers['Retry-After']);
	let seconds = Number(raw);
	if (!Number.isFinite(seconds) && raw) {
		const at = Date.parse(String(raw));
		seconds = Number.isFinite(at) ? (at - Date.now()) / 1000 : NaN;
	}
	if (!Number.isFinite(seconds) || seconds < 0) seconds = fallback;
	return Math.min(seconds, cap);
}

/**
 * What went wrong with one batch, as {message, description, itemIndex}: the item numbers
 * are the node's input items (the endpoint counts from the batch's first record).
 */
function describeFailure({ kind, statusCode, body, start, end, batch, batches }) {
	const answer = body && typeof body === 'object' ? body : {};
	const written = batch > 0 ? ` Batches 1-${batch} were written before it.` : '';
	const where = `${kind} batch ${batch + 1} of ${batches} (items ${start}-${end - 1})`;
	if (statusCode === 422 && Array.isArray(answer.errors)) {
		const lines = answer.errors.map((e) => {
			const item = Number.isInteger(e.index) ? `item ${start + e.index}` : 'request';
			return `${item}${e.field ? `, ${e.field}` : ''}: ${e.message}`;
		});
		const shown = lines.slice(0, MAX_SHOWN_ERRORS).join('; ');
		const more = lines.length > MAX_SHOWN_ERRORS ? ` (and ${lines.length - MAX_SHOWN_ERRORS} more)` : '';
		const first = answer.errors.find((e) => Number.isInteger(e.index));
		return {
			message: `Zixly ingest refused ${where}: ${answer.errors.length} error(s); nothing in this batch was written: ${shown}${more}`,
			description: `${lines.join('\n')}${answer.truncated ? '\n(the endpoint reported only the first errors)' : ''}${written}`,
			itemIndex: first ? start + first.index : undefined,
		};
	}
	const reason = answer.message || (typeof body === 'string' ? body.slice(0, 300) : '') || 'no message';
	const hint = {
		401: 'The ingest token was refused (unknown, revoked or expired): update the Zixly Ingest API credential.',
		413: 'The batch is too large for the endpoint: lower "Batch Size".',
		429: 'The tenant is over its ingest rate limit and the retries ran out.',
	}[statusCode] || '';
	return {
		message: `Zixly ingest answered ${statusCode} to ${where}: ${reason}`,
		description: `${hint}${written}`.trim(),
		itemIndex: start,
	};
}

module.exports = { KINDS, batchRanges, describeFailure, envelope, retryAfterSeconds };
