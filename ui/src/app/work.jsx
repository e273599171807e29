// One work: its status and progress, the debugger (pause, resume, step, cancel, run to a
// breakpoint, breakpoints, edit with a reason, retry a compensation, resolve, rewind into
// a fork and compare the fork with its origin), its event timeline pushed live by the
// workEvents subscription, and a time-travel slider showing its state at any seq.
import { useVirtualizer } from '@tanstack/react-virtual';
import { useCallback, useEffect, useLayoutEffect, useRef, useState } from 'react';
import { Away, follow, request, useConnected } from './api.jsx';
import { StageGraph } from './stagegraph.jsx';

const ROW = 24;  // px: a timeline row, a waterfall bar
const LABEL = 130;  // px: the waterfall's stage names
const BARS = 320;  // px: the waterfall's time axis
const PAGE = 1000;  // events read per request (the API's most)
const FIGURES_EVERY = 250;  // ms between reads of a work's figures while events come
const TAIL = 100;  // events read first when a page opens: the newest, which it shows

const WORK = `query($id: String!) { work(workId: $id) {
  workId saga status paused phase currentStage stagesDone stagesTotal progress lastSeq
  breakpoints parentWorkId forkedAtSeq
  stageRuns { path template status attempts startedAt finishedAt }
} }`;
const SAGA = 'query($name: String!) { saga(name: $name) { stages { path name kind children } } }';

// The saga's stages (the catalog's) as a graph coloured by this work's runs.
function Graph({ saga, runs, events }) {
  const [stages, setStages] = useState(null);
  useEffect(() => {
    let live = true;
    request(SAGA, { name: saga }).then((data) => live && data.saga
      && setStages(data.saga.stages), () => {});
    return () => { live = false; };
  }, [saga]);
  return stages ? <StageGraph stages={stages} runs={runs} events={events} /> : null;
}

// The stage runs' durations as a waterfall: one bar per run from its start to its end
// (to now while it runs), on one time axis.
function Waterfall({ runs }) {
  const timed = runs.filter((r) => r.startedAt != null)
    .sort((a, b) => a.startedAt - b.startedAt || a.path.localeCompare(b.path));
  if (!timed.length) return null;
  const now = Date.now() / 1000;
  const start = timed[0].startedAt;
  const end = Math.max(...timed.map((r) => r.finishedAt ?? now), start + 0.001);
  const scale = (t) => LABEL + ((t - start) / (end - start)) * BARS;
  return (
    <svg className="waterfall" width={LABEL + BARS + 60} height={timed.length * ROW + 4}
      role="img" aria-label="stage durations">
      {timed.map((r, i) => {
        const x = scale(r.startedAt);
        const width = Math.max(2, scale(r.finishedAt ?? now) - x);
        const took = (r.finishedAt ?? now) - r.startedAt;
        return (
          <g key={r.path} data-run={r.path} className={`status-${r.status}`}
            transform={`translate(0,${i * ROW + 2})`}>
            <text x={LABEL - 6} y={ROW / 2 + 2} textAnchor="end">{r.path}</text>
            <rect x={x} y="3" width={width} height={ROW - 8} rx="2">
              <title>{`${r.path}: ${r.status}, ${took.toFixed(3)} s`}</title>
            </rect>
            <text className="took" x={x + width + 4} y={ROW / 2 + 2}>{`${(took * 1000).toFixed(0)} ms`}</text>
          </g>
        );
      })}
    </svg>
  );
}

// The events, virtualised: only the rows in view (and a margin) are in the page, so a
// work with 10,000 events scrolls as smoothly as one with ten; rows not read yet are
// asked for (`onNeed`) as they come into view. It follows the newest event while it is
// scrolled to the end.
function Timeline({ events, shown, divergence, onPick, onNeed }) {
  const box = useRef(null);
  const atEnd = useRef(true);
  const rows = useVirtualizer({
    count: events.length, getScrollElement: () => box.current, estimateSize: () => ROW,
    overscan: 24,
  });
  useLayoutEffect(() => {
    if (atEnd.current && events.length) rows.scrollToIndex(events.length - 1, { align: 'end' });
  }, [events.length, rows]);
  const inView = rows.getVirtualItems();
  const first = inView.length ? inView[0].index : 0;
  const last = inView.length ? inView[inView.length - 1].index : -1;
  useEffect(() => { if (last >= first) onNeed(first + 1, last + 1); }, [first, last, events, onNeed]);
  const scrolled = () => {
    const el = box.current;
    atEnd.current = el.scrollHeight - el.scrollTop - el.clientHeight < ROW * 2;
  };
  return (
    <div className="timeline-scroll" ref={box} onScroll={scrolled}>
      <ol className="timeline" data-count={events.length} style={{ height: rows.getTotalSize() }}>
        {inView.map((row) => {
          const e = events[row.index];
          const at = { transform: `translateY(${row.start}px)` };
          if (!e) return <li key={`hole-${row.index}`} className="unread" style={at}>{row.index + 1} …</li>;
          return (
            <li key={e.seq} data-seq={e.seq} style={at}
              className={[e.seq === shown ? 'here' : '', e.seq === divergence ? 'diverges' : ''].join(' ').trim()}>
              <button type="button" className="seq" onClick={() => onPick(e.seq)}>{e.seq}</button>
              {' '}<span className="type">{e.type}</span>
              {e.path ? <span className="path"> {e.path}</span> : null}
              {e.attempt > 1 ? <span className="attempt"> (attempt {e.attempt})</span> : null}
            </li>
          );
        })}
      </ol>
    </div>
  );
}
const REWIND = `mutation($id: String!, $seq: Int!) { rewindWork(workId: $id, toSeq: $seq) {
  __typename ... on WorkCreated { work { workId } } ... on WrongState { message }
  ... on NotFound { message } ... on InvalidInput { message } ... on Conflict { message } } }`;
