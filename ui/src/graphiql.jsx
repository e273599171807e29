// The GraphQL explorer: GraphiQL against this server's /graphql, queries and mutations
// over HTTP, subscriptions over a WebSocket speaking graphql-transport-ws.
import { createGraphiQLFetcher } from '@graphiql/toolkit';
import { GraphiQL } from 'graphiql';
// Monaco's workers (editor, JSON, GraphQL) bundled by Vite, not fetched from a CDN
import 'graphiql/setup-workers/vite';
import 'graphiql/style.css';
import { createClient } from 'graphql-ws';
import { StrictMode } from 'react';
import { createRoot } from 'react-dom/client';

const DEFAULT_QUERY = `# stepsaga's GraphQL API. Ctrl-Enter runs an operation;
# the docs (the book, top left) list them all.
{
  allSagas {
    name
  }
}
`;

// the same host and port as the page: the server checks a WebSocket's Origin
const wsScheme = window.location.protocol === 'https:' ? 'wss:' : 'ws:';
const fetcher = createGraphiQLFetcher({
  url: '/graphql',
  // the API answers each request with one JSON result (no @defer/@stream)
  enableIncrementalDelivery: false,
  wsClient: createClient({ url: `${wsScheme}//${window.location.host}/graphql` }),
});

createRoot(document.getElementById('graphiql')).render(
  <StrictMode>
    <GraphiQL fetcher={fetcher} defaultQuery={DEFAULT_QUERY} />
  </StrictMode>,
);
