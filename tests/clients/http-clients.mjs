// What Apollo Client 4 and graphql-request 7 make of Zixly's answers: one JSON line per
// client and case, {client, case, data?, graphQLCodes?, errorKind, status?}.
// Usage: node http-clients.mjs <graphql URL> <good bearer token>
// The pytest side (tests/test_graphql_clients.py) decides what passes.
import { ApolloClient, CombinedGraphQLErrors, HttpLink, InMemoryCache, gql } from '@apollo/client';
import { ClientError, GraphQLClient } from 'graphql-request';

const [url, token] = process.argv.slice(2);
const out = (line) => console.log(JSON.stringify(line));
const QUERY = '{ me { email } }';
const CASES = { authenticated: `Bearer ${token}`, 'bad-token': 'Bearer not-a-jwt' };

for (const [name, authorization] of Object.entries(CASES)) {
  const apollo = new ApolloClient({
    link: new HttpLink({ uri: url, headers: { authorization } }),
    cache: new InMemoryCache(),
  });
  try {
    const result = await apollo.query({ query: gql(QUERY), fetchPolicy: 'no-cache' });
    out({ client: 'apollo', case: name, data: result.data });
  } catch (error) {
    const graphQL = CombinedGraphQLErrors.is(error);
    out({
      client: 'apollo',
      case: name,
      errorKind: graphQL ? 'graphql' : error.name,
      graphQLCodes: graphQL ? error.errors.map((e) => e.extensions?.code) : null,
      status: error.statusCode ?? null,
    });
  }

  const request = new GraphQLClient(url, { headers: { authorization } });
  try {
    out({ client: 'graphql-request', case: name, data: await request.request(QUERY) });
  } catch (error) {
    const client = error instanceof ClientError;
    out({
      client: 'graphql-request',
      case: name,
      errorKind: client ? 'graphql' : error.name,
      graphQLCodes: client ? (error.response.errors ?? []).map((e) => e.extensions?.code) : null,
      status: client ? error.response.status : null,
    });
  }
}
