'use strict';
/**
 * "Zixly Ingest API": where a tenant's workflows post their data (the ingest endpoint,
 * contract C1) and the tenant's ingest token (zik_...). The token goes out as
 * `Authorization: Bearer <token>`; n8n's "Test" button posts to {url}/heartbeat, which
 * answers 200 for a valid token and 401 otherwise.
 */

class ZixlyIngestApi {
	constructor() {
		this.name = 'zixlyIngestApi';
		this.displayName = 'Zixly Ingest API';
		this.documentationUrl = 'https://zixly.local/docs/ingest';
		this.icon = 'file:zixly.svg';
		this.properties = [
			{
				displayName: 'Ingest URL',
				name: 'url',
				type: 'string',
				default: 'http://127.0.0.1:8000/ingest/v1',
				required: true,
				description: 'Base URL of the Zixly ingest endpoint (ends in /ingest/v1)',
			},
			{
				displayName: 'Ingest Token',
				name: 'token',
				type: 'string',
				typeOptions: { password: true },
				default: '',
				required: true,
				description: "The tenant's ingest token (zik_...)",
			},
		];
		this.authenticate = {
			type: 'generic',
			properties: {
				headers: { Authorization: '=Bearer {{$credentials.token}}' },
			},
		};
		this.test = {
			request: {
				baseURL: '={{$credentials.url.replace(/\\/+$/, "")}}',
				url: '/heartbeat',
				method: 'POST',
			},
		};
	}
}

module.exports = { ZixlyIngestApi };
