// The stage catalog (/?catalog): every saga the nodes run, with its description, input
// schema and stages; a work started from here (paused, to debug it from its first step).
import { useEffect, useState } from 'react';
import { request } from './api.jsx';

const SAGAS = `{ allSagas { name description definition version enabled inputSchema
  stages { path kind figures { runs completed failed } } } }`;
const START = `mutation($saga: String!, $input: JSON, $paused: Boolean!) {
  createWork(saga: $saga, input: $input, paused: $paused) {
    __typename ... on WorkCreated { work { workId } } ... on InvalidInput { message field }
    ... on NotFound { message } ... on WrongState { message } ... on Conflict { message } } }`;

function Start({ saga }) {
  const [input, setInput] = useState('null');
  const [paused, setPaused] = useState(true);
  const [problem, setProblem] = useState(null);
  const start = (e) => {
    e.preventDefault();
    let value;
    try {
      value = JSON.parse(input);
    } catch (err) {
      setProblem(`the input is not JSON: ${err.message}`);
      return;
    }
    request(START, { saga: saga.name, input: value, paused }).then((data) => {
      const made = data.createWork;
      if (made.__typename === 'WorkCreated') window.location.assign(`/?work=${made.work.workId}`);
      else setProblem(made.message || made.__typename);
    }, (err) => setProblem(err.message));
  };
  return (
    <form className="start" onSubmit={start}>
      <textarea aria-label={`input of ${saga.name}`} rows="3" cols="60" value={input}
        onChange={(e) => setInput(e.target.value)} />
      <label><input type="checkbox" checked={paused} onChange={(e) => setPaused(e.target.checked)} />
        {' '}paused</label>
      <button type="submit">start {saga.name}</button>
      {problem && <span className="problem" role="alert">{problem}</span>}
    </form>
  );
}

export function Catalog() {
  const [sagas, setSagas] = useState(null);
  const [problem, setProblem] = useState(null);
  useEffect(() => {
    request(SAGAS).then((data) => setSagas(data.allSagas), (err) => setProblem(err.message));
  }, []);
  return (
    <main className="catalog">
      <p><a href="/">← works</a></p>
      <h1>Sagas</h1>
      {problem && <p className="problem" role="alert">{problem}</p>}
      {(sagas || []).map((saga) => (
        <section key={saga.name} className="saga" data-saga={saga.name}>
          <h2>{saga.name} <span className="id">v{saga.version} {saga.definition}</span>
            {saga.enabled ? '' : ' (disabled)'}</h2>
          <p>{saga.description}</p>
          {saga.inputSchema && <pre className="schema">{JSON.stringify(saga.inputSchema, null, 2)}</pre>}
          <table className="stages">
            <thead><tr><th>stage</th><th>kind</th><th>runs</th><th>completed</th><th>failed</th></tr></thead>
            <tbody>{saga.stages.filter((s) => s.path).map((s) => (
              <tr key={s.path}><td>{s.path}</td><td>{s.kind}</td><td>{s.figures.runs}</td>
                <td>{s.figures.completed}</td><td>{s.figures.failed}</td></tr>
            ))}</tbody>
          </table>
          <Start saga={saga} />
        </section>
      ))}
    </main>
  );
}
