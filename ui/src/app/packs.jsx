// The pages of the domain packs a server may have loaded (--app): a page is linked only
// when the server's schema has its fields. Introspection is off on a production server,
// so the page's own query is asked once: a schema without the field says so in its
// validation error. Linked only when the answer is rows: a client refused them
// (forbidden) or a server away is not sent to a page it cannot read.
import { useEffect, useState } from 'react';
import { request } from './api.jsx';
import { lacksField } from './backupsview.js';

const probes = new Map();  // field -> promise of true (present), false (absent), null (unknown)

export function hasField(field) {
  if (!probes.has(field)) {
    probes.set(field, request(`{ ${field} { __typename } }`).then(() => true, (err) => {
      if (lacksField(err.message, field)) return false;
      probes.delete(field);  // unknown (refused, or the connection lost): asked again later
      return null;
    }));
  }
  return probes.get(field);
}

// Whether the server has `field`: undefined while asking, then true, false or null.
export function useHasField(field) {
  const [has, setHas] = useState(undefined);
  useEffect(() => {
    let live = true;
    hasField(field).then((found) => live && setHas(found));
    return () => { live = false; };
  }, [field]);
  return has;
}

// The links to the packs' pages this server has and this client may read ("backups"
// for the backups pack);
// `data-packs` says once the server has been asked.
export function PackLinks({ here }) {
  const backups = useHasField('backupJobs');
  return (
    <span className="packs" data-packs={backups === undefined ? 'asking' : 'known'}>
      {backups === true && (
        <a href="/?backups" aria-current={here === 'backups' ? 'page' : undefined}>backups</a>
      )}
    </span>
  );
}
