// The backups page (/?backups), when the server has the backups pack: its jobs with
// their schedules and next fire times, each job's backups as their manifests say
// (sizes, checksums, times, whether verified), and buttons to back a job up now,
// verify a backup (every checksum recomputed from its target), restore it and roll a
// restore back. Only the pack's GraphQL fields.
import { useEffect, useState } from 'react';
import { request, useConnected } from './api.jsx';
import { byJob, bytes, runLine, shortSum } from './backupsview.js';
import { Nav } from './ops.jsx';
import './ops.css';
import './backups.css';

const JOB = 'name source { name kind } target { name kind } steps schedule timezone nextAt schedulePaused';
const MANIFEST = 'id job target createdAt completedAt size sha256 md5 verified error steps { step kind size sha256 }';
const READ = `{ backupJobs { ${JOB} } backupManifests { ${MANIFEST} } }`;
// WrongState's status is nullable, BackupRun's is not: asked under another name
const RUN = `__typename ... on BackupRun { workId saga status output error stage }
  ... on InvalidInput { message } ... on NotFound { message } ... on WrongState { message state: status }
  ... on Conflict { message }`;
const TRIGGER = `mutation($job: String!) { triggerBackup(job: $job) { ${RUN} } }`;
const VERIFY = `mutation($job: String!, $backup: String!) { verifyBackup(job: $job, backup: $backup) { ${RUN} } }`;
const RESTORE = `mutation($job: String!, $backup: String!, $replace: Boolean!) {
  restoreBackup(job: $job, backup: $backup, replace: $replace) { ${RUN} } }`;
const ROLLBACK = `mutation($id: String!) { rollbackRestore(workId: $id) { ${RUN} } }`;

function when(seconds) {
  return seconds ? new Date(seconds * 1000).toLocaleString() : '';
}

function Said({ said }) {
  if (!said) return null;
  return (
    <span className={said.problem ? 'problem' : 'note'} role={said.problem ? 'alert' : 'status'}>
      {said.problem || said.note}
      {said.workId && <> (<a href={`/?work=${said.workId}`}>work</a>)</>}
    </span>
  );
}

function Sum({ value }) {
  return <code className="sum" title={value || ''}>{shortSum(value)}</code>;
}

function Manifests({ job, rows, onRead }) {
  const [said, setSaid] = useState({});  // backup id -> what its last action answered
  const [replace, setReplace] = useState(false);
  const [restored, setRestored] = useState(null);  // the work id of the last restore done
  const tell = (id, line) => setSaid((now) => ({ ...now, [id]: line }));
  const act = (id, query, variables, field, done, after) => () => {
    tell(id, { note: 'running…' });
    request(query, variables).then((data) => {
      const line = runLine(data[field], done);
      tell(id, line);
      if (after && !line.problem) after(line);
      onRead();
    }, (err) => tell(id, { problem: err.message }));
  };
  const verify = (id) => act(id, VERIFY, { job: job.name, backup: id }, 'verifyBackup',
    (o) => `verified: sha256 ${shortSum(o.sha256)} as its manifest says`);
  const restore = (id) => act(id, RESTORE, { job: job.name, backup: id, replace }, 'restoreBackup',
    () => 'restored', (line) => setRestored(line.workId));
  const rollback = act('rollback', ROLLBACK, { id: restored }, 'rollbackRestore',
    () => 'rolled back: what the restore replaced is back', () => setRestored(null));
  return (
    <section className="manifests" data-job={job.name}>
      <h2>Backups of {job.name} <span className="where">on {job.target.name} ({job.target.kind})</span></h2>
      {!rows.length && <p className="empty">No backup of this job on its target yet.</p>}
      {rows.length > 0 && (
        <p className="restore-options">
          <label><input type="checkbox" checked={replace} onChange={(e) => setReplace(e.target.checked)} />
            {' '}a restore replaces an existing database or directory (it is kept aside for a rollback)</label>
          {restored && <> <button type="button" onClick={rollback}>roll back the restore</button></>}
          <Said said={said.rollback} />
        </p>
      )}
      {rows.length > 0 && (
        <table className="manifests">
          <thead><tr><th>backup</th><th>created</th><th>completed</th><th>size</th><th>sha256</th>
            <th>md5</th><th>steps</th><th>verified</th><th></th></tr></thead>
          <tbody>{rows.map((m) => (
            <tr key={m.id} data-backup={m.id} className={m.verified ? 'verified' : 'unverified'}>
              <td className="id">{m.id}</td>
              {m.error ? <td colSpan="7" className="problem">{m.error}</td> : (
                <>
                  <td>{when(m.createdAt)}</td>
                  <td>{when(m.completedAt)}</td>
                  <td className="size" data-bytes={m.size}>{bytes(m.size)}</td>
                  <td className="sha256"><Sum value={m.sha256} /></td>
                  <td className="md5"><Sum value={m.md5} /></td>
                  <td className="steps">{m.steps.map((s) => `${s.step} ${bytes(s.size)}`).join(' → ')}</td>
                  <td className="verified">{m.verified ? 'yes' : 'no'}</td>
                </>
              )}
              <td className="actions">
                <button type="button" onClick={verify(m.id)}>verify</button>
                <button type="button" onClick={restore(m.id)}>restore</button>
                <Said said={said[m.id]} />
              </td>
            </tr>
          ))}</tbody>
        </table>
      )}
    </section>
  );
}

