// The operations pages: the workers (/?workers, one at /?worker=ID), live through the
// `workers` subscription; the schedules (/?schedules); the services' health graph
// (/?services), its checks pushed by `serviceChecks`; the locks held and waited for
// (/?locks). Only the public GraphQL API.
import { useEffect, useMemo, useRef, useState } from 'react';
import { Away, follow, request, useConnected } from './api.jsx';
import { COLOURS, TimeChart } from './charts.jsx';
import {
  appendPoint, applyCheck, applyWorker, columns, loadShare, newestCheck, serviceLayout, stripCells,
} from './opsview.js';
import { PackLinks } from './packs.jsx';
import './ops.css';

const PAGES = ['workers', 'schedules', 'services', 'locks'];

function when(seconds) {
  return seconds ? new Date(seconds * 1000).toLocaleString() : '';
}

// The operations pages' links (and the packs' pages this server has)
export function Nav({ here, connected }) {
  return (
    <header>
      <nav className="ops">
        <a href="/">works</a>
        {PAGES.map((p) => (
          <a key={p} href={`/?${p}`} aria-current={p === here ? 'page' : undefined}>{p}</a>
        ))}
        <PackLinks here={here} />
      </nav>
      <Away connected={connected} />
    </header>
  );
}

// The typed result of a mutation as a line: its message when it is an error.
function outcome(result, done) {
  return result.__typename === done ? null : (result.message || result.__typename);
}

// ------------------------------------------------------------------------- workers

const WORKER = 'workerId node name status concurrency running heartbeatAt updatedAt';
const WORKERS = `{ allWorkers { ${WORKER} } }`;
const CHANGES = `subscription($node: [String!], $after: String) {
  workers(node: $node, after: $after) { cursor type worker { ${WORKER} } } }`;
const CHANGED = `__typename ... on WorkerChanged { outcome worker { ${WORKER} } }
  ... on NotFound { message } ... on InvalidInput { message } ... on WrongState { message }
  ... on Conflict { message }`;
const RESIZE = `mutation($id: String!, $n: Int!) {
  updateWorkers(workerId: $id, concurrency: $n) { ${CHANGED} } }`;
const REMOVE = `mutation($id: String!, $hard: Boolean!) {
  removeWorkers(workerId: $id, hard: $hard) { ${CHANGED} } }`;

// Each change of the workers (of `node`) to `onWorker`, from the cursor reached when
// the connection comes back: nothing missed, never polled.
function useWorkerChanges(node, connected, onWorker) {
  const cursor = useRef(null);
  const hear = useRef(onWorker);
  hear.current = onWorker;
  useEffect(() => {
    if (!connected) return undefined;
    return follow(CHANGES, { node, after: cursor.current }, (data) => {
      cursor.current = data.workers.cursor;
      hear.current(data.workers.worker);
    });
  }, [node, connected]);
}

function LoadBar({ worker }) {
  return (
    <span className="progress load" title={`${worker.running} of ${worker.concurrency} slots in use`}>
      <span className="bar" style={{ width: `${Math.round(loadShare(worker) * 100)}%` }} />
    </span>
  );
}

function Resize({ worker, onDone }) {
  const [size, setSize] = useState(String(worker.concurrency));
  const [problem, setProblem] = useState(null);
  useEffect(() => setSize(String(worker.concurrency)), [worker.concurrency]);
  const resize = (e) => {
    e.preventDefault();
    const n = Number(size);
    // how many is the node's rule (it answers why not); a number is the form's
    if (size.trim() === '' || !Number.isInteger(n)) { setProblem('the concurrency is a whole number'); return; }
    request(RESIZE, { id: worker.workerId, n }).then((data) => {
      const made = data.updateWorkers;
      setProblem(outcome(made, 'WorkerChanged'));
      if (made.worker && onDone) onDone(made.worker);
    }, (err) => setProblem(err.message));
  };
  return (
    <form className="resize" onSubmit={resize}>
      <input type="number" aria-label={`concurrency of ${worker.workerId}`} value={size}
        onChange={(e) => setSize(e.target.value)} />
      <button type="submit">resize</button>
      {problem && <span className="problem" role="alert">{problem}</span>}
    </form>
  );
}

