// The stage catalog (/?catalog): every saga the nodes run, with its description, input
// schema and its examples, and its stages with their example outputs and figures; a work
// started from here (paused, to debug it from its first step) with a form built from the
// input schema (@rjsf) or as JSON; and a dry run with chosen stages forced to fail, to
// rehearse a compensation path (the API's dryRun: nothing is stored).
import Form from '@rjsf/core';
import validator from '@rjsf/validator-ajv8';
import { useEffect, useMemo, useState } from 'react';
import { request } from './api.jsx';
import { StageGraph } from './stagegraph.jsx';
import {
  choose, examplesOf, forcible, formSchema, outcome, parsed, shown,
} from './catalogview.js';
import './catalog.css';

const SAGAS = `{ allSagas { name description definition version enabled inputSchema
  stages { path name kind children details figures { runs completed failed } } } }`;
const START = `mutation($saga: String!, $input: JSON, $paused: Boolean!) {
  createWork(saga: $saga, input: $input, paused: $paused) {
    __typename ... on WorkCreated { work { workId } } ... on InvalidInput { message field }
    ... on NotFound { message } ... on WrongState { message } ... on Conflict { message } } }`;
const DRY_RUN = `mutation($saga: String!, $input: JSON, $fail: [String!]) {
  dryRun(saga: $saga, input: $input, fail: $fail) {
    __typename ... on DryRunReport { status ended error compensated
      stages { path status attempts forced output } events { seq type path attempt payload } }
    ... on InvalidInput { message field } ... on NotFound { message field } } }`;

function Examples({ saga, onUse }) {
  const examples = examplesOf(saga.inputSchema);
  if (!examples.length) return null;
  return (
    <div className="examples">
      <h3>Examples of its input</h3>
      {examples.map((example, i) => (
        <div key={i} className="example">
          <pre>{JSON.stringify(example)}</pre>
          <button type="button" onClick={() => onUse(example)}
            aria-label={`use example ${i + 1} of ${saga.name}`}>use example {i + 1}</button>
        </div>
      ))}
    </div>
  );
}

function Stages({ saga }) {
  return (
    <table className="stages">
      <thead><tr><th>stage</th><th>kind</th><th>example output</th><th>runs</th>
        <th>completed</th><th>failed</th></tr></thead>
      <tbody>{saga.stages.filter((s) => s.path).map((s) => (
        <tr key={s.path}><td>{s.path}</td><td>{s.kind}</td>
          <td className="json">{shown(s.details?.example)}</td><td>{s.figures.runs}</td>
          <td>{s.figures.completed}</td><td>{s.figures.failed}</td></tr>
      ))}</tbody>
    </table>
  );
}

function Rehearsed({ report }) {
  return (
    <div className="rehearsed">
      <p className={`outcome status-${report.status}`}>
        rehearsal <span className="status">{report.status}</span>
        {report.ended ? '' : ' (stopped: it waited past the time a rehearsal may take)'}
        {report.error ? `: ${report.error.message}` : ''}
      </p>
      <p className="compensated">compensated: {report.compensated.join(', ') || 'nothing'}</p>
      <table className="outcomes">
        <thead><tr><th>stage</th><th>outcome</th><th>attempts</th><th>output</th></tr></thead>
        <tbody>{report.stages.map((s) => (
          <tr key={s.path} data-path={s.path} className={`outcome-${s.status}`}>
            <td>{s.path}</td><td className="outcome">{outcome(s)}</td><td>{s.attempts}</td>
            <td className="json">{shown(s.output)}</td></tr>
        ))}</tbody>
      </table>
      <ol className="rehearsed-events">{report.events.map((e) => (
        <li key={e.seq} data-type={e.type}><span className="seq">{e.seq}</span>{' '}
          <span className="type">{e.type}</span> <span className="path">{e.path}</span>
          {e.attempt ? ` #${e.attempt}` : ''}{' '}
          <code>{JSON.stringify(e.payload)}</code></li>
      ))}</ol>
    </div>
  );
}

