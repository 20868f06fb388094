// Runs the GraphQL-over-HTTP audit suite (npm `graphql-http`'s auditServer) against a live
// Zixly and prints one JSON line per audit: {id, name, status, reason?, statusCode?, body?}.
// Usage: node audit-http.mjs <graphql URL> <bearer token>
// The pytest side (tests/test_graphql_http_audit.py) decides what passes.
import { serverAudits } from 'graphql-http';

const [url, token] = process.argv.slice(2);
if (!url || !token) {
  console.error('usage: node audit-http.mjs <url> <token>');
  process.exit(2);
}

// Every audit request carries the token: Zixly authenticates every operation.
const fetchFn = (input, init = {}) =>
  fetch(input, {
    ...init,
    headers: { ...(init.headers || {}), authorization: `Bearer ${token}` },
  });

// One audit at a time (auditServer runs them all at once): Zixly lets one user have at most
// ZIXLY_DB_USER_MAX_CONCURRENCY requests at the database at once and answers the others 429,
// which would read as failed audits.
for (const audit of serverAudits({ url, fetchFn })) {
  const result = await audit.fn();
  const line = { id: result.id, name: result.name, status: result.status };
  if (result.status !== 'ok') {
    line.reason = result.reason;
    line.statusCode = result.response.status;
    line.contentType = result.response.headers.get('content-type');
    try {
      line.body = await result.response.text();
    } catch {
      line.body = null; // read already by the audit
    }
  }
  console.log(JSON.stringify(line));
}
