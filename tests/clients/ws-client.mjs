// Drives the real `graphql-ws` client against a live Zixly and prints what it saw, one JSON
// line per event: {event: "connected"|"next"|"error"|"complete"|"closed", ...}.
// Usage: node ws-client.mjs <ws URL> <scenario> [JSON arguments]
// Arguments: {params: connectionParams, operations: [{query, variables?}], take: n (nexts
// to wait for before leaving), delayInit: seconds (connectionParams resolve that late),
// sequential: run the operations one after another}.
// Scenarios that break the protocol on purpose rewrite what the client sends through its
// WebSocket (webSocketImpl); the client itself is unchanged. The pytest side
// (tests/test_graphql_ws_client.py) decides what passes.
import { createClient } from 'graphql-ws';
import WebSocket from 'ws';

const [url, scenario = 'plain', argsJson = '{}'] = process.argv.slice(2);
const args = JSON.parse(argsJson);
const out = (line) => console.log(JSON.stringify(line));
const sleep = (seconds) => new Promise((resolve) => setTimeout(resolve, seconds * 1000));

// A WebSocket whose outgoing messages `rewrite` turns into zero or more messages.
const tampering = (rewrite) =>
  class extends WebSocket {
    send(data) {
      for (const message of rewrite(JSON.parse(String(data)))) super.send(message);
    }
  };
const onInit = (then) => (message) =>
  message.type === 'connection_init' ? then(JSON.stringify(message)) : [JSON.stringify(message)];

const SOCKETS = {
  plain: WebSocket,
  // subscribe before the acknowledgement: 4401
  'subscribe-before-ack': tampering(
    onInit((init) => [
      JSON.stringify({ id: 'early', type: 'subscribe', payload: { query: '{ __typename }' } }),
      init,
    ]),
  ),
  // a second connection_init: 4429
  'double-init': tampering(onInit((init) => [init, init])),
  // a message that is none of the protocol's: 4400
  'bad-message': tampering(onInit((init) => [init, JSON.stringify({ type: 'nonsense' })])),
};

const options = {
  url,
  webSocketImpl: SOCKETS[scenario] ?? WebSocket,
  retryAttempts: 0,
  lazy: true,
  lazyCloseTimeout: 2000, // one socket for operations run one after another
  connectionParams: async () => {
    if (args.delayInit) await sleep(args.delayInit);
    return args.params ?? {};
  },
  on: {
    connected: (_socket, payload) => out({ event: 'connected', payload }),
    closed: (event) => out({ event: 'closed', code: event.code, reason: event.reason }),
  },
};
// the same id for every operation: 4409
if (scenario === 'duplicate-id') options.generateID = () => 'same';
const client = createClient(options);

const describe = (error) => {
  if (Array.isArray(error)) return { errors: error };
  if (error && typeof error === 'object' && 'code' in error && 'reason' in error)
    return { code: error.code, reason: error.reason };
  return { message: String(error?.message ?? error) };
};

const operations = args.operations ?? [{ query: '{ __typename }' }];
let nexts = 0;
let leave;
const enough = new Promise((resolve) => (leave = resolve));
const run = (payload, index) =>
  new Promise((resolve) => {
    client.subscribe(payload, {
      next: (value) => {
        out({ event: 'next', operation: index, payload: value });
        nexts += 1;
        if (args.take && nexts >= args.take) leave();
      },
      error: (error) => {
        out({ event: 'error', operation: index, ...describe(error) });
        resolve();
      },
      complete: () => {
        out({ event: 'complete', operation: index });
        resolve();
      },
    });
  });
// All at once, or (sequential) each after the previous one ended: one user may have only
// ZIXLY_DB_USER_MAX_CONCURRENCY operations at the database at once.
const done = args.sequential
  ? [operations.reduce((previous, payload, index) => previous.then(() => run(payload, index)), Promise.resolve())]
  : operations.map(run);
await Promise.race([Promise.all(done), enough]);
await client.dispose();
await sleep(0.05); // the closed event
process.exit(0);
