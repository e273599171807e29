// stepsaga's UI: the works index (and one work, work.jsx), pushed live by the API's `works` subscription (never
// polled), its view kept in the URL.
import { StrictMode, useEffect, useState } from 'react';
import { createRoot } from 'react-dom/client';
import { Away, follow, request, useConnected } from './api.jsx';
import { applyChange, ORDERS, REDUCERS, searchFromView, viewFromSearch } from './view.js';
import { Catalog } from './catalog.jsx';
import { opsPage } from './ops.jsx';
import { WorkPage } from './work.jsx';
import './style.css';

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
                   $saga: [String!], $status: [String!]) {
  aggregate(over: "works", groupBy: $group, reducer: $reducer, field: $field,
            expression: $expression, saga: $saga, status: $status) { group value count }
}`;
const GROUPABLE = ['saga', 'status', 'worker', 'node', 'error_type'];
const NUMERIC = ['', 'duration', 'priority', 'stages_done', 'stages_total', 'last_seq'];

// The works grouped and folded by the server (the aggregate query), never in here.
function Groups({ view, onChange, tick }) {
  const [expression, setExpression] = useState(view.expression);
  const [rows, setRows] = useState(null);
  const [problem, setProblem] = useState(null);
  useEffect(() => {
    if (!view.group.length) { setRows(null); return undefined; }
    let live = true;
    request(AGGREGATE, {
      group: view.group, reducer: view.reducer, field: view.field || null,
      expression: view.expression || null,
      saga: view.saga.length ? view.saga : null, status: view.status.length ? view.status : null,
    }).then((data) => { if (live) { setRows(data.aggregate); setProblem(null); } },
      (err) => live && setProblem(err.message));
    return () => { live = false; };
  }, [view, tick]);
  const pick = (name) => (e) => onChange({ ...view, [name]: e.target.value });
  return (
    <section className="groups">
      <form onSubmit={(e) => { e.preventDefault(); onChange({ ...view, expression: expression.trim() }); }}>
        <label>group by <select aria-label="group by" value={view.group[0] || ''}
          onChange={(e) => onChange({ ...view, group: e.target.value ? [e.target.value] : [] })}>
          <option value="">nothing</option>
          {GROUPABLE.map((g) => <option key={g} value={g}>{g.replace('_', ' ')}</option>)}
        </select></label>
        <label>reducer <select aria-label="reducer" value={view.reducer} onChange={pick('reducer')}>
          {REDUCERS.map((r) => <option key={r} value={r}>{r}</option>)}
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
          <thead><tr>{view.group.map((g) => <th key={g}>{g}</th>)}<th>{view.reducer}</th><th>works</th></tr></thead>
          <tbody>{rows.map((r) => (
            <tr key={JSON.stringify(r.group)}>
              {view.group.map((g) => <td key={g}>{String(r.group[g] ?? '')}</td>)}
              <td className="value">{r.value == null ? '' : Number(r.value.toFixed(3))}</td>
              <td>{r.count}</td>
            </tr>
          ))}</tbody>
        </table>
      )}
    </section>
  );
}

function WorksIndex() {
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
        <a href="/?services">services</a> <a href="/?locks">locks</a>
        <Away connected={connected} />
      </header>
      <Filters view={view} onChange={change} />
      <Groups view={view} onChange={change} tick={tick} />
      {problem && <p className="problem" role="alert">{problem}</p>}
      <p className="count">{total === null ? '' : `${total} ${total === 1 ? 'work matches' : 'works match'}`}</p>
      <table className="works">
        <thead>
          <tr><th>work</th><th>saga</th><th>status</th><th>stage</th><th>progress</th>
            <th>created</th><th>duration</th><th>error</th></tr>
        </thead>
        <tbody>
          {rows.map((work) => (
            <tr key={work.workId} data-work={work.workId} className={`status-${work.status}`}>
              <td className="id"><a href={`/?work=${work.workId}`}>{work.workId}</a></td>
              <td>{work.saga}</td>
              <td className="status">{work.status}</td>
              <td>{work.currentStage || ''}</td>
              <td><Progress work={work} /></td>
              <td>{when(work.createdAt)}</td>
              <td>{work.duration == null ? '' : `${work.duration.toFixed(2)} s`}</td>
              <td>{work.errorType || ''}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </main>
  );
}

// one page per URL: /?work=ID is a work, /?catalog the sagas, anything else the index
const params = new URLSearchParams(window.location.search);
const opened = params.get('work');
let page = <WorksIndex />;
if (opened) page = <WorkPage workId={opened} />;
else if (params.has('catalog')) page = <Catalog />;
else page = opsPage(params) ?? page;  // /?workers, /?worker=ID, /?schedules, /?services, /?locks
createRoot(document.getElementById('app')).render(<StrictMode>{page}</StrictMode>);
