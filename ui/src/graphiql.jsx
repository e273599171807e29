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

function csrfToken() {
  const found = document.cookie.split('; ').find((c) => c.startsWith('stepsaga_csrf='));
  return found ? decodeURIComponent(found.slice('stepsaga_csrf='.length)) : '';
}

// the same host and port as the page: the server checks a WebSocket's Origin
const wsScheme = window.location.protocol === 'https:' ? 'wss:' : 'ws:';
const fetcher = createGraphiQLFetcher({
  url: '/graphql',
  // the API answers each request with one JSON result (no @defer/@stream)
  enableIncrementalDelivery: false,
  // a request made with the session cookie carries its CSRF token (the server refuses
  // it otherwise); a script with a bearer token needs none
  headers: { 'X-CSRF-Token': csrfToken() },
  wsClient: createClient({ url: `${wsScheme}//${window.location.host}/graphql` }),
});

createRoot(document.getElementById('graphiql')).render(
  <StrictMode>
    <GraphiQL fetcher={fetcher} defaultQuery={DEFAULT_QUERY} />
  </StrictMode>,
);