export function Backups() {
  const [jobs, setJobs] = useState(null);
  const [manifests, setManifests] = useState([]);
  const [problem, setProblem] = useState(null);
  const [said, setSaid] = useState({});  // job name -> what its trigger answered
  const connected = useConnected();
  const read = () => request(READ).then((data) => {
    setJobs(data.backupJobs);
    setManifests(data.backupManifests);
    setProblem(null);
  }, (err) => setProblem(err.message));
  useEffect(() => { if (connected) read(); }, [connected]);
  const trigger = (name) => () => {
    setSaid((now) => ({ ...now, [name]: { note: 'backing up…' } }));
    request(TRIGGER, { job: name }).then((data) => {
      const line = runLine(data.triggerBackup, (o) => `backed up: ${o.id} (${bytes(o.size)})`);
      setSaid((now) => ({ ...now, [name]: line }));
      read();
    }, (err) => setSaid((now) => ({ ...now, [name]: { problem: err.message } })));
  };
  const grouped = byJob(jobs || [], manifests);
  return (
    <main className="ops-page backups">
      <Nav here="backups" connected={connected} />
      <h1>Backups <button type="button" onClick={read}>read again</button></h1>
      {problem && <p className="problem" role="alert">{problem}</p>}
      {jobs && !jobs.length && <p className="empty">The config has no backup job ([backups.jobs]).</p>}
      <table className="jobs">
        <thead><tr><th>job</th><th>source</th><th>target</th><th>steps</th><th>schedule</th>
          <th>next</th><th></th></tr></thead>
        <tbody>{(jobs || []).map((j) => (
          <tr key={j.name} data-job={j.name}>
            <td>{j.name}</td>
            <td>{j.source.name} ({j.source.kind})</td>
            <td>{j.target.name} ({j.target.kind})</td>
            <td className="steps">{j.steps.map((s) => s.kind).join(', ') || 'none'}</td>
            <td className="schedule">{j.schedule ? <><code>{j.schedule}</code> {j.timezone}</> : 'on demand'}</td>
            <td className="next">{j.schedulePaused ? 'paused' : when(j.nextAt)}</td>
            <td className="actions">
              <button type="button" onClick={trigger(j.name)}>back up now</button>
              <Said said={said[j.name]} />
            </td>
          </tr>
        ))}</tbody>
      </table>
      {[...grouped.entries()].map(([name, rows]) => {
        const job = (jobs || []).find((j) => j.name === name);
        return job ? <Manifests key={name} job={job} rows={rows} onRead={read} /> : null;
      })}
    </main>
  );
}
