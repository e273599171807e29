// A saga's stage graph as SVG: its stages laid out by dagre (graph.js), each coloured
// by its status in a work's runs when given, the compensation path drawn as it unwinds
// (numbered, in order), a template with items (map items, loop iterations) folded, a
// click unfolds them. The catalog draws it bare, a work's page with its runs.
import { useMemo, useState } from 'react';
import { items, layout, statuses, unwinding } from './graph.js';

const CELL = 14;  // px: an unfolded item

export function StageGraph({ stages, runs = [], events = [] }) {
  const shape = useMemo(() => layout(stages), [stages]);
  const [open, setOpen] = useState({});
  const templateOf = useMemo(() => {
    const known = new Map(runs.map((r) => [r.path, r.template]));
    return (path) => known.get(path) ?? path;
  }, [runs]);
  const path = useMemo(() => unwinding(events, templateOf), [events, templateOf]);
  const status = statuses(runs);
  const children = items(runs);
  const at = new Map(shape.nodes.map((n) => [n.path, n]));
  const steps = path.map((p) => at.get(p)).filter(Boolean);
  const unfolded = shape.nodes.filter((n) => open[n.path] && children[n.path]);
  const extra = unfolded.length ? CELL + 6 : 0;
  return (
    <svg className="graph" width={shape.width} height={shape.height + extra + (steps.length > 1 ? 30 : 0)}
      role="img" aria-label="stage graph">
      <defs>
        <marker id="undo" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7"
          orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" /></marker>
      </defs>
      {shape.edges.map((e) => (
        <polyline key={`${e.from}>${e.to}`} points={e.points.map((p) => `${p.x},${p.y}`).join(' ')} />
      ))}
      {steps.slice(1).map((to, i) => {
        const from = steps[i];
        const bend = Math.max(from.y, to.y) + from.height / 2 + 24;
        return (
          <path key={`undo-${from.path}>${to.path}`} className="compensation"
            data-from={from.path} data-to={to.path} markerEnd="url(#undo)"
            d={`M ${from.x} ${from.y + from.height / 2} Q ${(from.x + to.x) / 2} ${bend} ${to.x} ${to.y + to.height / 2}`} />
        );
      })}
      {shape.nodes.map((n) => {
        const many = children[n.path];
        const label = n.kind === 'Stage' ? n.path.split('/').pop() : `${n.path.split('/').pop()} (${n.kind})`;
        const order = path.indexOf(n.path);
        return (
          <g key={n.path} data-stage={n.path} data-status={status[n.path] || 'pending'}
            className={`stage status-${status[n.path] || 'pending'}${many ? ' folds' : ''}`}
            transform={`translate(${n.x - n.width / 2},${n.y - n.height / 2})`}
            onClick={many ? () => setOpen({ ...open, [n.path]: !open[n.path] }) : undefined}>
            <rect width={n.width} height={n.height} rx="5" />
            <text x={n.width / 2} y={n.height / 2 + 4} textAnchor="middle">
              {many ? `${label} ×${many.length} ${open[n.path] ? '▾' : '▸'}` : label}
            </text>
            {order >= 0 && (
              <g className="undo-step" data-step={order + 1}>
                <circle cx={n.width} cy="0" r="8" /><text x={n.width} y="4" textAnchor="middle">{order + 1}</text>
              </g>
            )}
            {many && open[n.path] && (
              <g className="items" transform={`translate(0,${n.height + 4})`}>
                {many.map((run, i) => (
                  <rect key={run.path} data-item={run.path} className={`item status-${run.status}`}
                    x={(i % 8) * (CELL + 2)} y={Math.floor(i / 8) * (CELL + 2)} width={CELL} height={CELL}>
                    <title>{`${run.path}: ${run.status}`}</title>
                  </rect>
                ))}
              </g>
            )}
          </g>
        );
      })}
    </svg>
  );
}

