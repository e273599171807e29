// The index's view (filters and sort) kept in the URL, so a view can be shared: pure
// functions, tested with the bundler's test runner.

export const ORDERS = ['CREATED_AT', 'UPDATED_AT', 'STARTED_AT', 'FINISHED_AT', 'DURATION',
  'PRIORITY', 'SAGA', 'STATUS'];

export const REDUCERS = ['count', 'sum', 'avg', 'min', 'max', 'p95'];

export function viewFromSearch(search) {
  const params = new URLSearchParams(search);
  const list = (name) => (params.get(name) || '').split(',').map((s) => s.trim()).filter(Boolean);
  const order = (params.get('order') || 'CREATED_AT').toUpperCase();
  const reducer = params.get('reducer') || 'count';
  return {
    saga: list('saga'),
    status: list('status'),
    order: ORDERS.includes(order) ? order : 'CREATED_AT',
    descending: params.get('asc') === null,
    // the grouping: fields to group by, a reducer and what it folds (a field or a CEL
    // expression over `work`), computed by the API's aggregate query
    group: list('group'),
    reducer: REDUCERS.includes(reducer) ? reducer : 'count',
    field: params.get('field') || '',
    expression: params.get('expr') || '',
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
