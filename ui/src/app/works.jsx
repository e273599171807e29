// The works index: rows pushed live by the API's `works` subscription (never polled),
// the view (filters, order, grouping, columns) kept in the URL, charts of the last hour
// and groups folded by the server's aggregate.
import { useEffect, useState } from 'react';
import { Away, follow, request, signOut, useConnected } from './api.jsx';
import { COLOURS, TimeChart } from './charts.jsx';
import { PackLinks } from './packs.jsx';
import { applyChange, BUCKETS, COLUMNS, onGrid, ORDERS, REDUCERS, searchFromView,
  viewFromSearch } from './view.js';

const FIELDS = 'workId saga status phase currentStage stagesDone stagesTotal progress createdAt duration errorType';
const LIST = `query($saga: [String!], $status: [String!], $order: WorkOrder!, $desc: Boolean!) {
  allWorks(first: 50, saga: $saga, status: $status, orderBy: $order, descending: $desc) {
    totalCount edges { node { ${FIELDS} } }
  }
}`;
const COUNT = `query($saga: [String!], $status: [String!], $order: WorkOrder!, $desc: Boolean!) {
  allWorks(first: 0, saga: $saga, status: $status, orderBy: $order, descending: $desc) { totalCount }
}`;
const CHANGES = `subscription($saga: [String!]) {
  works(saga: $saga) { cursor type work { ${FIELDS} } }
}`;

function when(seconds) {
  return seconds ? new Date(seconds * 1000).toLocaleTimeString() : '';
}

function Progress({ work }) {
  const share = Math.round((work.progress || 0) * 100);
  return (
    <span className="progress" title={`${work.stagesDone} of ${work.stagesTotal} stages`}>
      <span className="bar" style={{ width: `${share}%` }} />
    </span>
  );
}

function Filters({ view, onChange }) {
  const [saga, setSaga] = useState(view.saga.join(','));
  const [status, setStatus] = useState(view.status.join(','));
  const split = (text) => text.split(',').map((s) => s.trim()).filter(Boolean);
  const apply = (event) => {
    event.preventDefault();
    onChange({ ...view, saga: split(saga), status: split(status) });
  };
  return (
    <form className="filters" onSubmit={apply}>
      <label>saga <input name="saga" value={saga} onChange={(e) => setSaga(e.target.value)} /></label>
      <label>status <input name="status" value={status} onChange={(e) => setStatus(e.target.value)} /></label>
      <label>order <select name="order" value={view.order}
        onChange={(e) => onChange({ ...view, order: e.target.value })}>
        {ORDERS.map((o) => <option key={o} value={o}>{o.toLowerCase().replace('_', ' ')}</option>)}
      </select></label>
      <label><input type="checkbox" name="descending" checked={view.descending}
        onChange={(e) => onChange({ ...view, descending: e.target.checked })} /> descending</label>
      <button type="submit">apply</button>
    </form>
  );
}

const AGGREGATE = `query($group: [String!], $reducer: String!, $field: String, $expression: String,
                   $saga: [String!], $status: [String!], $bucket: Float) {
  aggregate(over: "works", groupBy: $group, reducer: $reducer, field: $field,
            expression: $expression, saga: $saga, status: $status, bucketSeconds: $bucket)
  { group value count }
}`;
const GROUPABLE = ['saga', 'status', 'worker', 'node', 'error_type'];
const NUMERIC = ['', 'duration', 'priority', 'stages_done', 'stages_total', 'last_seq'];

const REDUCER_NAMES = 'query { reducers }';

