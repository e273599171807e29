// The backups page's logic that lives in the browser, apart from React so vitest can
// check it: whether the server has the pack (its schema has the fields), sizes and
// checksums as a person reads them, a mutation's answer as a line, manifests by job.

// Whether an error from asking `field` says the schema has no such field (a server
// without the pack answers 'Cannot query field "backupJobs" on type "Query".'); any
// other error (forbidden, the server away) says nothing of the schema.
export function lacksField(message, field) {
  return new RegExp(`Cannot query field ["']${field}["']`).test(String(message || ''));
}

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];

// A size in bytes as a person reads it: 512 B, 1.5 KiB, 23 MiB (three figures at most).
export function bytes(n) {
  if (n === null || n === undefined || Number.isNaN(Number(n))) return '';
  let value = Number(n);
  let unit = 0;
  while (value >= 1024 && unit < UNITS.length - 1) { value /= 1024; unit += 1; }
  if (unit === 0) return `${value} B`;
  const shown = value >= 100 ? value.toFixed(0) : value >= 10 ? value.toFixed(1) : value.toFixed(2);
  return `${shown.replace(/\.?0+$/, '')} ${UNITS[unit]}`;
}

// The first 12 hex digits of a checksum (the page shows the whole one on hover).
export function shortSum(hex) {
  return hex ? hex.slice(0, 12) : '';
}

const ENDED_BADLY = ['failed', 'compensation_failed', 'cancelled'];

// What the page says about a mutation's answer (a BackupRun or a typed error):
// { problem } when it failed, { note, workId } when it completed (`done` of its output)
// or goes on past the mutation's wait.
export function runLine(result, done) {
  if (!result) return { problem: 'no answer' };
  if (result.__typename !== 'BackupRun') return { problem: result.message || result.__typename };
  if (result.status !== 'completed' && !ENDED_BADLY.includes(result.status)) {
    return { note: `${result.status}: it goes on`, workId: result.workId };
  }
  if (result.status !== 'completed') {
    const where = result.stage ? ` at ${result.stage}` : '';
    return { problem: `${result.status}${where}: ${result.error || 'no error recorded'}`,
      workId: result.workId };
  }
  return { note: done(result.output || {}), workId: result.workId };
}

// The manifests grouped by job, each newest first, every job of `jobs` present.
export function byJob(jobs, manifests) {
  const found = new Map(jobs.map((j) => [j.name, []]));
  for (const m of manifests) {
    if (!found.has(m.job)) found.set(m.job, []);
    found.get(m.job).push(m);
  }
  for (const list of found.values()) list.sort((a, b) => (b.createdAt || 0) - (a.createdAt || 0));
  return found;
}
