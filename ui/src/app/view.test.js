import { describe, expect, it } from 'vitest';
import { applyChange, COLUMNS, inView, onGrid, searchFromView, viewFromSearch } from './view.js';

const work = (workId, status = 'running', saga = 'order') => ({ workId, status, saga });

describe('the view in the URL', () => {
  it('reads filters, order and direction, and writes them back the same', () => {
    const view = viewFromSearch('?saga=order,refund&status=failed&order=finished_at&asc=');
    expect(view).toEqual({ saga: ['order', 'refund'], status: ['failed'],
      order: 'FINISHED_AT', descending: false, group: [], reducer: 'count', field: '',
      expression: '', bucket: 0, columns: COLUMNS });
    expect(viewFromSearch(searchFromView(view))).toEqual(view);
  });

  it('keeps a grouping with its reducer and a CEL expression', () => {
    const view = viewFromSearch('?group=saga,status&reducer=p95&expr=work.duration%20*%202');
    expect([view.group, view.reducer, view.expression])
      .toEqual([['saga', 'status'], 'p95', 'work.duration * 2']);
    expect(viewFromSearch(searchFromView(view))).toEqual(view);
    // a reducer the server registered is a word; anything else is not a reducer
    expect(viewFromSearch('?reducer=spread').reducer).toBe('spread');
    expect(viewFromSearch('?reducer=1%3Bdrop').reducer).toBe('count');
  });

  it('keeps a time bucket and the columns shown, dropping unknown ones', () => {
    const view = viewFromSearch('?group=saga&bucket=300&cols=work,status,input');
    expect([view.bucket, view.columns]).toEqual([300, ['work', 'status']]);
    expect(viewFromSearch(searchFromView(view))).toEqual(view);
    expect(viewFromSearch('?bucket=7').bucket).toBe(0);
    expect(searchFromView(viewFromSearch('?cols=nothing'))).toBe('');
  });

  it('falls back to newest first for an unknown order, and writes nothing for the default', () => {
    const view = viewFromSearch('?order=input');
    expect(view.order).toBe('CREATED_AT');
    expect(searchFromView(view)).toBe('');
  });
});

describe('a change of one work', () => {
  const view = viewFromSearch('?status=running,paused');

  it('replaces the row where it is', () => {
    const rows = [work('b'), work('a')];
    expect(applyChange(rows, work('a', 'paused'), view).map((r) => r.status))
      .toEqual(['running', 'paused']);
  });

  it('adds a new work at the top and keeps the list at its length', () => {
    const rows = [work('b'), work('a')];
    expect(applyChange(rows, work('c'), view, 2).map((r) => r.workId)).toEqual(['c', 'b']);
  });

  it('leaves a new work\'s place to the server in another order', () => {
    const byPriority = viewFromSearch('?order=priority');
    const rows = [work('b'), work('a')];
    expect(applyChange(rows, work('c'), byPriority)).toBe(rows);
  });

  it('drops a work that left the view, and ignores one that was never in it', () => {
    const rows = [work('b'), work('a')];
    expect(applyChange(rows, work('a', 'completed'), view).map((r) => r.workId)).toEqual(['b']);
    expect(applyChange(rows, work('z', 'completed'), view)).toBe(rows);
    expect(inView(viewFromSearch('?saga=refund'), work('x'))).toBe(false);
  });
});

describe('time buckets on a grid', () => {
  it('puts each bucket\'s value at its time and fills the empty ones', () => {
    const rows = [{ group: { bucket: 120 }, value: 3 }, { group: { bucket: 240 }, value: 1 }];
    expect(onGrid(rows, 130, 250, 60, 0)).toEqual([[120, 180, 240], [3, 0, 1]]);
    expect(onGrid(rows, 100, 200, 60, null)).toEqual([[60, 120, 180], [null, 3, null]]);
  });

  it('adds the rows of the groups kept in one bucket', () => {
    const rows = [{ group: { bucket: 0, status: 'failed' }, value: 2 },
      { group: { bucket: 0, status: 'compensation_failed' }, value: 1 },
      { group: { bucket: 0, status: 'completed' }, value: 5 }];
    const failed = (r) => r.group.status !== 'completed';
    expect(onGrid(rows, 0, 0, 60, 0, failed)).toEqual([[0], [3]]);
  });
});
