// The operations pages' logic that lives in the browser, apart from React so vitest
// can check it: workers replaced by the subscription's changes, a worker's load points
// grown live, the services' health graph laid out by dagre, a check's history as cells.
import dagre from '@dagrejs/dagre';

// The list with `worker` in its place (by id), a new one added in id order.
export function applyWorker(rows, worker) {
  const at = rows.findIndex((r) => r.workerId === worker.workerId);
  if (at >= 0) return rows.map((r, i) => (i === at ? worker : r));
  return [...rows, worker].sort((a, b) => (a.workerId < b.workerId ? -1 : 1));
}

// The share of a worker's slots in use, 0 to 1 (more than its slots: 1).
export function loadShare(worker) {
  if (!worker.concurrency) return 0;
  return Math.min(1, worker.running / worker.concurrency);
}

// The points with the worker as a change showed it, at the moment of that change:
// added only when it is later than the last point and a figure differs, so a beat
// the API reported already is not drawn twice.
export function appendPoint(points, worker) {
  const time = Math.max(worker.updatedAt, worker.heartbeatAt);
  const last = points[points.length - 1];
  if (last && (time <= last.time
      || (last.running === worker.running && last.concurrency === worker.concurrency))) {
    return points;
  }
  return [...points, { time, running: worker.running, concurrency: worker.concurrency }];
}

// uPlot's columns: [times, running, concurrency].
export function columns(points) {
  return [points.map((p) => p.time), points.map((p) => p.running),
    points.map((p) => p.concurrency)];
}

const WIDTH = 140;
const HEIGHT = 40;

// { width, height, nodes: [{service, available, known, x, y, width, height}],
//   edges: [{from, to, points}] }: an edge goes from a service to one it depends on;
// a dependency with no checks of its own is drawn as unknown.
export function serviceLayout(services) {
  const byName = new Map(services.map((s) => [s.service, s]));
  const g = new dagre.graphlib.Graph();
  g.setGraph({ rankdir: 'RL', nodesep: 18, ranksep: 48, marginx: 8, marginy: 8 });
  g.setDefaultEdgeLabel(() => ({}));
  const names = new Set(services.map((s) => s.service));
  for (const s of services) for (const d of s.dependsOn || []) names.add(d);
  for (const name of names) g.setNode(name, { width: WIDTH, height: HEIGHT });
  const edges = [];
  for (const s of services) {
    for (const d of s.dependsOn || []) {
      g.setEdge(s.service, d);
      edges.push([s.service, d]);
    }
  }
  dagre.layout(g);
  const { width, height } = g.graph();
  return {
    width, height,
    nodes: [...names].sort().map((name) => ({
      service: name,
      known: byName.has(name),
      available: byName.has(name) ? byName.get(name).available : null,
      ...g.node(name),
    })),
    edges: edges.map(([from, to]) => ({ from, to, points: g.edge(from, to).points })),
  };
}

// A service's checks as strip cells, oldest first (the API gives newest first): `state`
// ok (its check passed and so did what it needs), blocked (it passed, a dependency
// did not), failed (its own check failed).
export function stripCells(history) {
  return [...history].reverse().map((run) => ({
    ...run,
    state: !run.ok ? 'failed' : run.available ? 'ok' : 'blocked',
  }));
}

const KEPT = 500;  // checks kept per service on a page left open

// The services with a check the `serviceChecks` subscription pushed: its service's
// newest run (history is newest first), availability and dependencies from it; a
// service first seen is added in name order. A run shown already is not added again.
export function applyCheck(services, check) {
  const { service, dependsOn, run } = check;
  const at = services.findIndex((s) => s.service === service);
  if (at < 0) {
    const added = { service, available: run.available, dependsOn, history: [run] };
    return [...services, added].sort((a, b) => (a.service < b.service ? -1 : 1));
  }
  const now = services[at];
  if (now.history.some((r) => r.cursor === run.cursor)) return services;
  const next = { ...now, available: run.available, dependsOn,
    history: [run, ...now.history].slice(0, KEPT) };
  return services.map((s, i) => (i === at ? next : s));
}

// The cursor to follow the checks from: the newest the page was given.
export function newestCheck(services) {
  let newest = null;
  for (const s of services) {
    for (const run of s.history) if (newest === null || Number(run.cursor) > Number(newest)) newest = run.cursor;
  }
  return newest;
}
