// One work: its status and progress, the debugger (pause, resume, step, cancel, run to a
// breakpoint, breakpoints, edit with a reason, retry a compensation, resolve, rewind into
// a fork and compare the fork with its origin), its event timeline pushed live by the
// workEvents subscription, and a time-travel slider showing its state at any seq.
import { useEffect, useRef, useState } from 'react';
import { Away, follow, request, useConnected } from './api.jsx';
import { layout, statuses } from './graph.js';

const WORK = `query($id: String!) { work(workId: $id) {
  workId saga status paused phase currentStage stagesDone stagesTotal progress lastSeq
  breakpoints parentWorkId forkedAtSeq stageRuns { path template status attempts }
} }`;
const SAGA = 'query($name: String!) { saga(name: $name) { stages { path name kind children } } }';

// The saga's stages as a graph, each coloured by its status in this work.
function Graph({ saga, runs }) {
  const [shape, setShape] = useState(null);
  useEffect(() => {
    let live = true;
    request(SAGA, { name: saga }).then((data) => live && data.saga
      && setShape(layout(data.saga.stages)), () => {});
    return () => { live = false; };
  }, [saga]);
  if (!shape) return null;
  const status = statuses(runs);
  return (
    <svg className="graph" width={shape.width} height={shape.height} role="img"
      aria-label="stage graph">
      {shape.edges.map((e) => (
        <polyline key={`${e.from}>${e.to}`} points={e.points.map((p) => `${p.x},${p.y}`).join(' ')} />
      ))}
      {shape.nodes.map((n) => (
        <g key={n.path} data-stage={n.path} data-status={status[n.path] || 'pending'}
          className={`stage status-${status[n.path] || 'pending'}`}
          transform={`translate(${n.x - n.width / 2},${n.y - n.height / 2})`}>
          <rect width={n.width} height={n.height} rx="5" />
          <text x={n.width / 2} y={n.height / 2 + 4} textAnchor="middle">
            {n.kind === 'Stage' ? n.path.split('/').pop() : `${n.path.split('/').pop()} (${n.kind})`}
          </text>
        </g>
      ))}
    </svg>
  );
}
const REWIND = `mutation($id: String!, $seq: Int!) { rewindWork(workId: $id, toSeq: $seq) {
  __typename ... on WorkCreated { work { workId } } ... on WrongState { message }
  ... on NotFound { message } ... on InvalidInput { message } ... on Conflict { message } } }`;
const COMPARE = `query($id: String!, $other: String!) { work(workId: $id) {
  compare(otherWorkId: $other) { seq } } }`;
const EVENTS = `subscription($id: String!, $after: String!) {
  workEvents(workId: $id, after: $after) { cursor seq type path attempt time }
}`;
const STATE = 'query($id: String!, $seq: Int!) { work(workId: $id) { stateAt(seq: $seq) } }';
const DIFF = `query($id: String!, $from: Int!, $to: Int!) { work(workId: $id) {
  stateDiff(fromSeq: $from, toSeq: $to) } }`;

// What changed in the state from one seq to another (the API's stateDiff).
function Diff({ workId, to }) {
  const [from, setFrom] = useState('');
  const [rows, setRows] = useState(null);
  const [problem, setProblem] = useState(null);
  useEffect(() => {
    const start = Number(from);
    if (!from || !Number.isInteger(start) || to === null) { setRows(null); return undefined; }
    let live = true;
    request(DIFF, { id: workId, from: start, to }).then(
      (data) => { if (live) { setRows(data.work.stateDiff); setProblem(null); } },
      (err) => live && setProblem(err.message));
    return () => { live = false; };
  }, [workId, from, to]);
  const show = (value) => (value === undefined ? '' : JSON.stringify(value));
  return (
    <section className="diff">
      <label>changes since seq <input aria-label="diff from seq" type="number" min="0"
        value={from} onChange={(e) => setFrom(e.target.value)} /> to seq {to}</label>
      {problem && <span className="problem">{problem}</span>}
      {rows && (
        <table className="changes">
          <thead><tr><th>path</th><th>before</th><th>after</th></tr></thead>
          <tbody>{rows.map((r) => (
            <tr key={r.path}><td>{r.path}</td><td>{show(r.before)}</td><td>{show(r.after)}</td></tr>
          ))}</tbody>
        </table>
      )}
    </section>
  );
}
const ANSWER = `__typename ... on CommandTaken { outcome }
  ... on WrongState { message } ... on NotFound { message } ... on InvalidInput { message }
  ... on Conflict { message }`;