export function Workers() {
  const [rows, setRows] = useState(null);
  const [problem, setProblem] = useState(null);
  const connected = useConnected();
  useWorkerChanges(null, connected, (worker) => setRows((now) => applyWorker(now || [], worker)));
  useEffect(() => {
    let live = true;
    // subscribed first (above), the list read after: a change in between is applied
    // twice at worst, never missed
    request(WORKERS).then((data) => {
      if (!live) return;
      setRows((now) => data.allWorkers.reduce(applyWorker, now || []));
      setProblem(null);
    }, (err) => live && setProblem(err.message));
    return () => { live = false; };
  }, [connected]);
  const change = (worker) => setRows((now) => applyWorker(now || [], worker));
  return (
    <main className="ops-page">
      <Nav here="workers" connected={connected} />
      <h1>Workers</h1>
      {problem && <p className="problem" role="alert">{problem}</p>}
      {rows && !rows.length && <p className="empty">No worker has registered with this store.</p>}
      <table className="workers">
        <thead><tr><th>worker</th><th>node</th><th>name</th><th>status</th><th>concurrency</th>
          <th>running</th><th>load</th><th>resize</th></tr></thead>
        <tbody>{(rows || []).map((w) => (
          <tr key={w.workerId} data-worker={w.workerId} className={`worker-${w.status}`}>
            <td className="id"><a href={`/?worker=${encodeURIComponent(w.workerId)}`}>{w.workerId}</a></td>
            <td>{w.node}</td>
            <td>{w.name}</td>
            <td className="status">{w.status}</td>
            <td className="concurrency">{w.concurrency}</td>
            <td className="running">{w.running}</td>
            <td><LoadBar worker={w} /></td>
            <td>{w.status === 'removed' ? '' : <Resize worker={w} onDone={change} />}</td>
          </tr>
        ))}</tbody>
      </table>
    </main>
  );
}

const ONE = `query($id: String!, $since: Float) { worker(workerId: $id) {
  ${WORKER} sagas host pid registeredAt
  load(since: $since, first: 10000) { time running concurrency } } }`;
const WINDOW = 3600;  // the chart's first hour by default

// The worker's slots in use (and its concurrency) over time.
const LOAD_SERIES = [
  { label: 'running', stroke: COLOURS.running, fill: 'rgba(28, 93, 153, 0.15)', stepped: true },
  { label: 'concurrency', stroke: COLOURS.concurrency, dash: [6, 4], width: 1.5, stepped: true }];

function LoadChart({ points }) {
  const data = useMemo(() => columns(points), [points]);
  const last = points[points.length - 1];
  return (
    <figure className="load-chart" data-points={points.length}>
      <TimeChart data={data} series={LOAD_SERIES} label="slots" width={760} height={240} />
      <figcaption>
        {last ? `${points.length} points; latest: ${last.running} of ${last.concurrency} slots in use`
          : 'no load recorded yet'}
      </figcaption>
    </figure>
  );
}

