// The UI's one connection to the API: graphql-ws over a WebSocket to this page's host,
// for queries, mutations and subscriptions alike. It reconnects by itself after the
// server restarts; `onStatus` hears whether it is connected.
import { createClient } from 'graphql-ws';
import { useEffect, useState } from 'react';

const scheme = window.location.protocol === 'https:' ? 'wss:' : 'ws:';
const listeners = new Set();
let connected = false;

function tell(now) {
  connected = now;
  for (const listener of listeners) listener(now);
}

// made on first use: the sign-in page needs none
let made = null;
function client() {
  made ??= createClient({
    url: `${scheme}//${window.location.host}/graphql`,
    lazy: false,
    // bounded waits between tries (graphql-ws backs off); never gives up while the page
    // is open: a restart of the server is the normal case
    retryAttempts: Infinity,
    shouldRetry: () => true,
    on: { connected: () => tell(true), closed: () => { tell(false); checkSignedIn(); } },
  });
  return made;
}

// The connection closed: if the session is over (expired, revoked, signed out
// elsewhere), to the sign-in page, back here after; if the server is away, nothing.
function checkSignedIn() {
  fetch('/auth/whoami', { headers: { Accept: 'application/json' } })
    .then((r) => r.json())
    .then((who) => {
      if (who && who.signedIn === false) toSignIn();
    }, () => {});
}

export function toSignIn() {
  const here = `${window.location.pathname}${window.location.search}`;
  window.location.assign(`/login?next=${encodeURIComponent(here)}`);
}

// The value of a cookie of this page (the session's CSRF token is one).
export function cookie(name) {
  const found = document.cookie.split('; ').find((c) => c.startsWith(`${name}=`));
  return found ? decodeURIComponent(found.slice(name.length + 1)) : null;
}

// Signed out: the session revoked on the server, then to the sign-in page.
export function signOut() {
  return fetch('/auth/logout', { method: 'POST',
    headers: { 'X-CSRF-Token': cookie('stepsaga_csrf') || '' } })
    .finally(() => window.location.assign('/login'));
}

export function onStatus(listener) {
  listeners.add(listener);
  listener(connected);
  return () => listeners.delete(listener);
}

// One result of a query or mutation; a GraphQL error is thrown with its message.
export function request(query, variables = {}) {
  return new Promise((resolve, reject) => {
    let result;
    client().subscribe({ query, variables }, {
      next: (value) => { result = value; },
      error: (err) => reject(err instanceof Error ? err : new Error(messageOf(err))),
      complete: () => (result?.errors?.length
        ? reject(new Error(result.errors.map((e) => e.message).join('; ')))
        : resolve(result?.data)),
    });
  });
}

// Each result of a subscription, to `onData`; returns what ends it.
export function follow(query, variables, onData) {
  return client().subscribe({ query, variables }, {
    next: (value) => value.data && onData(value.data),
    error: () => {},
    complete: () => {},
  });
}

function messageOf(err) {
  if (Array.isArray(err)) return err.map((e) => e.message).join('; ');
  if (err && typeof err.reason === 'string' && err.reason) return err.reason;
  return String(err);
}

// Whether the API is connected now, as React state.
export function useConnected() {
  const [connected, setConnected] = useState(true);
  useEffect(() => onStatus(setConnected), []);
  return connected;
}

// The line a page shows while the server is away.
export function Away({ connected }) {
  return connected ? null
    : <p className="away" role="status">The server is away: reconnecting…</p>;
}