const STEER = {
  pause: `mutation($id: String!) { pauseWork(workId: $id, by: "ui") { ${ANSWER} } }`,
  resume: `mutation($id: String!) { resumeWork(workId: $id, by: "ui") { ${ANSWER} } }`,
  step: `mutation($id: String!) { stepWork(workId: $id, by: "ui") { ${ANSWER} } }`,
  cancel: `mutation($id: String!) { cancelWork(workId: $id, by: "ui", reason: "cancelled from the UI") { ${ANSWER} } }`,
  'run to breakpoint': `mutation($id: String!) { multiStepWork(workId: $id, by: "ui") { ${ANSWER} } }`,
  'retry compensation': `mutation($id: String!) { retryCompensation(workId: $id, by: "ui") { ${ANSWER} } }`,
};
const RESOLVE = `mutation($id: String!, $reason: String!) {
  resolveWork(workId: $id, by: "ui", reason: $reason) { ${ANSWER} } }`;
const SET_BREAKPOINT = `mutation($id: String!, $bp: BreakpointInput!) {
  setBreakpoint(workId: $id, breakpoint: $bp) { ${ANSWER} } }`;
const CLEAR_BREAKPOINT = `mutation($id: String!, $bp: String!) {
  clearBreakpoint(workId: $id, breakpointId: $bp) { ${ANSWER} } }`;
const EDIT = `mutation($id: String!, $path: String!, $reason: String!, $output: JSON) {
  editWorkState(workId: $id, path: $path, by: "ui", reason: $reason, output: $output,
                setOutput: true) { ${ANSWER} } }`;

function Breakpoints({ work, onSend }) {
  const [form, setForm] = useState({ event: '*', path: '*', when: 'after', condition: '' });
  const field = (name) => ({ name, value: form[name],
    onChange: (e) => setForm({ ...form, [name]: e.target.value }) });
  const set = (e) => {
    e.preventDefault();
    const bp = { event: form.event, path: form.path, when: form.when };
    if (form.condition.trim()) bp.condition = form.condition.trim();
    onSend(SET_BREAKPOINT, { bp });
  };
  return (
    <section className="breakpoints">
      <h2>Breakpoints</h2>
      <ul>
        {(work.breakpoints || []).map((bp) => (
          <li key={bp.id} data-breakpoint={bp.id}>
            {bp.when} {bp.event} at {bp.path}{bp.condition ? ` if ${bp.condition}` : ''}
            {' '}<button type="button" onClick={() => onSend(CLEAR_BREAKPOINT, { bp: bp.id })}>clear</button>
          </li>
        ))}
      </ul>
      <form onSubmit={set}>
        <select aria-label="when" {...field('when')}>
          <option value="before">before</option><option value="after">after</option>
        </select>
        <input aria-label="event" {...field('event')} />
        <input aria-label="path" {...field('path')} />
        <input aria-label="condition (CEL)" placeholder="condition (CEL)" {...field('condition')} />
        <button type="submit">set breakpoint</button>
      </form>
    </section>
  );
}

function Edit({ onSend }) {
  const [form, setForm] = useState({ path: '', output: '', reason: '' });
  const [problem, setProblem] = useState(null);
  const field = (name) => ({ name, value: form[name],
    onChange: (e) => setForm({ ...form, [name]: e.target.value }) });
  const send = (e) => {
    e.preventDefault();
    let output;
    try {
      output = JSON.parse(form.output);
    } catch (err) {
      setProblem(`the output is not JSON: ${err.message}`);
      return;
    }
    setProblem(null);
    onSend(EDIT, { path: form.path, reason: form.reason, output });
  };
  return (
    <form className="edit" onSubmit={send}>
      <h2>Edit a stage's output</h2>
      <input aria-label="stage path" placeholder="stage path" {...field('path')} />
      <input aria-label="output (JSON)" placeholder="output (JSON)" {...field('output')} />
      <input aria-label="reason" placeholder="reason" required {...field('reason')} />
      <button type="submit">edit</button>
      {problem && <span className="problem">{problem}</span>}
    </form>
  );
}

function answerOf(data) {
  const found = Object.values(data)[0];
  if (found.__typename === 'CommandTaken') return found.outcome === 'rejected' ? 'rejected' : null;
  return found.message || found.__typename;
}

