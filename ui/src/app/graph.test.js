import { describe, expect, it } from 'vitest';
import { items, layout, statuses, unwinding } from './graph.js';

const DEMO = [
  { path: '', kind: 'Saga', children: ['reserve', 'pay', 'pack', 'ship'] },
  { path: 'reserve', kind: 'Stage', children: [] },
  { path: 'pay', kind: 'Parallel', children: ['pay/charge', 'pay/book'] },
  { path: 'pay/charge', kind: 'Stage', children: [] },
  { path: 'pay/book', kind: 'Stage', children: [] },
  { path: 'pack', kind: 'Map', children: ['pack/box'] },
  { path: 'pack[*]/box', kind: 'Stage', children: [] },
  { path: 'ship', kind: 'Stage', children: [] },
];

describe('the stage graph', () => {
  it('chains a saga, fans a parallel out and joins it, and enters a map', () => {
    const found = layout(DEMO);
    expect(found.edges.map((e) => `${e.from}>${e.to}`).sort()).toEqual([
      'pack>pack[*]/box', 'pack[*]/box>ship', 'pay/book>pack', 'pay/charge>pack',
      'pay>pay/book', 'pay>pay/charge', 'reserve>pay'].sort());
    expect(found.nodes).toHaveLength(7);
  });

  it('lays stages out left to right in the order they run', () => {
    const x = Object.fromEntries(layout(DEMO).nodes.map((n) => [n.path, n.x]));
    expect(x.reserve < x.pay && x.pay < x['pay/charge'] && x['pay/charge'] < x.pack).toBe(true);
    expect(x['pay/charge']).toBe(x['pay/book']);
  });

  it('folds a map item\'s runs into its template, the most telling status first', () => {
    expect(statuses([
      { template: 'pack[*]/box', status: 'completed' },
      { template: 'pack[*]/box', status: 'failed' },
      { template: 'reserve', status: 'compensated' },
    ])).toEqual({ 'pack[*]/box': 'failed', reserve: 'compensated' });
  });

  it('draws the compensation path from the stage that failed through what was undone, '
    + 'not a retry\'s own compensation', () => {
    const types = [
      ['stage.transaction.started', 'reserve'], ['stage.transaction.failed', 'pay/charge'],
      ['stage.compensation.started', 'pay/charge'], ['stage.retry.scheduled', 'pay/charge'],
      ['stage.failed', 'pay/charge'], ['stage.failed', 'pay'], ['work.compensating', ''],
      ['stage.compensation.started', 'pay/book'], ['stage.compensation.completed', 'pay/book'],
      ['stage.compensation.started', 'pack[1]/box'], ['stage.compensation.started', 'pack[0]/box'],
      ['stage.compensation.started', 'reserve'],
    ].map(([type, path]) => ({ type, path }));
    const template = (p) => p.replace(/\[\d+\]/g, '[*]');
    expect(unwinding(types, template)).toEqual(['pay/charge', 'pay/book', 'pack[*]/box', 'reserve']);
    expect(unwinding(types.slice(0, 6), template)).toEqual([]);  // not compensating yet
  });

  it('lists a template\'s items in the order of their numbers', () => {
    const runs = ['pack[10]/box', 'pack[2]/box', 'pack', 'pack[0]/box'].map((path) => ({
      path, template: path === 'pack' ? 'pack' : 'pack[*]/box', status: 'completed' }));
    expect(items(runs)['pack[*]/box'].map((r) => r.path))
      .toEqual(['pack[0]/box', 'pack[2]/box', 'pack[10]/box']);
    expect(items(runs).pack).toBeUndefined();
  });
});