export function WorkerPage({ workerId, since }) {
  const [worker, setWorker] = useState(null);
  const [points, setPoints] = useState([]);
  const [problem, setProblem] = useState(null);
  const [said, setSaid] = useState(null);
  const [from] = useState(() => since ?? Date.now() / 1000 - WINDOW);
  const connected = useConnected();
  // its node's changes, once the worker is known (the subscription filters by node)
  const nodeName = worker ? worker.node : null;
  const nodes = useMemo(() => (nodeName ? [nodeName] : null), [nodeName]);
  const hear = (changed) => {
    if (changed.workerId !== workerId) return;
    setWorker((now) => ({ ...now, ...changed }));
    setPoints((now) => appendPoint(now, changed));
  };
  useWorkerChanges(nodes, connected && nodes !== null, hear);
  useEffect(() => {
    let live = true;
    request(ONE, { id: workerId, since: from }).then((data) => {
      if (!live) return;
      if (!data.worker) { setProblem(`no worker has id ${workerId}`); return; }
      const { load, ...figures } = data.worker;
      setWorker(figures);
      setPoints(load);
      setProblem(null);
    }, (err) => live && setProblem(err.message));
    return () => { live = false; };
  }, [workerId, from, connected]);
  const remove = (hard) => () => {
    request(REMOVE, { id: workerId, hard }).then((data) => {
      const made = data.removeWorkers;
      const error = outcome(made, 'WorkerChanged');
      setSaid(error ? { problem: error } : { note: hard ? 'removed' : `draining (${made.outcome})` });
      if (made.worker) hear(made.worker);
    }, (err) => setSaid({ problem: err.message }));
  };
  return (
    <main className="ops-page worker">
      <Nav here="workers" connected={connected} />
      <h1>Worker <span className="id">{workerId}</span></h1>
      {problem && <p className="problem" role="alert">{problem}</p>}
      {worker && (
        <>
          <dl className="figures">
            <dt>status</dt><dd className="status">{worker.status}</dd>
            <dt>node</dt><dd>{worker.node}</dd>
            <dt>concurrency</dt><dd className="concurrency">{worker.concurrency}</dd>
            <dt>running</dt><dd className="running">{worker.running} <LoadBar worker={worker} /></dd>
            <dt>sagas</dt><dd>{worker.sagas ? worker.sagas.join(', ') : 'all'}</dd>
            <dt>host</dt><dd>{worker.host} (pid {worker.pid})</dd>
            <dt>registered</dt><dd>{when(worker.registeredAt)}</dd>
            <dt>last heartbeat</dt><dd>{when(worker.heartbeatAt)}</dd>
          </dl>
          {worker.status !== 'removed' && (
            <div className="steer">
              <Resize worker={worker} onDone={hear} />
              <button type="button" onClick={remove(false)}
                title="its works finish their step and go to other workers">drain</button>
              <button type="button" onClick={remove(true)}
                title="its works are handed on at once; a call in flight runs again elsewhere">
                remove now</button>
            </div>
          )}
          {said && (said.problem ? <p className="problem" role="alert">{said.problem}</p>
            : <p className="note" role="status">{said.note}</p>)}
        </>
      )}
      <h2>Slots in use since {when(from)}</h2>
      <LoadChart points={points} />
    </main>
  );
}

// ----------------------------------------------------------------------- schedules

const SCHEDULE = 'name saga cron timezone overlap paused nextAt lastTick lastWorkId fired';
const SCHEDULES = `{ schedules { ${SCHEDULE} } }`;
const ACT = (field) => `mutation($name: String!) { ${field}(name: $name) {
  __typename ... on ScheduleChanged { workId schedule { ${SCHEDULE} } }
  ... on NotFound { message } ... on InvalidInput { message } ... on Conflict { message } } }`;
const ACTIONS = { pause: 'pauseSchedule', resume: 'resumeSchedule', trigger: 'triggerSchedule' };