export function WorkPage({ workId }) {
  const [work, setWork] = useState(null);
  const [events, setEvents] = useState([]);
  const [seq, setSeq] = useState(null);
  const [state, setState] = useState(null);
  const [problem, setProblem] = useState(null);
  const [divergence, setDivergence] = useState(null);
  const [reason, setReason] = useState('');

  const connected = useConnected();
  const cursor = useRef('0');  // the last event's cursor: a new subscription goes on from it
  useEffect(() => { cursor.current = '0'; setEvents([]); }, [workId]);

  useEffect(() => {
    let live = true;
    const load = () => request(WORK, { id: workId }).then(
      (data) => live && setWork(data.work), (err) => live && setProblem(err.message));
    load();
    // every event once: from the first, and after the server was away from the last seen
    const stop = follow(EVENTS, { id: workId, after: cursor.current }, (data) => {
      const event = data.workEvents;
      cursor.current = event.cursor;
      setEvents((now) => (now.some((e) => e.seq === event.seq) ? now : [...now, event]));
      load();
    });
    return () => { live = false; stop(); };
  }, [workId, connected]);

  const shown = seq ?? (events.length ? events[events.length - 1].seq : null);
  useEffect(() => {
    if (shown === null) return undefined;
    let live = true;
    request(STATE, { id: workId, seq: shown }).then(
      (data) => live && setState(data.work.stateAt), (err) => live && setProblem(err.message));
    return () => { live = false; };
  }, [workId, shown]);

  const send = (query, variables = {}) => request(query, { id: workId, ...variables }).then(
    (data) => setProblem(answerOf(data)), (err) => setProblem(err.message));
  const steer = (kind) => send(STEER[kind]);
  const rewind = () => request(REWIND, { id: workId, seq: shown }).then((data) => {
    const made = data.rewindWork;
    if (made.__typename === 'WorkCreated') window.location.assign(`/?work=${made.work.workId}`);
    else setProblem(made.message || made.__typename);
  }, (err) => setProblem(err.message));

  // a fork against the work it came from: the first event where they differ
  const parent = work?.parentWorkId;
  useEffect(() => {
    if (!parent) return undefined;
    let live = true;
    request(COMPARE, { id: workId, other: parent }).then(
      (data) => live && setDivergence(data.work.compare ? data.work.compare.seq : null),
      () => {});
    return () => { live = false; };
  }, [workId, parent, events.length]);

  if (!work) return <main><p>{problem || 'Loading…'}</p></main>;
  return (
    <main className="work">
      <p><a href="/">← works</a></p>
      <Away connected={connected} />
      <h1>{work.saga} <span className="id">{work.workId}</span></h1>
      <p className={`summary status-${work.status}`}>
        <span className="status">{work.status}</span>{work.paused && work.status !== 'paused' ? ' (paused)' : ''}
        {events.some((e) => e.type === 'work.resolved') ? <span className="resolved"> (resolved)</span> : null}
        {' '}{work.stagesDone}/{work.stagesTotal} stages
        {work.currentStage ? ` · at ${work.currentStage}` : ''}
      </p>
      {parent && (
        <p className="fork">forked from <a href={`/?work=${parent}`}>{parent}</a> at seq
          {' '}{work.forkedAtSeq}{divergence !== null ? `; the first difference is at seq ${divergence}` : ''}</p>
      )}
      <Graph saga={work.saga} runs={work.stageRuns} />
      <div className="steer">
        {Object.keys(STEER).map((kind) => (
          <button key={kind} type="button" onClick={() => steer(kind)}>{kind}</button>))}
        <button type="button" onClick={rewind} disabled={shown === null}>rewind to seq {shown}</button>
        <input aria-label="resolve reason" placeholder="why it is resolved" value={reason}
          onChange={(e) => setReason(e.target.value)} />
        <button type="button" disabled={!reason.trim()}
          onClick={() => send(RESOLVE, { reason: reason.trim() })}>resolve</button>
      </div>
      {problem && <p className="problem" role="alert">{problem}</p>}
      <Breakpoints work={work} onSend={send} />
      <Edit onSend={send} />
      <section className="travel">
        <label>state at seq <output name="seq">{shown ?? ''}</output>
          <input type="range" name="travel" min="1" max={Math.max(events.length, 1)}
            value={shown ?? 1} onChange={(e) => setSeq(Number(e.target.value))} />
        </label>
        {seq !== null && <button type="button" onClick={() => setSeq(null)}>follow latest</button>}
        <pre className="state">{state ? JSON.stringify(state, null, 2) : ''}</pre>
      </section>
      <Diff workId={workId} to={shown} />
      <ol className="timeline">
        {events.map((e) => (
          <li key={e.seq} data-seq={e.seq}
            className={[e.seq === shown ? 'here' : '', e.seq === divergence ? 'diverges' : ''].join(' ').trim()}>
            <button type="button" className="seq" onClick={() => setSeq(e.seq)}>{e.seq}</button>
            {' '}<span className="type">{e.type}</span>
            {e.path ? <span className="path"> {e.path}</span> : null}
            {e.attempt > 1 ? <span className="attempt"> (attempt {e.attempt})</span> : null}
          </li>
        ))}
      </ol>
    </main>
  );
}