// The works grouped and folded by the server (the aggregate query), never in here: by
// some fields (in the order ticked) and a time bucket, with a built-in reducer or one
// the server's app registered in Python, over a field or a CEL expression.
function Groups({ view, onChange, tick }) {
  const [expression, setExpression] = useState(view.expression);
  const [rows, setRows] = useState(null);
  const [problem, setProblem] = useState(null);
  const [reducers, setReducers] = useState(REDUCERS);
  useEffect(() => {
    request(REDUCER_NAMES).then((data) => setReducers(data.reducers), () => {});
  }, []);
  const grouped = view.group.length > 0 || view.bucket > 0;
  useEffect(() => {
    if (!grouped) { setRows(null); return undefined; }
    let live = true;
    request(AGGREGATE, {
      group: view.group, reducer: view.reducer, field: view.field || null,
      expression: view.expression || null, bucket: view.bucket || null,
      saga: view.saga.length ? view.saga : null, status: view.status.length ? view.status : null,
    }).then((data) => { if (live) { setRows(data.aggregate); setProblem(null); } },
      (err) => live && setProblem(err.message));
    return () => { live = false; };
  }, [view, tick, grouped]);
  const pick = (name, as = (v) => v) => (e) => onChange({ ...view, [name]: as(e.target.value) });
  const toggle = (field) => (e) => onChange({ ...view,
    group: e.target.checked ? [...view.group, field] : view.group.filter((g) => g !== field) });
  const keys = [...view.group, ...(view.bucket ? ['bucket'] : [])];
  return (
    <section className="groups">
      <form onSubmit={(e) => { e.preventDefault(); onChange({ ...view, expression: expression.trim() }); }}>
        <fieldset className="group-by"><legend>group by</legend>
          {GROUPABLE.map((g) => (
            <label key={g}><input type="checkbox" name="group" value={g}
              checked={view.group.includes(g)} onChange={toggle(g)} />{g.replace('_', ' ')}</label>
          ))}
          <label>per <select aria-label="time bucket" value={view.bucket}
            onChange={pick('bucket', Number)}>
            {BUCKETS.map((b) => <option key={b} value={b}>{BUCKET_NAMES[b]}</option>)}
          </select></label>
        </fieldset>
        <label>reducer <select aria-label="reducer" value={view.reducer} onChange={pick('reducer')}>
          {(reducers.includes(view.reducer) ? reducers : [...reducers, view.reducer]).map(
            (r) => <option key={r} value={r}>{r}</option>)}
        </select></label>
        <label>of <select aria-label="field" value={view.field} onChange={pick('field')}>
          {NUMERIC.map((f) => <option key={f} value={f}>{f || '(rows)'}</option>)}
        </select></label>
        <label>or CEL <input aria-label="expression" placeholder="work.duration * 1000"
          value={expression} onChange={(e) => setExpression(e.target.value)} /></label>
        <button type="submit">fold</button>
      </form>
      {problem && <p className="problem" role="alert">{problem}</p>}
      {rows && (
        <table className="aggregate">
          <thead><tr>{keys.map((g) => <th key={g}>{g}</th>)}<th>{view.reducer}</th><th>works</th></tr></thead>
          <tbody>{rows.map((r) => (
            <tr key={JSON.stringify(r.group)}>
              {keys.map((g) => <td key={g}>{g === 'bucket' ? stamp(r.group.bucket)
                : String(r.group[g] ?? '')}</td>)}
              <td className="value">{r.value == null ? '' : Number(r.value.toFixed(3))}</td>
              <td>{r.count}</td>
            </tr>
          ))}</tbody>
        </table>
      )}
    </section>
  );
}

const BUCKET_NAMES = { 0: 'all time', 60: 'minute', 300: '5 minutes', 3600: 'hour', 86400: 'day' };
const stamp = (seconds) => new Date(seconds * 1000).toLocaleString();
const ACTIVITY = `query($since: Float!, $saga: [String!]) {
  created: aggregate(bucketSeconds: 60, since: $since, saga: $saga) { group value count }
  finished: aggregate(groupBy: ["status"], bucketSeconds: 60, since: $since, saga: $saga,
                      time: "finished_at") { group value count }
  p95: aggregate(reducer: "p95", field: "duration", bucketSeconds: 60, since: $since,
                 saga: $saga, time: "finished_at") { group value count }
  avg: aggregate(reducer: "avg", field: "duration", bucketSeconds: 60, since: $since,
                 saga: $saga, time: "finished_at") { group value count }
}`;
const HOUR = 3600;
const FAILED = new Set(['failed', 'compensation_failed', 'cancelled']);
const sum = (values) => values.reduce((a, b) => a + b, 0);

// The last hour, per minute: works created, completed and failed, and the durations of
// those that finished (p95 and mean), all folded by the server; read again with the list.
function Activity({ view, tick }) {
  const [data, setData] = useState(null);
  useEffect(() => {
    let live = true;
    const until = Date.now() / 1000;
    const since = until - HOUR;
    request(ACTIVITY, { since, saga: view.saga.length ? view.saga : null }).then((found) => {
      if (!live) return;
      const [times, created] = onGrid(found.created, since, until, 60, 0);
      const done = onGrid(found.finished, since, until, 60, 0, (r) => r.group.status === 'completed')[1];
      const failed = onGrid(found.finished, since, until, 60, 0, (r) => FAILED.has(r.group.status))[1];
      const p95 = onGrid(found.p95, since, until, 60, null)[1];
      const avg = onGrid(found.avg, since, until, 60, null)[1];
      setData({ counts: [times, created, done, failed], durations: [times, p95, avg],
        totals: { created: sum(created), completed: sum(done), failed: sum(failed) } });
    }, () => {});
    return () => { live = false; };
  }, [view.saga, tick]);
  if (!data) return null;
  return (
    <section className="activity" data-created={data.totals.created}
      data-completed={data.totals.completed} data-failed={data.totals.failed}>
      <figure>
        <figcaption>works per minute, the last hour: {data.totals.created} created,
          {' '}{data.totals.completed} completed, {data.totals.failed} failed</figcaption>
        <TimeChart data={data.counts} label="works" series={[
          { label: 'created', stroke: COLOURS.created, stepped: true },
          { label: 'completed', stroke: COLOURS.completed, stepped: true },
          { label: 'failed', stroke: COLOURS.failed, stepped: true }]} />
      </figure>
      <figure>
        <figcaption>duration of the works that finished, per minute</figcaption>
        <TimeChart data={data.durations} label="seconds" unit=" s" series={[
          { label: 'p95', stroke: COLOURS.p95 }, { label: 'mean', stroke: COLOURS.avg }]} />
      </figure>
    </section>
  );
}

