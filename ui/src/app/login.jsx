// The sign-in page (/login): a person signs in with an API token (`stepsaga token
// create`), with their email and password when the users pack is served (its `login`
// mutation, which sets the same session cookies), with the configured OpenID Connect
// provider, or follows a one-time link (`/login?once=...`, which the server takes
// before this page is ever shown). The server says which of these it takes
// (`/auth/ways`). Signing in makes a session cookie; the page goes on to where it was
// asked from (`next`, a path on this server).
import { useEffect, useState } from 'react';

function nextPath() {
  const next = new URLSearchParams(window.location.search).get('next') || '/';
  return next.startsWith('/') && !next.startsWith('//') ? next : '/';
}

const LOGIN = `mutation($email: String!, $password: String!) {
  login(email: $email, password: $password) {
    __typename ... on LoginRefused { message retryAfter }
  }
}`;

function refusal(login) {
  if (!login) return 'refused';
  const wait = login.retryAfter ? ` (try again in ${Math.ceil(login.retryAfter)} s)` : '';
  return `${login.message || 'refused'}${wait}`;
}

export function Login() {
  const [token, setToken] = useState('');
  const [email, setEmail] = useState('');
  const [password, setPassword] = useState('');
  const [ways, setWays] = useState(['token']);
  const [problem, setProblem] = useState(null);
  const [busy, setBusy] = useState(false);
  useEffect(() => {
    fetch('/auth/ways', { headers: { Accept: 'application/json' } })
      .then((r) => r.json()).then((answer) => setWays(answer.ways || ['token']), () => {});
  }, []);
  const post = (url, body, answered) => {
    setBusy(true);
    fetch(url, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
      body: JSON.stringify(body),
    }).then((r) => r.json()).then(answered,
      (err) => setProblem(`the server did not answer: ${err.message}`))
      .finally(() => setBusy(false));
  };
  const withToken = (e) => {
    e.preventDefault();
    post('/auth/login', { token: token.trim(), next: nextPath() }, (answer) => {
      if (answer.ok) window.location.assign(answer.next);
      else setProblem(answer.errors ? answer.errors.map((x) => x.message).join('; ') : 'refused');
    });
  };
  const withPassword = (e) => {
    e.preventDefault();
    post('/graphql', { query: LOGIN, variables: { email: email.trim(), password } },
      (answer) => {
        const login = answer.data && answer.data.login;
        if (login && login.__typename === 'SignedIn') window.location.assign(nextPath());
        else if (answer.errors) setProblem(answer.errors.map((x) => x.message).join('; '));
        else setProblem(refusal(login));
      });
  };
  const oidc = `/auth/oidc/start?next=${encodeURIComponent(nextPath())}`;
  return (
    <main className="login">
      <h1>Sign in to stepsaga</h1>
      {ways.includes('password') && (
        <form className="password" onSubmit={withPassword}>
          <label>email <input name="email" type="email" autoComplete="username"
            value={email} onChange={(e) => setEmail(e.target.value)} required /></label>
          <label>password <input name="password" type="password"
            autoComplete="current-password" value={password}
            onChange={(e) => setPassword(e.target.value)} required /></label>
          <button type="submit" disabled={busy}>sign in with your email</button>
        </form>
      )}
      {ways.includes('oidc') && (
        <p className="oidc"><a href={oidc}>sign in with your identity provider</a></p>
      )}
      <form onSubmit={withToken}>
        <label>token <input name="token" type="password" autoComplete="off" value={token}
          onChange={(e) => setToken(e.target.value)} required /></label>
        <button type="submit" disabled={busy}>sign in</button>
      </form>
      {problem && <p className="problem" role="alert">{problem}</p>}
      <p className="hint">A token comes from <code>stepsaga token create NAME</code>; the first
        start of a fresh store prints a one-time sign-in link for its administrator.</p>
    </main>
  );
}
