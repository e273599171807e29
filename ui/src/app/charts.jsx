// Charts over time, drawn by uPlot: one component for every page that charts something
// (the works index's activity and durations, a worker's slots in use).
import { useEffect, useRef } from 'react';
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';

export const COLOURS = { created: '#1c5d99', completed: '#2b7a0b', failed: '#a4161a',
  p95: '#b7791f', avg: '#1c5d99', running: '#1c5d99', concurrency: '#9aa5b1' };

// `data`: uPlot's columns, [times (Unix seconds), ...one array per series]; `series`:
// [{ label, stroke, fill, dash, stepped }]; the y axis from zero.
export function TimeChart({ data, series, label, width = 560, height = 200, unit = '' }) {
  const box = useRef(null);
  const plot = useRef(null);
  const shape = JSON.stringify([series, label, width, height, unit]);
  useEffect(() => {
    const stepped = uPlot.paths.stepped({ align: 1 });
    plot.current = new uPlot({
      width, height,
      scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(1, max)] } },
      series: [{}, ...series.map((s) => ({
        label: s.label, stroke: s.stroke, fill: s.fill, dash: s.dash, width: s.width ?? 2,
        paths: s.stepped ? stepped : undefined, spanGaps: false,
        points: { show: !s.stepped, size: 5 },  // a lone minute shows as a dot
        value: (u, v) => (v == null ? '–' : `${Number(v.toFixed(3))}${unit}`),
      }))],
      axes: [{}, { label }],
    }, data, box.current);
    return () => { plot.current.destroy(); plot.current = null; };
  }, [shape]);  // eslint-disable-line react-hooks/exhaustive-deps
  useEffect(() => { if (plot.current) plot.current.setData(data); }, [data]);
  return <div className="chart" ref={box} data-points={data[0].length} />;
}