// one cell of a work's row per column the view shows
const CELLS = {
  work: (w) => <td key="work" className="id"><a href={`/?work=${w.workId}`}>{w.workId}</a></td>,
  saga: (w) => <td key="saga">{w.saga}</td>,
  status: (w) => <td key="status" className="status">{w.status}</td>,
  stage: (w) => <td key="stage">{w.currentStage || ''}</td>,
  progress: (w) => <td key="progress"><Progress work={w} /></td>,
  created: (w) => <td key="created">{when(w.createdAt)}</td>,
  duration: (w) => <td key="duration">{w.duration == null ? '' : `${w.duration.toFixed(2)} s`}</td>,
  error: (w) => <td key="error">{w.errorType || ''}</td>,
};

function Columns({ view, onChange }) {
  const toggle = (column) => (e) => {
    const chosen = e.target.checked ? [...view.columns, column] : view.columns.filter((c) => c !== column);
    const next = COLUMNS.filter((c) => chosen.includes(c));  // in the table's order; never none
    if (next.length) onChange({ ...view, columns: next });
  };
  return (
    <fieldset className="columns"><legend>columns</legend>
      {COLUMNS.map((c) => (
        <label key={c}><input type="checkbox" name="column" value={c}
          checked={view.columns.includes(c)} onChange={toggle(c)} />{c}</label>
      ))}
    </fieldset>
  );
}

export function WorksIndex() {
  const [view, setView] = useState(() => viewFromSearch(window.location.search));
  const [rows, setRows] = useState([]);
  const [total, setTotal] = useState(null);
  const [problem, setProblem] = useState(null);
  const [tick, setTick] = useState(0);  // changes came: the server's figures are read again
  const connected = useConnected();

  const change = (next) => {
    window.history.replaceState(null, '', `${window.location.pathname}${searchFromView(next)}`);
    setView(next);
  };

  useEffect(() => {
    let live = true;
    // subscribed first, the list read after: a change in between is applied twice at
    // worst (the same row replaced), never missed
    const variables = {
      saga: view.saga.length ? view.saga : null,
      status: view.status.length ? view.status : null,
      order: view.order,
      desc: view.descending,
    };
    // the count is the server's: read again at most once a second while changes come;
    // in an order other than newest first, so is the page (where a new work goes)
    const newestFirst = view.order === 'CREATED_AT' && view.descending;
    let counting = null;
    const recount = () => {
      if (counting) return;
      counting = setTimeout(() => {
        counting = null;
        request(newestFirst ? COUNT : LIST, variables).then((data) => {
          if (!live) return;
          setTotal(data.allWorks.totalCount);
          if (!newestFirst) setRows(data.allWorks.edges.map((e) => e.node));
        }, () => {});
        if (live) setTick((n) => n + 1);
      }, 1000);
    };
    const stop = follow(CHANGES, { saga: variables.saga }, (data) => {
      const { work } = data.works;
      setRows((now) => applyChange(now, work, view));
      recount();
    });
    request(LIST, variables).then((data) => {
      if (!live) return;
      setRows(data.allWorks.edges.map((e) => e.node));
      setTotal(data.allWorks.totalCount);
      setProblem(null);
    }, (err) => live && setProblem(err.message));
    return () => { live = false; stop(); clearTimeout(counting); };
  }, [view, connected]);

  return (
    <main>
      <header>
        <h1>Works</h1>
        <a href="/?catalog">sagas</a>
        <a href="/?workers">workers</a> <a href="/?schedules">schedules</a>
        <a href="/?services">services</a> <a href="/?locks">locks</a> <PackLinks />
        <button type="button" className="sign-out" onClick={signOut}>sign out</button>
        <Away connected={connected} />
      </header>
      <Filters view={view} onChange={change} />
      <Activity view={view} tick={tick} />
      <Groups view={view} onChange={change} tick={tick} />
      {problem && <p className="problem" role="alert">{problem}</p>}
      <p className="count">{total === null ? '' : `${total} ${total === 1 ? 'work matches' : 'works match'}`}</p>
      <Columns view={view} onChange={change} />
      <table className="works">
        <thead>
          <tr>{view.columns.map((c) => <th key={c}>{c}</th>)}</tr>
        </thead>
        <tbody>
          {rows.map((work) => (
            <tr key={work.workId} data-work={work.workId} className={`status-${work.status}`}>
              {view.columns.map((c) => CELLS[c](work))}
            </tr>
          ))}
        </tbody>
      </table>
    </main>
  );
}

