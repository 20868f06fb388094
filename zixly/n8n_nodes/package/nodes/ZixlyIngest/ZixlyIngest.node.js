'use strict';
/**
 * "Zixly Ingest": posts the node's input items as records to the Zixly ingest endpoint
 * (contract C1): `POST {url}/<kind>` with `{workflow_id, execution_id, source_system,
 * records}`, in batches, authenticated by the "Zixly Ingest API" credential.
 *
 * The endpoint validates a batch as a whole: a 422 means nothing of that batch was written,
 * and the node fails with every per-record error mapped back to its input item. 429 and
 * 503 are retried after Retry-After (a few times); anything else fails the node with the
 * endpoint's message. Each batch answered 200 becomes one output item with its counts.
 */

const ingest = require('../../lib/ingest.js');
const { nodeError } = require('../../lib/node-errors.js');

const RETRY_STATUSES = new Set([429, 503]);
const MAX_WAIT_SECONDS = 60;

const sleep = (seconds) => new Promise((resolve) => setTimeout(resolve, Math.max(0, seconds) * 1000));

class ZixlyIngest {
	constructor() {
		this.description = {
			displayName: 'Zixly Ingest',
			name: 'zixlyIngest',
			icon: 'file:zixly.svg',
			group: ['output'],
			version: 1,
			subtitle: '={{ $parameter["kind"] }}',
			description: "Send records to Zixly's ingest API (financials, lead events, custom metrics)",
			defaults: { name: 'Zixly Ingest' },
			inputs: ['main'],
			outputs: ['main'],
			credentials: [{ name: 'zixlyIngestApi', required: true }],
			properties: [
				{
					displayName: 'Record Kind',
					name: 'kind',
					type: 'options',
					noDataExpression: true,
					default: 'financials',
					options: [
						{ name: 'Financials', value: 'financials', description: 'client_id, record_date, revenue, expenses, ...' },
						{ name: 'Lead Events', value: 'lead-events', description: 'client_id, lead_id, stage, status, event_date, ...' },
						{ name: 'Custom Metrics', value: 'custom-metrics', description: 'client_id, metric_name, metric_value, record_date, ...' },
					],
				},
				{
					displayName: 'Source System',
					name: 'sourceSystem',
					type: 'string',
					default: 'n8n',
					required: true,
					description: 'Where the records come from (lowercase, e.g. xero, hubspot)',
				},
				{
					displayName: 'Batch Size',
					name: 'batchSize',
					type: 'number',
					default: 500,
					typeOptions: { minValue: 1, numberPrecision: 0 },
					description: 'Records per request; each request is written all or nothing',
				},
				{
					displayName: 'Options',
					name: 'options',
					type: 'collection',
					placeholder: 'Add option',
					default: {},
					options: [
						{
							displayName: 'Record Field',
							name: 'recordField',
							type: 'string',
							default: '',
							description: 'Send this field of each item as the record (default: the whole item). The endpoint refuses unknown fields.',
						},
						{
							displayName: 'Retries When Rate-Limited',
							name: 'maxRetries',
							type: 'number',
							default: 3,
							typeOptions: { minValue: 0, maxValue: 10, numberPrecision: 0 },
							description: 'How often to retry a batch answered 429 or 503, waiting as Retry-After says (at most 60 s)',
						},
					],
				},
			],
		};
	}

	async execute() {
		const items = this.getInputData();
		const kind = this.getNodeParameter('kind', 0);
		const sourceSystem = this.getNodeParameter('sourceSystem', 0);
		const batchSize = this.getNodeParameter('batchSize', 0, 500);
		const options = this.getNodeParameter('options', 0, {});
		if (!ingest.KINDS.includes(kind)) {
			throw nodeError(this, `unknown record kind ${JSON.stringify(kind)} (one of ${ingest.KINDS.join(', ')})`);
		}
		const credentials = await this.getCredentials('zixlyIngestApi');
		const base = String(credentials.url || '').replace(/\/+$/, '');
		if (!/^https?:\/\//.test(base)) {
			throw nodeError(this, 'the Zixly Ingest API credential has no http(s) URL');
		}
		const field = options.recordField || '';
		const records = items.map((item, i) => {
			const record = field ? item.json[field] : item.json;
			if (record === null || typeof record !== 'object' || Array.isArray(record)) {
				throw nodeError(this, `item ${i} has no record${field ? ` in field "${field}"` : ''} (an object is needed)`, { itemIndex: i });
			}
			return record;
		});
		const workflowId = this.getWorkflow().id;
		const executionId = this.getExecutionId();
		const ranges = ingest.batchRanges(records.length, batchSize);
		const out = [];
		for (const [batch, [start, end]] of ranges.entries()) {
			const body = ingest.envelope({ workflowId, executionId, sourceSystem, records: records.slice(start, end) });
			const response = await post(this, `${base}/${kind}`, body, options.maxRetries ?? 3);
			if (response.statusCode !== 200) {
				const failure = ingest.describeFailure({
					kind,
					statusCode: response.statusCode,
					body: response.body,
					start,
					end,
					batch,
					batches: ranges.length,
				});
				throw nodeError(this, failure.message, { itemIndex: failure.itemIndex, description: failure.description });
			}
			const answer = response.body || {};
			out.push({
				json: {
					kind: answer.kind || kind,
					batch: batch + 1,
					firstItem: start,
					received: answer.received,
					inserted: answer.inserted,
					updated: answer.updated,
					unchanged: answer.unchanged,
				},
				pairedItem: Array.from({ length: end - start }, (_, k) => ({ item: start + k })),
			});
		}
		return [out];
	}
}

/**
 * One POST, retried on 429/503 after Retry-After; the full response (never throws on status).
 * `ctx` is the execute context (n8n calls execute with it as `this`, not the node object).
 */
async function post(ctx, url, body, maxRetries) {
	for (let attempt = 0; ; attempt++) {
		const response = await ctx.helpers.httpRequestWithAuthentication.call(ctx, 'zixlyIngestApi', {
			method: 'POST',
			url,
			body,
			json: true,
			returnFullResponse: true,
			ignoreHttpStatusErrors: true,
		});
		if (!RETRY_STATUSES.has(response.statusCode) || attempt >= maxRetries) return response;
		await sleep(ingest.retryAfterSeconds(response.headers, 2 ** attempt, MAX_WAIT_SECONDS));
	}
}

module.exports = { ZixlyIngest };