const COMPARE = `query($id: String!, $other: String!) { work(workId: $id) {
  compare(otherWorkId: $other) { seq } } }`;
const EVENT = 'cursor seq type path attempt time';
const EVENTS = `subscription($id: String!, $after: String!) {
  workEvents(workId: $id, after: $after) { ${EVENT} }
}`;
const STORED = `query($id: String!, $after: Int!) { work(workId: $id) {
  events(afterSeq: $after, first: ${PAGE}) { ${EVENT} } } }`;
const NEWEST = 'query($id: String!) { work(workId: $id) { lastSeq } }';
// the events the graph and the summary read from a work's whole stream
const NOTABLE_TYPES = ['stage.failed', 'work.compensating', 'stage.compensation.started',
  'work.resolved'];
const NOTABLE = `query($id: String!, $after: Int!, $types: [String!]) { work(workId: $id) {
  events(afterSeq: $after, first: ${PAGE}, types: $types) { ${EVENT} } } }`;
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
const RUN_UNTIL = `mutation($id: String!, $until: [BreakpointInput!]) {
  multiStepWork(workId: $id, by: "ui", until: $until) { ${ANSWER} } }`;
const CLEAR_BREAKPOINT = `mutation($id: String!, $bp: String!) {
  clearBreakpoint(workId: $id, breakpointId: $bp) { ${ANSWER} } }`;
const EDIT = `mutation($id: String!, $path: String!, $reason: String!, $output: JSON) {
  editWorkState(workId: $id, path: $path, by: "ui", reason: $reason, output: $output,
                setOutput: true) { ${ANSWER} } }`;

