import { describe, expect, it } from 'vitest';
import {
  appendPoint, applyCheck, applyWorker, columns, loadShare, newestCheck, serviceLayout, stripCells,
} from './opsview.js';

const worker = (id, more = {}) => ({
  workerId: id, running: 0, concurrency: 4, updatedAt: 10, heartbeatAt: 10, ...more,
});

describe('the workers list', () => {
  it('replaces a worker in its place and adds a new one in id order', () => {
    const rows = [worker('a/main'), worker('c/main')];
    const changed = applyWorker(rows, worker('c/main', { running: 3 }));
    expect(changed.map((r) => r.running)).toEqual([0, 3]);
    expect(applyWorker(changed, worker('b/main')).map((r) => r.workerId))
      .toEqual(['a/main', 'b/main', 'c/main']);
  });

  it('shows the share of slots in use, capped at the whole', () => {
    expect(loadShare(worker('a', { running: 1 }))).toBe(0.25);
    expect(loadShare(worker('a', { running: 9 }))).toBe(1);
    expect(loadShare(worker('a', { concurrency: 0 }))).toBe(0);
  });
});

describe('a worker\'s load over time', () => {
  it('grows by a change later than the last point that changed a figure', () => {
    const points = [{ time: 10, running: 0, concurrency: 4 }];
    expect(appendPoint(points, worker('a', { heartbeatAt: 9 }))).toBe(points);  // older
    expect(appendPoint(points, worker('a', { heartbeatAt: 12 }))).toBe(points);  // same figures
    const grown = appendPoint(points, worker('a', { heartbeatAt: 12, running: 2 }));
    expect(grown).toEqual([...points, { time: 12, running: 2, concurrency: 4 }]);
    expect(appendPoint([], worker('a'))).toHaveLength(1);
    expect(columns(grown)).toEqual([[10, 12], [0, 2], [4, 4]]);
  });
});

describe('the services graph', () => {
  const services = [
    { service: 'billing', available: false, dependsOn: ['mailer', 'database'], history: [] },
    { service: 'mailer', available: false, dependsOn: [], history: [] },
    { service: 'database', available: true, dependsOn: [], history: [] },
    { service: 'reports', available: true, dependsOn: ['warehouse'], history: [] },
  ];

  it('draws an edge from a service to each it depends on, unknown ones too', () => {
    const found = serviceLayout(services);
    expect(found.edges.map((e) => `${e.from}>${e.to}`).sort())
      .toEqual(['billing>database', 'billing>mailer', 'reports>warehouse']);
    const byName = Object.fromEntries(found.nodes.map((n) => [n.service, n]));
    expect(byName.warehouse.known).toBe(false);
    expect(byName.billing.available).toBe(false);
    expect(byName.database.available).toBe(true);
    // what a service needs is drawn to its left
    expect(byName.mailer.x).toBeLessThan(byName.billing.x);
  });

  it('gives a check\'s history oldest first, blocked when a dependency failed', () => {
    const cells = stripCells([
      { ok: true, available: false, time: 3 },
      { ok: false, available: false, time: 2 },
      { ok: true, available: true, time: 1 },
    ]);
    expect(cells.map((c) => [c.time, c.state])).toEqual([[1, 'ok'], [2, 'failed'], [3, 'blocked']]);
  });
});

describe('checks pushed live', () => {
  const run = (cursor, ok, available = ok) => ({ cursor, ok, available, detail: '', node: 'n', time: Number(cursor) });
  const services = [
    { service: 'db', available: true, dependsOn: [], history: [run('3', true), run('1', true)] },
    { service: 'vault', available: true, dependsOn: ['db'], history: [run('4', true)] },
  ];

  it('puts a check first in its service\'s history and takes its availability', () => {
    const next = applyCheck(services, { service: 'db', dependsOn: [], run: run('5', false) });
    expect(next[0].history.map((r) => r.cursor)).toEqual(['5', '3', '1']);
    expect(next[0].available).toBe(false);
    expect(next[1]).toBe(services[1]);
    expect(applyCheck(next, { service: 'db', dependsOn: [], run: run('5', false) })).toBe(next);
  });

  it('adds a service first seen in name order, and resumes after the newest check', () => {
    const next = applyCheck(services, { service: 'cache', dependsOn: ['db'], run: run('6', true) });
    expect(next.map((s) => s.service)).toEqual(['cache', 'db', 'vault']);
    expect(newestCheck(next)).toBe('6');
    expect(newestCheck([])).toBe(null);
  });
});
