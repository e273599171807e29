// stepsaga's UI: one page per URL, each pushed live by the API's subscriptions.
import { StrictMode } from 'react';
import { createRoot } from 'react-dom/client';
import { Backups } from './backups.jsx';
import { Catalog } from './catalog.jsx';
import { Login } from './login.jsx';
import { opsPage } from './ops.jsx';
import { WorkPage } from './work.jsx';
import { WorksIndex } from './works.jsx';
import './style.css';

// one page per URL: /login signs in, /?work=ID is a work, /?catalog the sagas,
// /?backups the backups pack's page (linked when the server has it), anything else the
// index
const params = new URLSearchParams(window.location.search);
const opened = params.get('work');
let page = <WorksIndex />;
if (window.location.pathname === '/login') page = <Login />;
else if (opened) page = <WorkPage workId={opened} />;
else if (params.has('catalog')) page = <Catalog />;
else if (params.has('backups')) page = <Backups />;
else page = opsPage(params) ?? page;  // /?workers, /?worker=ID, /?schedules, /?services, /?locks
createRoot(document.getElementById('app')).render(<StrictMode>{page}</StrictMode>);