export function Schedules() {
  const [rows, setRows] = useState(null);
  const [problem, setProblem] = useState(null);
  const [said, setSaid] = useState({});  // schedule name -> {problem} or {workId}
  const [gone, setGone] = useState(null);
  const connected = useConnected();
  const read = () => request(SCHEDULES).then((data) => { setRows(data.schedules); setProblem(null); },
    (err) => setProblem(err.message));
  useEffect(() => { if (connected) read(); }, [connected]);
  const act = (action, name) => () => {
    request(ACT(ACTIONS[action]), { name }).then((data) => {
      const made = data[ACTIONS[action]];
      const error = outcome(made, 'ScheduleChanged');
      setSaid((now) => ({ ...now, [name]: error ? { problem: error } : { workId: made.workId } }));
      if (made.schedule) {
        setRows((now) => now.map((s) => (s.name === name ? made.schedule : s)));
      } else if (made.__typename === 'NotFound') {
        setGone(`${name}: ${error}`);  // deleted meanwhile: said above the list read again
        read();
      }
    }, (err) => setSaid((now) => ({ ...now, [name]: { problem: err.message } })));
  };
  return (
    <main className="ops-page">
      <Nav here="schedules" connected={connected} />
      <h1>Schedules <button type="button" onClick={read}>read again</button></h1>
      {problem && <p className="problem" role="alert">{problem}</p>}
      {gone && <p className="problem gone" role="alert">{gone}</p>}
      {rows && !rows.length && <p className="empty">No schedule in this store.</p>}
      <table className="schedules">
        <thead><tr><th>schedule</th><th>saga</th><th>cron</th><th>next</th><th>last</th>
          <th>fired</th><th>paused</th><th></th></tr></thead>
        <tbody>{(rows || []).map((s) => (
          <tr key={s.name} data-schedule={s.name} className={s.paused ? 'paused' : ''}>
            <td>{s.name}</td>
            <td>{s.saga}</td>
            <td className="cron"><code>{s.cron}</code> {s.timezone}</td>
            <td>{when(s.nextAt)}</td>
            <td>{when(s.lastTick)}{s.lastWorkId && <> <a href={`/?work=${s.lastWorkId}`}>work</a></>}</td>
            <td className="fired">{s.fired}</td>
            <td className="paused">{s.paused ? 'paused' : 'no'}</td>
            <td className="actions">
              {s.paused ? <button type="button" onClick={act('resume', s.name)}>resume</button>
                : <button type="button" onClick={act('pause', s.name)}>pause</button>}
              <button type="button" onClick={act('trigger', s.name)}>trigger</button>
              {said[s.name]?.problem && <span className="problem" role="alert">{said[s.name].problem}</span>}
              {said[s.name]?.workId && (
                <span className="note">started <a href={`/?work=${said[s.name].workId}`}>{said[s.name].workId}</a></span>
              )}
            </td>
          </tr>
        ))}</tbody>
      </table>
    </main>
  );
}

// ------------------------------------------------------------------------ services

const RUN = 'cursor ok available detail node time';
const SERVICES = `{ services(history: 2000) { service available dependsOn history { ${RUN} } } }`;
const CHECKS = `subscription($after: String) {
  serviceChecks(after: $after) { service dependsOn run { ${RUN} } } }`;

function Strip({ service }) {
  return (
    <ol className="strip" aria-label={`checks of ${service.service}`}>
      {stripCells(service.history).map((cell) => (
        <li key={cell.cursor} data-cursor={cell.cursor} className={`cell ${cell.state}`}
          title={`${when(cell.time)} on ${cell.node}: ${cell.detail || 'ok'}`} />
      ))}
    </ol>
  );
}

export function Services() {
  const [services, setServices] = useState(null);
  const [problem, setProblem] = useState(null);
  const connected = useConnected();
  useEffect(() => {
    if (!connected) return undefined;
    let live = true;
    let stop = null;
    // read, then followed from the newest check read (from the first when none): each
    // check once, none missed
    request(SERVICES).then((data) => {
      if (!live) return;
      setServices(data.services);
      setProblem(null);
      stop = follow(CHECKS, { after: newestCheck(data.services) ?? '0' },
        (pushed) => setServices((now) => applyCheck(now || [], pushed.serviceChecks)));
    }, (err) => live && setProblem(err.message));
    return () => { live = false; if (stop) stop(); };
  }, [connected]);
  const graph = services && services.length ? serviceLayout(services) : null;
  const state = (n) => (!n.known ? 'unknown' : n.available ? 'available' : 'unavailable');
  return (
    <main className="ops-page">
      <Nav here="services" connected={connected} />
      <h1>Services</h1>
      {problem && <p className="problem" role="alert">{problem}</p>}
      {services && !services.length && (
        <p className="empty">No health check has run on this store: a worker node checks the
          services its app declares (WorkerApp(health_checks=[...])).</p>
      )}
      {graph && (
        <svg className="services" width={graph.width} height={graph.height} role="img"
          aria-label="service health graph">
          <defs><marker id="needs" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="6"
            markerHeight="6" orient="auto"><path d="M0,0 L10,5 L0,10 z" /></marker></defs>
          {graph.edges.map((e) => (
            <polyline key={`${e.from}>${e.to}`} markerEnd="url(#needs)"
              points={e.points.map((p) => `${p.x},${p.y}`).join(' ')} />
          ))}
          {graph.nodes.map((n) => (
            <g key={n.service} data-service={n.service} className={state(n)}
              transform={`translate(${n.x - n.width / 2},${n.y - n.height / 2})`}>
              <title>{`${n.service}: ${state(n)}`}</title>
              <rect width={n.width} height={n.height} rx="6" />
              <text x={n.width / 2} y={n.height / 2 + 4} textAnchor="middle">{n.service}</text>
            </g>
          ))}
        </svg>
      )}
      <table className="checks">
        <thead><tr><th>service</th><th>now</th><th>needs</th><th>checks, newest last</th></tr></thead>
        <tbody>{(services || []).map((s) => (
          <tr key={s.service} data-service={s.service}>
            <td>{s.service}</td>
            <td className={`state ${s.available ? 'available' : 'unavailable'}`}>
              {s.available ? 'available' : 'unavailable'}</td>
            <td>{s.dependsOn.join(', ')}</td>
            <td><Strip service={s} /></td>
          </tr>
        ))}</tbody>
      </table>
    </main>
  );
}

