import { describe, expect, it } from 'vitest';
import { byJob, bytes, lacksField, runLine, shortSum } from './backupsview.js';

describe('whether the server has the backups pack', () => {
  it('reads a missing field from the validation error, and nothing else from others', () => {
    expect(lacksField('Cannot query field "backupJobs" on type "Query".', 'backupJobs')).toBe(true);
    expect(lacksField('Cannot query field "allWorks" on type "Query".', 'backupJobs')).toBe(false);
    expect(lacksField("forbidden: 'viewer' may not read anything (backupJobs)", 'backupJobs'))
      .toBe(false);
    expect(lacksField(undefined, 'backupJobs')).toBe(false);
  });
});

describe('sizes and checksums', () => {
  it('shows bytes in binary units with three figures at most', () => {
    expect(bytes(0)).toBe('0 B');
    expect(bytes(512)).toBe('512 B');
    expect(bytes(1536)).toBe('1.5 KiB');
    expect(bytes(10 * 1024 * 1024)).toBe('10 MiB');
    expect(bytes(123.4 * 1024 * 1024)).toBe('123 MiB');
    expect(bytes(5 * 1024 ** 4)).toBe('5 TiB');
    expect(bytes(null)).toBe('');
  });

  it('shortens a checksum to 12 digits', () => {
    expect(shortSum('0123456789abcdef')).toBe('0123456789ab');
    expect(shortSum(null)).toBe('');
  });
});

describe("a mutation's answer", () => {
  const run = (more) => ({ __typename: 'BackupRun', workId: 'w1', status: 'completed', ...more });

  it('says what a completed run made', () => {
    expect(runLine(run({ output: { id: 'b1' } }), (o) => `made ${o.id}`))
      .toEqual({ note: 'made b1', workId: 'w1' });
  });

  it('names the stage and the error of a failed run, and a typed error by its message', () => {
    expect(runLine(run({ status: 'failed', stage: 'load', error: 'exists' }), () => ''))
      .toEqual({ problem: 'failed at load: exists', workId: 'w1' });
    expect(runLine({ __typename: 'InvalidInput', message: "unknown job 'x'" }, () => ''))
      .toEqual({ problem: "unknown job 'x'" });
    expect(runLine({ __typename: 'WrongState' }, () => '')).toEqual({ problem: 'WrongState' });
    expect(runLine(run({ status: 'compensation_failed', error: 'x' }), () => '').problem)
      .toBe('compensation_failed: x');
  });

  it('links a run that goes on past the wait', () => {
    expect(runLine(run({ status: 'waiting' }), () => 'never'))
      .toEqual({ note: 'waiting: it goes on', workId: 'w1' });
  });
});

describe('manifests by job', () => {
  it('lists every job, each newest first', () => {
    const grouped = byJob([{ name: 'a' }, { name: 'b' }], [
      { id: 1, job: 'a', createdAt: 1 }, { id: 2, job: 'a', createdAt: 3 },
      { id: 3, job: 'c', createdAt: 2 }]);
    expect([...grouped.keys()]).toEqual(['a', 'b', 'c']);
    expect(grouped.get('a').map((m) => m.id)).toEqual([2, 1]);
    expect(grouped.get('b')).toEqual([]);
  });
});
