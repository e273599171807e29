// One work: its status and progress, the debugger's steering (pause, resume, step,
// cancel), its event timeline pushed live by the workEvents subscription, and a
// time-travel slider showing its state at any seq.
import { useEffect, useState } from 'react';
import { follow, request } from './api.js';

const WORK = `query($id: String!) { work(workId: $id) {
  workId saga status paused phase currentStage stagesDone stagesTotal progress lastSeq
} }`;
const EVENTS = `subscription($id: String!) {
  workEvents(workId: $id, after: "0") { cursor seq type path attempt time }
}`;
const STATE = 'query($id: String!, $seq: Int!) { work(workId: $id) { stateAt(seq: $seq) } }';
const ANSWER = `__typename ... on CommandTaken { outcome }
  ... on WrongState { message } ... on NotFound { message } ... on InvalidInput { message }
  ... on Conflict { message }`;
const STEER = {
  pause: `mutation($id: String!) { pauseWork(workId: $id, by: "ui") { ${ANSWER} } }`,
  resume: `mutation($id: String!) { resumeWork(workId: $id, by: "ui") { ${ANSWER} } }`,
  step: `mutation($id: String!) { stepWork(workId: $id, by: "ui") { ${ANSWER} } }`,
  cancel: `mutation($id: String!) { cancelWork(workId: $id, by: "ui", reason: "cancelled from the UI") { ${ANSWER} } }`,
};

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

  useEffect(() => {
    let live = true;
    const load = () => request(WORK, { id: workId }).then(
      (data) => live && setWork(data.work), (err) => live && setProblem(err.message));
    load();
    // every event from the first on, once: the subscription's cursor is the stream's
    setEvents([]);
    const stop = follow(EVENTS, { id: workId }, (data) => {
      const event = data.workEvents;
      setEvents((now) => (now.some((e) => e.seq === event.seq) ? now : [...now, event]));
      load();
    });
    return () => { live = false; stop(); };
  }, [workId]);

  const shown = seq ?? (events.length ? events[events.length - 1].seq : null);
  useEffect(() => {
    if (shown === null) return undefined;
    let live = true;
    request(STATE, { id: workId, seq: shown }).then(
      (data) => live && setState(data.work.stateAt), (err) => live && setProblem(err.message));
    return () => { live = false; };
  }, [workId, shown]);

  const steer = (kind) => request(STEER[kind], { id: workId }).then(
    (data) => setProblem(answerOf(data)), (err) => setProblem(err.message));

  if (!work) return <main><p>{problem || 'Loading…'}</p></main>;
  return (
    <main className="work">
      <p><a href="/">← works</a></p>
      <h1>{work.saga} <span className="id">{work.workId}</span></h1>
      <p className={`summary status-${work.status}`}>
        <span className="status">{work.status}</span>{work.paused && work.status !== 'paused' ? ' (paused)' : ''}
        {' '}{work.stagesDone}/{work.stagesTotal} stages
        {work.currentStage ? ` · at ${work.currentStage}` : ''}
      </p>
      <div className="steer">
        {Object.keys(STEER).map((kind) => (
          <button key={kind} type="button" onClick={() => steer(kind)}>{kind}</button>))}
      </div>
      {problem && <p className="problem" role="alert">{problem}</p>}
      <section className="travel">
        <label>state at seq <output name="seq">{shown ?? ''}</output>
          <input type="range" name="travel" min="1" max={Math.max(events.length, 1)}
            value={shown ?? 1} onChange={(e) => setSeq(Number(e.target.value))} />
        </label>
        {seq !== null && <button type="button" onClick={() => setSeq(null)}>follow latest</button>}
        <pre className="state">{state ? JSON.stringify(state, null, 2) : ''}</pre>
      </section>
      <ol className="timeline">
        {events.map((e) => (
          <li key={e.seq} data-seq={e.seq} className={e.seq === shown ? 'here' : ''}>
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