function DryRun({ saga, current }) {
  const leaves = forcible(saga.stages);
  const [fail, setFail] = useState([]);
  const [report, setReport] = useState(null);
  const [problem, setProblem] = useState(null);
  const toggle = (path, on) => setFail((now) => choose(now, path, on));
  const run = (e) => {
    e.preventDefault();
    const input = current();
    if (input.problem) {
      setProblem(input.problem);
      return;
    }
    request(DRY_RUN, { saga: saga.name, input: input.value, fail }).then((data) => {
      const found = data.dryRun;
      if (found.__typename === 'DryRunReport') {
        setReport(found);
        setProblem(null);
      } else {
        setReport(null);
        setProblem(found.message);
      }
    }, (err) => setProblem(err.message));
  };
  return (
    <form className="dry-run" onSubmit={run}>
      <fieldset>
        <legend>Dry run: each stage gives its example output, compensations are recorded
          as done, nothing is stored</legend>
        <span>force to fail:</span>
        {leaves.map((s) => (
          <label key={s.path}><input type="checkbox" checked={fail.includes(s.path)}
            aria-label={`force ${s.path} of ${saga.name} to fail`}
            onChange={(e) => toggle(s.path, e.target.checked)} /> {s.path}</label>
        ))}
        <button type="submit">dry run {saga.name}</button>
      </fieldset>
      {problem && <p className="problem" role="alert">{problem}</p>}
      {report && <Rehearsed report={report} />}
    </form>
  );
}

function SagaPanel({ saga }) {
  const schema = saga.inputSchema;
  const shape = useMemo(() => formSchema(schema), [schema]); // what the form is built from
  const [mode, setMode] = useState(schema ? 'form' : 'json');
  const [value, setValue] = useState(undefined); // the input as the form holds it
  const [text, setText] = useState('null'); // the input as JSON text
  const [paused, setPaused] = useState(true);
  const [problem, setProblem] = useState(null);
  const [tried, setTried] = useState(false); // once refused, the form is checked as it changes
  // the input now, from whichever editor is shown
  const current = () => (mode === 'form' ? { value: value ?? null } : parsed(text));
  const use = (example) => {
    setValue(example);
    setText(JSON.stringify(example, null, 2));
    setProblem(null);
  };
  const switchTo = (next) => {
    if (next === 'json') setText(JSON.stringify(value ?? null, null, 2));
    else {
      const got = parsed(text);
      if (got.problem) {
        setProblem(got.problem);
        return;
      }
      setValue(got.value ?? undefined);
    }
    setProblem(null);
    setMode(next);
  };
  const start = (input) => {
    request(START, { saga: saga.name, input, paused }).then((data) => {
      const made = data.createWork;
      if (made.__typename === 'WorkCreated') window.location.assign(`/?work=${made.work.workId}`);
      else setProblem(made.message || made.__typename);
    }, (err) => setProblem(err.message));
  };
  const startJson = (e) => {
    e.preventDefault();
    const got = parsed(text);
    if (got.problem) setProblem(got.problem);
    else start(got.value);
  };
  const actions = (
    <div className="actions">
      <label><input type="checkbox" checked={paused} onChange={(e) => setPaused(e.target.checked)} />
        {' '}paused</label>
      <button type="submit">start {saga.name}</button>
    </div>
  );
  return (
    <section className="saga" data-saga={saga.name}>
      <h2>{saga.name} <span className="id">v{saga.version} {saga.definition}</span>
        {saga.enabled ? '' : ' (disabled)'}</h2>
      <p>{saga.description}</p>
      {schema && <details><summary>input schema</summary>
        <pre className="schema">{JSON.stringify(schema, null, 2)}</pre></details>}
      <Examples saga={saga} onUse={use} />
      <StageGraph stages={saga.stages} />
      <Stages saga={saga} />
      <div className="start">
        <h3>Start a work</h3>
        {schema && (
          <p className="mode">input as{' '}
            <label><input type="radio" name={`mode-${saga.name}`} checked={mode === 'form'}
              onChange={() => switchTo('form')} /> form</label>{' '}
            <label><input type="radio" name={`mode-${saga.name}`} checked={mode === 'json'}
              onChange={() => switchTo('json')} /> JSON</label></p>
        )}
        {mode === 'form' ? (
          // errors are ajv's against the schema, shown above the form and at each field;
          // onSubmit is called only when there are none: nothing is sent on bad input
          <Form schema={shape} validator={validator} formData={value} idPrefix={saga.name}
            noHtml5Validate showErrorList="top"
            onChange={(e) => setValue(e.formData)} onSubmit={(e) => start(e.formData ?? null)}
            liveValidate={tried ? 'onChange' : undefined}
            onError={() => { setProblem(null); setTried(true); }}>
            {actions}
          </Form>
        ) : (
          <form onSubmit={startJson}>
            <textarea aria-label={`input of ${saga.name}`} rows="6" cols="60" value={text}
              onChange={(e) => setText(e.target.value)} />
            {actions}
          </form>
        )}
        {problem && <p className="problem" role="alert">{problem}</p>}
      </div>
      <DryRun saga={saga} current={current} />
    </section>
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
      {(sagas || []).map((saga) => <SagaPanel key={saga.name} saga={saga} />)}
    </main>
  );
}
