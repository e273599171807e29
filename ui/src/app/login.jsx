// The sign-in page (/login): a person signs in with an API token (`stepsaga token
// create`), or follows a one-time link (`/login?once=...`, which the server takes
// before this page is ever shown). Signing in makes a session cookie; the page goes on
// to where it was asked from (`next`, a path on this server).
import { useState } from 'react';

function nextPath() {
  const next = new URLSearchParams(window.location.search).get('next') || '/';
  return next.startsWith('/') && !next.startsWith('//') ? next : '/';
}

export function Login() {
  const [token, setToken] = useState('');
  const [problem, setProblem] = useState(null);
  const [busy, setBusy] = useState(false);
  const submit = (e) => {
    e.preventDefault();
    setBusy(true);
    fetch('/auth/login', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
      body: JSON.stringify({ token: token.trim(), next: nextPath() }),
    }).then((r) => r.json()).then((answer) => {
      if (answer.ok) window.location.assign(answer.next);
      else setProblem(answer.errors ? answer.errors.map((x) => x.message).join('; ') : 'refused');
    }, (err) => setProblem(`the server did not answer: ${err.message}`))
      .finally(() => setBusy(false));
  };
  return (
    <main className="login">
      <h1>Sign in to stepsaga</h1>
      <form onSubmit={submit}>
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