// --------------------------------------------------------------------------- locks

const LOCKS = `{ locks { held { name holder acquiredAt expiresAt }
  waiting { name holder since expiresAt } } }`;

// A stage's lock is held as '<node>/<work>/<path>': the work is linked (a work id is 32
// hex digits; any other holder is shown as it is).
function holderLink(holder) {
  const parts = holder.split('/');
  const at = parts.findIndex((p, i) => i > 0 && /^[0-9a-f]{32}$/.test(p));
  if (at < 0) return holder;
  return (
    <>{parts.slice(0, at).join('/')}/<a href={`/?work=${parts[at]}`}>{parts[at]}</a>
      {at + 1 < parts.length ? `/${parts.slice(at + 1).join('/')}` : ''}</>
  );
}

export function Locks() {
  const [locks, setLocks] = useState(null);
  const [problem, setProblem] = useState(null);
  const connected = useConnected();
  const read = () => request(LOCKS).then((data) => { setLocks(data.locks); setProblem(null); },
    (err) => setProblem(err.message));
  useEffect(() => { if (connected) read(); }, [connected]);
  const place = {};
  return (
    <main className="ops-page">
      <Nav here="locks" connected={connected} />
      <h1>Locks <button type="button" onClick={read}>read again</button></h1>
      {problem && <p className="problem" role="alert">{problem}</p>}
      <h2>Held</h2>
      {locks && !locks.held.length && <p className="empty">No lock is held.</p>}
      <table className="held">
        <thead><tr><th>lock</th><th>holder</th><th>since</th><th>expires</th></tr></thead>
        <tbody>{(locks?.held || []).map((h) => (
          <tr key={`${h.name} ${h.holder}`} data-lock={h.name}>
            <td>{h.name}</td><td className="holder">{holderLink(h.holder)}</td>
            <td>{when(h.acquiredAt)}</td><td>{when(h.expiresAt)}</td>
          </tr>
        ))}</tbody>
      </table>
      <h2>Waiting, in the order they will get it</h2>
      {locks && !locks.waiting.length && <p className="empty">Nobody waits for a lock.</p>}
      <table className="waiting">
        <thead><tr><th>lock</th><th>place</th><th>waiter</th><th>waiting since</th></tr></thead>
        <tbody>{(locks?.waiting || []).map((w) => {
          place[w.name] = (place[w.name] || 0) + 1;
          return (
            <tr key={`${w.name} ${w.holder}`} data-lock={w.name}>
              <td>{w.name}</td><td className="place">{place[w.name]}</td>
              <td className="holder">{holderLink(w.holder)}</td><td>{when(w.since)}</td>
            </tr>
          );
        })}</tbody>
      </table>
    </main>
  );
}

// The operations page this URL names, or null.
export function opsPage(params) {
  if (params.get('worker')) {
    const since = params.get('since');
    return <WorkerPage workerId={params.get('worker')} since={since ? Number(since) : undefined} />;
  }
  if (params.has('workers')) return <Workers />;
  if (params.has('schedules')) return <Schedules />;
  if (params.has('services')) return <Services />;
  if (params.has('locks')) return <Locks />;
  return null;
}
