// The index's view (filters and sort) kept in the URL, so a view can be shared: pure
// functions, tested with the bundler's test runner.

export const ORDERS = ['CREATED_AT', 'UPDATED_AT', 'STARTED_AT', 'FINISHED_AT', 'DURATION',
  'PRIORITY', 'SAGA', 'STATUS'];

export const REDUCERS = ['count', 'sum', 'avg', 'min', 'max', 'p95'];  // built in
const WORD = /^[A-Za-z][A-Za-z0-9_]*$/;  // a reducer's name (the server may register more)

// the works table's columns, all shown unless the view names some
export const COLUMNS = ['work', 'saga', 'status', 'stage', 'progress', 'created', 'duration',
  'error'];
export const BUCKETS = [0, 60, 300, 3600, 86400];  // seconds; 0: no time bucket

export function viewFromSearch(search) {
  const params = new URLSearchParams(search);
  const list = (name) => (params.get(name) || '').split(',').map((s) => s.trim()).filter(Boolean);
  const order = (params.get('order') || 'CREATED_AT').toUpperCase();
  const reducer = params.get('reducer') || 'count';
  const columns = list('cols').filter((c) => COLUMNS.includes(c));
  const bucket = Number(params.get('bucket') || 0);
  return {
    saga: list('saga'),
    status: list('status'),
    order: ORDERS.includes(order) ? order : 'CREATED_AT',
    descending: params.get('asc') === null,
    // the grouping: fields to group by, a reducer and what it folds (a field or a CEL
    // expression over `work`), computed by the API's aggregate query
    group: list('group'),
    reducer: WORD.test(reducer) ? reducer : 'count',
    field: params.get('field') || '',
    expression: params.get('expr') || '',
    bucket: BUCKETS.includes(bucket) ? bucket : 0,  // the groups split by time too
    columns: columns.length ? columns : COLUMNS,
  };
}

export function searchFromView(view) {
  const params = new URLSearchParams();
  if (view.saga.length) params.set('saga', view.saga.join(','));
  if (view.status.length) params.set('status', view.status.join(','));
  if (view.order !== 'CREATED_AT') params.set('order', view.order.toLowerCase());
  if (!view.descending) params.set('asc', '');
  if (view.group.length) params.set('group', view.group.join(','));
  if (view.reducer !== 'count') params.set('reducer', view.reducer);
  if (view.field) params.set('field', view.field);
  if (view.expression) params.set('expr', view.expression);
  if (view.bucket) params.set('bucket', String(view.bucket));
  if (view.columns.length !== COLUMNS.length) params.set('cols', view.columns.join(','));
  const text = params.toString();
  return text ? `?${text}` : '';
}

// Whether a work (as the API shows it) belongs in a view's list.
export function inView(view, work) {
  return (!view.saga.length || view.saga.includes(work.saga))
    && (!view.status.length || view.status.includes(work.status));
}

// The list after a change of one work: replaced where it is; a new one added at the top
// when the list is newest first (in another order its place is the server's to say: the
// list is read again) and kept at most `limit` long; dropped when it left the view.
export function applyChange(rows, work, view, limit = 50) {
  const at = rows.findIndex((r) => r.workId === work.workId);
  if (!inView(view, work)) return at < 0 ? rows : rows.filter((_, i) => i !== at);
  if (at >= 0) return rows.map((r, i) => (i === at ? work : r));
  if (view.order !== 'CREATED_AT' || !view.descending) return rows;
  return [work, ...rows].slice(0, limit);
}

// The values of time-bucketed aggregate rows on a grid from `since` to `until` in steps
// of `step` seconds: [times, values], `empty` where a bucket has no row (0 for counts,
// null for a fold of nothing). Rows of other groups are picked out by `keep`.
export function onGrid(rows, since, until, step, empty, keep = () => true) {
  const first = Math.floor(since / step) * step;
  const times = [];
  for (let t = first; t <= until; t += step) times.push(t);
  const at = new Map();
  for (const row of rows) {
    if (!keep(row)) continue;
    const t = row.group.bucket;
    at.set(t, (at.get(t) ?? 0) + (row.value ?? 0));
    if (row.value === null && !at.has(t)) at.set(t, null);
  }
  return [times, times.map((t) => (at.has(t) ? at.get(t) : empty))];
}