function Breakpoints({ work, onSend }) {
  const [form, setForm] = useState({ event: '*', path: '*', when: 'after', condition: '' });
  const field = (name) => ({ name, value: form[name],
    onChange: (e) => setForm({ ...form, [name]: e.target.value }) });
  const point = () => {
    const bp = { event: form.event, path: form.path, when: form.when };
    if (form.condition.trim()) bp.condition = form.condition.trim();
    return bp;
  };
  const set = (e) => {
    e.preventDefault();
    onSend(SET_BREAKPOINT, { bp: point() });
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
        <button type="button" title="run to this point once, without keeping it as a breakpoint"
          onClick={() => onSend(RUN_UNTIL, { until: [point()] })}>run until</button>
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
  const [events, setEvents] = useState([]);  // by seq, holes where not read yet
  const [notable, setNotable] = useState([]);
  const [seq, setSeq] = useState(null);
  const [state, setState] = useState(null);
  const [problem, setProblem] = useState(null);
  const [divergence, setDivergence] = useState(null);
  const [reason, setReason] = useState('');

  const connected = useConnected();
  // the newest event read: after the server was away the page reads on from it, and
  // the subscription goes on from its cursor
  const last = useRef({ seq: 0, cursor: '0' });
  const asked = useRef(new Set());  // the pages of older events asked for
  useEffect(() => {
    last.current = { seq: 0, cursor: '0' };
    asked.current = new Set();
    setEvents([]);
    setNotable([]);
  }, [workId]);

  // events put in their places (seq n at n - 1); a newer one may lengthen the list,
  // the rows between stay holes until they are in view
  const place = (found) => {
    if (!found.length) return;
    setEvents((now) => {
      const next = now.slice();
      for (const e of found) next[e.seq - 1] = e;
      return next;
    });
  };
  const noted = (found) => {
    const kept = found.filter((e) => NOTABLE_TYPES.includes(e.type));
    if (kept.length) {
      setNotable((now) => {
        const seen = new Set(now.map((e) => e.seq));
        const fresh = kept.filter((e) => !seen.has(e.seq));
        return fresh.length ? [...now, ...fresh].sort((a, b) => a.seq - b.seq) : now;
      });
    }
  };

  useEffect(() => {
    let live = true;
    let stop = () => {};
    // the work's figures read again after events: one request at a time, a quarter of
    // a second apart at most while events stream in (the timeline shows each at once)
    let loading = false;
    let again = false;
    let waiting = null;
    let lastLoad = 0;
    const load = () => {
      if (loading || waiting) { again = true; return; }
      const wait = lastLoad + FIGURES_EVERY - Date.now();
      if (wait > 0) {
        waiting = setTimeout(() => { waiting = null; if (live) load(); }, wait);
        return;
      }
      loading = true;
      lastLoad = Date.now();
      request(WORK, { id: workId }).then((data) => live && setWork(data.work),
        (err) => live && setProblem(err.message)).finally(() => {
        loading = false;
        if (again && live) { again = false; load(); }
      });
    };
    const add = (found) => {
      const fresh = found.filter((e) => e.seq > last.current.seq);
      if (!fresh.length) return;
      last.current = { seq: fresh[fresh.length - 1].seq, cursor: fresh[fresh.length - 1].cursor };
      place(fresh);
      noted(fresh);
    };
    load();
    (async () => {
      // opened: the newest events first (older ones as they come into view); back after
      // the server was away: every event after the newest read
      let after = last.current.seq;
      if (after === 0) {
        const head = await request(NEWEST, { id: workId });
        if (!live) return;
        if (!head.work) { setProblem(`no work ${workId}`); return; }
        after = Math.max(0, head.work.lastSeq - TAIL);
        // the few events the graph needs from the whole stream, meanwhile
        (async () => {
          for (let from = 0; live;) {
            const found = await request(NOTABLE, { id: workId, after: from, types: NOTABLE_TYPES });
            if (!live) return;
            noted(found.work.events);
            if (found.work.events.length < PAGE) break;
            from = found.work.events[found.work.events.length - 1].seq;
          }
        })().catch((err) => live && setProblem(err.message));
      }
      for (;;) {
        const data = await request(STORED, { id: workId, after: Math.max(after, last.current.seq) });
        if (!live) return;
        add(data.work.events);
        if (data.work.events.length < PAGE) break;
      }
      stop = follow(EVENTS, { id: workId, after: last.current.cursor }, (data) => {
        add([data.workEvents]);
        load();
      });
    })().catch((err) => live && setProblem(err.message));
    return () => { live = false; stop(); clearTimeout(waiting); };
  }, [workId, connected]);

  // rows come into view that were not read yet: the page of events holding them
  const eventsRef = useRef(events);
  eventsRef.current = events;
  const need = useCallback((from, to) => {
    for (let n = from; n <= to; n += 1) {
      if (eventsRef.current[n - 1]) continue;
      const after = Math.floor((n - 1) / PAGE) * PAGE;
      if (asked.current.has(after)) continue;
      asked.current.add(after);
      request(STORED, { id: workId, after }).then((data) => place(data.work.events),
        (err) => { asked.current.delete(after); setProblem(err.message); });
    }
  }, [workId]);
  const shown = seq ?? (events.length ? events.length : null);
  // the state at the seq shown, one request at a time: while events stream in, the
  // newest seq asked for when the last answer came (not one request per event)
  const asking = useRef({ busy: false, next: null, workId, last: 0, timer: null });
  useEffect(() => {
    if (shown === null) return;
    const box = asking.current;
    box.next = shown;
    box.workId = workId;
    if (box.busy || box.timer) return;
    const ask = () => {
      // following the newest: a quarter of a second apart at most; a seq picked: now
      const wait = seq === null ? box.last + FIGURES_EVERY - Date.now() : 0;
      if (wait > 0) {
        box.timer = setTimeout(() => { box.timer = null; ask(); }, wait);
        return;
      }
      const [id, at] = [box.workId, box.next];
      box.next = null;
      box.busy = true;
      box.last = Date.now();
      request(STATE, { id, seq: at }).then(
        (data) => box.workId === id && setState(data.work.stateAt),
        (err) => box.workId === id && setProblem(err.message)).finally(() => {
        box.busy = false;
        if (box.next !== null) ask();
      });
    };
    ask();
  }, [workId, shown, seq]);

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
        {notable.some((e) => e.type === 'work.resolved') ? <span className="resolved"> (resolved)</span> : null}
        {' '}{work.stagesDone}/{work.stagesTotal} stages
        {work.currentStage ? ` · at ${work.currentStage}` : ''}
      </p>
      {parent && (
        <p className="fork">forked from <a href={`/?work=${parent}`}>{parent}</a> at seq
          {' '}{work.forkedAtSeq}{divergence !== null ? `; the first difference is at seq ${divergence}` : ''}</p>
      )}
      <Graph saga={work.saga} runs={work.stageRuns} events={notable} />
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
      <div className="story">
        <Timeline events={events} shown={shown} divergence={divergence} onPick={setSeq}
          onNeed={need} />
        <Waterfall runs={work.stageRuns} />
      </div>
    </main>
  );
}
