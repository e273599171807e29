// A saga's stage graph: its stages (as the catalog describes them) as nodes, the order
// they run in as edges, laid out by dagre; and each stage's status from a work's runs.
import dagre from '@dagrejs/dagre';

const FANS = new Set(['Parallel', 'Branch']);  // children side by side
const WIDTH = 150;
const HEIGHT = 36;

// { nodes: [{path, kind, x, y, width, height}], edges: [{from, to, points}] }
export function layout(stages) {
  const byPath = new Map(stages.map((s) => [s.path, s]));
  // a Map's child is named without its index ("pack/box" for "pack[*]/box")
  const bare = new Map(stages.map((s) => [s.path.replace(/\[\*\]/g, ''), s.path]));
  const find = (name) => (byPath.has(name) ? name : bare.get(name));
  const edges = [];
  const nodes = [];

  // the stages a path starts with and ends with, edges within it added
  function walk(path) {
    const stage = byPath.get(path);
    const children = (stage.children || []).map(find).filter(Boolean);
    if (path !== '') nodes.push(stage);
    if (!children.length) return path === '' ? { entries: [], exits: [] } : { entries: [path], exits: [path] };
    const parts = children.map(walk);
    if (FANS.has(stage.kind) || stage.kind === 'Map') {
      for (const part of parts) for (const entry of part.entries) edges.push([path, entry]);
      return { entries: [path], exits: parts.flatMap((p) => p.exits) };
    }
    for (let i = 1; i < parts.length; i += 1) {
      for (const exit of parts[i - 1].exits) for (const entry of parts[i].entries) edges.push([exit, entry]);
    }
    const first = parts[0].entries;
    if (path === '') return { entries: first, exits: parts[parts.length - 1].exits };
    for (const entry of first) edges.push([path, entry]);
    return { entries: [path], exits: parts[parts.length - 1].exits };
  }
  if (byPath.has('')) walk('');

  const g = new dagre.graphlib.Graph();
  g.setGraph({ rankdir: 'LR', nodesep: 16, ranksep: 36, marginx: 8, marginy: 8 });
  g.setDefaultEdgeLabel(() => ({}));
  for (const stage of nodes) g.setNode(stage.path, { width: WIDTH, height: HEIGHT });
  for (const [from, to] of edges) g.setEdge(from, to);
  dagre.layout(g);
  const { width, height } = g.graph();
  return {
    width, height,
    nodes: nodes.map((s) => ({ path: s.path, kind: s.kind, name: s.name, ...g.node(s.path) })),
    edges: edges.map(([from, to]) => ({ from, to, points: g.edge(from, to).points })),
  };
}

const RANK = ['failed', 'compensation_failed', 'compensating', 'running', 'compensated',
  'completed', 'pending'];

// Each stage's status in one work: the most telling of its runs' (map items and loop
// iterations fold into their template).
export function statuses(runs) {
  const found = {};
  for (const run of runs) {
    const now = found[run.template];
    const rank = (s) => (RANK.includes(s) ? RANK.indexOf(s) : RANK.length);
    if (now === undefined || rank(run.status) < rank(now)) found[run.template] = run.status;
  }
  return found;
}

// The compensation path of a work as it unwinds: the stage that failed for good, then
// each stage whose compensation started after the work began compensating, in that order
// (as templates: map items and loop iterations fold into theirs). A retry's compensation
// of its own attempt is not part of the path.
export function unwinding(events, templateOf = (path) => path) {
  const path = [];
  let compensating = false;
  const add = (stage) => {
    const template = templateOf(stage);
    if (template && path[path.length - 1] !== template) path.push(template);
  };
  for (const event of events) {
    if (event.type === 'work.compensating') compensating = true;
    else if (!compensating && event.type === 'stage.failed' && !path.length) add(event.path);
    else if (compensating && event.type === 'stage.compensation.started') add(event.path);
  }
  return compensating ? path : [];
}

// The runs of each template that has more than one (map items, loop iterations), in the
// order of their paths' numbers: { template: [{path, status}] }.
export function items(runs) {
  const found = {};
  for (const run of runs) {
    if (run.path === run.template) continue;
    (found[run.template] ||= []).push(run);
  }
  const numbers = (p) => (p.match(/\d+/g) || []).map(Number);
  for (const list of Object.values(found)) {
    list.sort((a, b) => {
      const [x, y] = [numbers(a.path), numbers(b.path)];
      for (let i = 0; i < Math.min(x.length, y.length); i += 1) if (x[i] !== y[i]) return x[i] - y[i];
      return x.length - y.length;
    });
  }
  return found;
}
