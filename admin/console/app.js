// VantageEdge operator console: one ES module, no dependencies, no build step.
//
// Security rules this file keeps (the page is served with a strict CSP, see docs/console.md):
// - The DOM is built with createElement/textContent only; API data never reaches innerHTML,
//   and attributes named on* are never set from strings.
// - No inline styles in markup; styling is classes from app.css (SVG charts use presentation
//   attributes and classes).
// - The admin token lives in sessionStorage only and goes out only as `Authorization: Bearer`
//   to this origin's API.

const TOKEN_KEY = 'vantage-console.token';
const TENANT_KEY = 'vantage-console.tenant';
const API_BASE = new URL('../api/v1/', document.baseURI);
const WAIT = '5s';
const FLEET_REFRESH_MS = 2000;
const HEALTH_REFRESH_MS = 5000;

const VIEWS = [
  { id: 'tenants', label: 'Tenants' },
  { id: 'origins', label: 'Origins', scoped: true },
  { id: 'routes', label: 'Routes', scoped: true },
  { id: 'keys', label: 'API keys', scoped: true },
  { id: 'plans', label: 'Plans', scoped: true },
  { id: 'fleet', label: 'Fleet', superadmin: true },
  { id: 'traffic', label: 'Traffic', scoped: true },
];

const state = {
  token: null,
  me: null, // {role, tenant_id, name}
  tenants: [], // tenants the caller may see
  tenantId: null, // the tenant scoping origins, routes, keys, plans and traffic
  view: 'tenants',
  seq: 0, // bumped on every render; async work of an older render drops its result
  timers: [],
  fleetForbidden: false,
  notice: null,
};

// ---------------------------------------------------------------------------------------------
// DOM helpers

/** Create an element. props: class, testid, data {}, attrs {}, on {}, and plain properties
 *  (type, value, name, ...). children: nodes, strings (as text), arrays, null. */
function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  applyProps(el, props);
  append(el, children);
  return el;
}

const SVG_NS = 'http://www.w3.org/2000/svg';

function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null) continue;
    if (k === 'class') el.setAttribute('class', v);
    else if (k === 'testid') el.setAttribute('data-testid', v);
    else safeSetAttribute(el, k, String(v));
  }
  append(el, children);
  return el;
}

function safeSetAttribute(el, name, value) {
  if (/^on/i.test(name) || /^(style|srcdoc)$/i.test(name)) {
    throw new Error(`refusing to set attribute ${name}`);
  }
  el.setAttribute(name, value);
}

function applyProps(el, props) {
  for (const [k, v] of Object.entries(props || {})) {
    if (v === undefined || v === null) continue;
    switch (k) {
      case 'class':
        el.className = Array.isArray(v) ? v.filter(Boolean).join(' ') : v;
        break;
      case 'testid':
        el.setAttribute('data-testid', v);
        break;
      case 'data':
        for (const [dk, dv] of Object.entries(v)) {
          if (dv !== undefined && dv !== null) el.dataset[dk] = String(dv);
        }
        break;
      case 'attrs':
        for (const [ak, av] of Object.entries(v)) {
          if (av !== undefined && av !== null && av !== false) safeSetAttribute(el, ak, String(av));
        }
        break;
      case 'on':
        for (const [ev, fn] of Object.entries(v)) el.addEventListener(ev, fn);
        break;
      case 'text':
        el.textContent = String(v);
        break;
      default:
        el[k] = v;
    }
  }
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

function $(sel, root = document) {
  return root.querySelector(sel);
}

// ---------------------------------------------------------------------------------------------
// Formatting

function fmtTime(v) {
  if (!v) return '—';
  const d = new Date(v);
  if (Number.isNaN(d.getTime())) return String(v);
  return d.toLocaleString(undefined, { dateStyle: 'short', timeStyle: 'medium' });
}

function fmtAgo(v) {
  if (!v) return '—';
  const t = Date.parse(v);
  if (Number.isNaN(t)) return String(v);
  const s = Math.round((Date.now() - t) / 1000);
  if (s < 2) return 'just now';
  if (s < 90) return `${s} s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  return `${Math.round(s / 3600)} h ago`;
}

function shortId(id) {
  return id ? String(id).slice(0, 8) : '—';
}

function fmtNum(n, digits = 0) {
  if (n === null || n === undefined || Number.isNaN(n)) return '—';
  return Number(n).toLocaleString(undefined, { maximumFractionDigits: digits });
}

function splitList(text) {
  return String(text || '')
    .split(/[\s,]+/)
    .map((x) => x.trim())
    .filter(Boolean);
}

// ---------------------------------------------------------------------------------------------
// The API

class ApiError extends Error {
  constructor(status, body, fallback) {
    const e = body && typeof body === 'object' && body.error ? body.error : null;
    super(e && e.message ? e.message : fallback || `HTTP ${status}`);
    this.status = status;
    this.code = e ? e.code : null;
    this.requestId = e ? e.request_id : null;
    this.fields = e && Array.isArray(e.fields) ? e.fields : [];
  }
}

/** Thrown after a 401 outside sign-in: the console is back at the sign-in screen. */
class SessionEnded extends Error {}

/**
 * Call the admin API. opts: query {}, body (JSON), write (adds ?wait=), token (override),
 * signin (a 401 is returned as an ApiError instead of ending the session).
 * Returns {status, data, headers}.
 */
async function api(method, path, opts = {}) {
  const url = new URL(path.replace(/^\//, ''), API_BASE);
  for (const [k, v] of Object.entries(opts.query || {})) {
    if (v !== undefined && v !== null && v !== '') url.searchParams.set(k, String(v));
  }
  if (opts.write) url.searchParams.set('wait', WAIT);
  const headers = { Accept: 'application/json' };
  const token = opts.token || state.token;
  if (token) headers.Authorization = `Bearer ${token}`;
  let body;
  if (opts.body !== undefined) {
    headers['Content-Type'] = 'application/json';
    body = JSON.stringify(opts.body);
  }
  let resp;
  try {
    resp = await fetch(url, {
      method,
      headers,
      body,
      cache: 'no-store',
      credentials: 'omit',
      redirect: 'error',
    });
  } catch (e) {
    throw new ApiError(0, null, `cannot reach the admin API (${e.message})`);
  }
  let data = null;
  const text = resp.status === 204 ? '' : await resp.text();
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (resp.status === 401 && !opts.signin) {
    signOut('Your session ended: the admin token was refused (401). Sign in again.');
    throw new SessionEnded('signed out');
  }
  if (!resp.ok) throw new ApiError(resp.status, data, `${method} ${url.pathname}: HTTP ${resp.status}`);
  return { status: resp.status, data, headers: resp.headers };
}

/** Every item of a paged list (`{items, next_cursor}`). */
async function listAll(path, query = {}) {
  const items = [];
  let cursor = null;
  for (let page = 0; page < 100; page++) {
    const { data } = await api('GET', path, { query: { ...query, limit: 500, cursor } });
    items.push(...(data.items || []));
    cursor = data.next_cursor;
    if (!cursor) break;
  }
  return items;
}

/** A config write: `?wait=5s`, then a notice saying how many proxies applied it. */
async function write(method, path, body) {
  const r = await api(method, path, { body, write: true });
  const version = r.headers.get('x-config-version');
  const applied = r.headers.get('x-config-applied');
  showNotice(version, applied);
  return r;
}

function showNotice(version, applied) {
  let text = 'Saved';
  let cls = 'notice ok';
  if (version) text += ` as config version ${version}`;
  if (applied) {
    const [done, live] = applied.split('/').map((x) => Number(x));
    text += `, applied by ${applied} proxies`;
    if (Number.isFinite(done) && Number.isFinite(live) && done < live) {
      text += ' (the others have not applied it yet)';
      cls = 'notice warn';
    }
  }
  text += '.';
  state.notice = { text, cls, version, applied };
  renderNotice();
}

function renderNotice() {
  const box = $('#notice');
  if (!box) return;
  clear(box);
  if (!state.notice) {
    box.hidden = true;
    return;
  }
  box.hidden = false;
  box.className = state.notice.cls;
  box.dataset.version = state.notice.version || '';
  box.dataset.applied = state.notice.applied || '';
  append(box, [
    h('span', { testid: 'write-notice-text' }, state.notice.text),
    h(
      'button',
      {
        type: 'button',
        class: 'link',
        testid: 'write-notice-close',
        attrs: { 'aria-label': 'Dismiss' },
        on: {
          click: () => {
            state.notice = null;
            renderNotice();
          },
        },
      },
      '×',
    ),
  ]);
}

// ---------------------------------------------------------------------------------------------
// Forms and field errors

/** A labelled field whose errors appear next to it. `name` is the API path it stands for. */
function field(name, label, control, hint) {
  return h(
    'div',
    { class: 'field', data: { field: name } },
    h('label', { htmlFor: control.id || '' }, label),
    control,
    hint ? h('div', { class: 'hint' }, hint) : null,
    h('div', {
      class: 'field-error',
      hidden: true,
      testid: `field-error-${name}`,
      data: { fieldError: name },
      attrs: { role: 'alert' },
    }),
  );
}

let idCounter = 0;
function input(props) {
  return h('input', { id: `f${++idCounter}`, autocomplete: 'off', ...props });
}
function textarea(props) {
  return h('textarea', { id: `f${++idCounter}`, ...props });
}
function select(props, options) {
  const el = h('select', { id: `f${++idCounter}`, ...props });
  setOptions(el, options);
  return el;
}
function setOptions(sel, options) {
  const keep = sel.value;
  clear(sel);
  for (const o of options) {
    sel.append(h('option', { value: o.value, selected: !!o.selected }, o.label));
  }
  if (options.some((o) => o.value === keep) && !options.some((o) => o.selected)) sel.value = keep;
}

function formErrorBox() {
  return h('div', { class: 'form-error', hidden: true, testid: 'form-error', attrs: { role: 'alert' } });
}

function clearErrors(form) {
  for (const el of form.querySelectorAll('[data-field-error]')) {
    el.textContent = '';
    el.hidden = true;
  }
  for (const el of form.querySelectorAll('[aria-invalid]')) el.removeAttribute('aria-invalid');
  const box = form.querySelector('[data-testid="form-error"]');
  if (box) {
    clear(box);
    box.hidden = true;
  }
}

/** `targets[0].url` → [`targets[0].url`, `targets[0]`, `targets`]. */
function pathCandidates(path) {
  const out = [path];
  let p = path;
  for (;;) {
    const m = p.match(/^(.+?)(\.[^.[\]]+|\[\d+\])$/);
    if (!m) break;
    p = m[1];
    out.push(p);
  }
  return out;
}

/** Show an API error on a form: each field error next to the field it names, the rest and
 *  the message in the form's error box. */
function showErrors(form, err) {
  clearErrors(form);
  if (err instanceof SessionEnded) return;
  const box = form.querySelector('[data-testid="form-error"]');
  let fields = err instanceof ApiError ? err.fields.slice() : [];
  // A 400 names its field only in the message ("targets[0].url: invalid type ...").
  if (err instanceof ApiError && err.status === 400 && fields.length === 0) {
    const m = err.message.match(/^([A-Za-z_][\w.[\]]*): (.+)$/s);
    if (m) fields = [{ path: m[1], message: m[2], fromMessage: true }];
  }
  const unplaced = [];
  let placed = 0;
  for (const f of fields) {
    let target = null;
    for (const cand of pathCandidates(String(f.path || ''))) {
      target = form.querySelector(`[data-field-error="${CSS.escape(cand)}"]`);
      if (target) break;
    }
    if (!target) {
      unplaced.push(f);
      continue;
    }
    placed++;
    const msg = target.textContent ? `${target.textContent}; ${f.message}` : String(f.message);
    target.textContent = msg;
    target.hidden = false;
    const ctl = target.parentElement && target.parentElement.querySelector('input, textarea, select');
    if (ctl) ctl.setAttribute('aria-invalid', 'true');
  }
  if (!box) return;
  const lines = [];
  const head = err instanceof ApiError ? err.message : String(err && err.message ? err.message : err);
  if (!(placed > 0 && fields.length === 1 && fields[0].fromMessage)) lines.push(head);
  for (const f of unplaced) lines.push(`${f.path}: ${f.message}`);
  if (err instanceof ApiError && err.requestId) lines.push(`request id ${err.requestId}`);
  if (lines.length) {
    box.hidden = false;
    for (const l of lines) box.append(h('div', {}, l));
  }
}

function busy(form, on) {
  for (const b of form.querySelectorAll('button')) b.disabled = on;
  form.classList.toggle('busy', on);
}

/** Wire a form: preventDefault, clear errors, run `fn`, show errors. */
function onSubmit(form, fn) {
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    clearErrors(form);
    busy(form, true);
    try {
      await fn();
    } catch (e) {
      showErrors(form, e);
    } finally {
      busy(form, false);
    }
  });
  return form;
}

// ---------------------------------------------------------------------------------------------
// Session

function signOut(message) {
  try {
    sessionStorage.removeItem(TOKEN_KEY);
    sessionStorage.removeItem(TENANT_KEY);
  } catch {
    /* storage unavailable */
  }
  stopTimers();
  state.seq++;
  state.token = null;
  state.me = null;
  state.tenants = [];
  state.tenantId = null;
  state.fleetForbidden = false;
  state.notice = null;
  renderSignIn(message);
}

async function signIn(token, { fromStorage = false } = {}) {
  const { data: me } = await api('GET', '/me', { token, signin: true });
  state.token = token;
  state.me = me;
  state.fleetForbidden = me.role !== 'superadmin';
  try {
    sessionStorage.setItem(TOKEN_KEY, token);
  } catch {
    /* storage unavailable: the token lives only in memory */
  }
  await loadTenants();
  if (!fromStorage || !VIEWS.some((v) => v.id === viewFromHash())) {
    if (location.hash !== '#/tenants') history.replaceState(null, '', '#/tenants');
  }
  renderShell();
  route();
}

async function loadTenants() {
  let tenants = await listAll('/tenants');
  if (state.me && state.me.role !== 'superadmin') {
    // The API already scopes a tenant admin to its tenant; never offer anything else.
    tenants = tenants.filter((t) => t.id === state.me.tenant_id);
  }
  tenants.sort((a, b) => String(a.name).localeCompare(String(b.name)));
  state.tenants = tenants;
  if (state.me && state.me.role !== 'superadmin') {
    state.tenantId = state.me.tenant_id;
  } else {
    let want = state.tenantId;
    if (!want) {
      try {
        want = sessionStorage.getItem(TENANT_KEY);
      } catch {
        want = null;
      }
    }
    state.tenantId = tenants.some((t) => t.id === want) ? want : tenants.length ? tenants[0].id : null;
  }
  rememberTenant();
  renderTenantPicker();
}

function rememberTenant() {
  try {
    if (state.tenantId) sessionStorage.setItem(TENANT_KEY, state.tenantId);
  } catch {
    /* ignore */
  }
}

function tenantById(id) {
  return state.tenants.find((t) => t.id === id) || null;
}

function isSuper() {
  return !!state.me && state.me.role === 'superadmin';
}

// ---------------------------------------------------------------------------------------------
// Screens

function renderSignIn(message) {
  const root = clear($('#app'));
  const tokenInput = input({
    type: 'password',
    name: 'token',
    testid: 'signin-token',
    required: true,
    autocomplete: 'off',
    spellcheck: false,
    placeholder: 'vt_…',
  });
  const err = h('div', {
    class: 'form-error',
    testid: 'signin-error',
    hidden: !message,
    attrs: { role: 'alert' },
    text: message || '',
  });
  const form = h(
    'form',
    { class: 'signin card', testid: 'signin-form', attrs: { novalidate: true } },
    h('h1', {}, 'VantageEdge console'),
    h('p', { class: 'muted' }, 'Sign in with an admin token (superadmin or tenant admin).'),
    h('label', { htmlFor: tokenInput.id }, 'Admin token'),
    tokenInput,
    err,
    h('button', { type: 'submit', class: 'primary', testid: 'signin-submit' }, 'Sign in'),
    h(
      'p',
      { class: 'hint' },
      'Create one with ',
      h('code', {}, 'vantage-admin create-token --role superadmin --name you'),
      '. The token is kept in this tab only (sessionStorage) until you sign out.',
    ),
  );
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const token = tokenInput.value.trim();
    err.hidden = true;
    if (!token) {
      err.textContent = 'Enter an admin token.';
      err.hidden = false;
      return;
    }
    busy(form, true);
    try {
      await signIn(token);
    } catch (e) {
      err.textContent =
        e instanceof ApiError && e.status === 401
          ? 'That token was refused: it is unknown or revoked.'
          : `Cannot sign in: ${e.message}`;
      err.hidden = false;
      busy(form, false);
    }
  });
  root.append(h('div', { class: 'signin-wrap', testid: 'signin' }, form));
  tokenInput.focus();
}

function renderShell() {
  const root = clear($('#app'));
  const nav = h('nav', { class: 'sidenav', testid: 'nav', attrs: { 'aria-label': 'Sections' } });
  for (const v of VIEWS) {
    if (v.superadmin && (!isSuper() || state.fleetForbidden)) continue;
    nav.append(
      h(
        'a',
        {
          href: `#/${v.id}`,
          testid: `nav-${v.id}`,
          data: { view: v.id },
          on: {
            click: (ev) => {
              ev.preventDefault();
              go(v.id);
            },
          },
        },
        v.label,
      ),
    );
  }
  const me = state.me || {};
  const top = h(
    'header',
    { class: 'topbar' },
    h('div', { class: 'brand' }, 'VantageEdge'),
    h('div', { class: 'tenant-picker', id: 'tenant-picker' }),
    h(
      'div',
      { class: 'whoami', testid: 'whoami', data: { role: me.role || '' } },
      h('span', {}, me.name || 'token'),
      ' ',
      h('span', { class: 'badge' }, me.role === 'superadmin' ? 'superadmin' : 'tenant admin'),
    ),
    h('button', { type: 'button', class: 'secondary', testid: 'signout', on: { click: () => signOut() } }, 'Sign out'),
  );
  const main = h(
    'main',
    { class: 'main' },
    h('div', { id: 'notice', class: 'notice', hidden: true, testid: 'write-notice', attrs: { role: 'status' } }),
    h('section', { id: 'view', class: 'view' }),
  );
  root.append(h('div', { class: 'shell' }, top, nav, main));
  renderTenantPicker();
  renderNotice();
}

function renderTenantPicker() {
  const box = $('#tenant-picker');
  if (!box) return;
  clear(box);
  if (!isSuper()) {
    const t = tenantById(state.tenantId);
    box.append(
      h('span', { class: 'muted' }, 'Tenant '),
      h('strong', { testid: 'tenant-fixed', data: { tenantId: state.tenantId } }, t ? t.name : shortId(state.tenantId)),
    );
    return;
  }
  const sel = select(
    {
      testid: 'tenant-select',
      attrs: { 'aria-label': 'Tenant' },
      on: {
        change: () => {
          state.tenantId = sel.value || null;
          rememberTenant();
          route();
        },
      },
    },
    state.tenants.length
      ? state.tenants.map((t) => ({ value: t.id, label: `${t.name} (${t.subdomain})`, selected: t.id === state.tenantId }))
      : [{ value: '', label: 'no tenants yet' }],
  );
  box.append(h('label', { htmlFor: sel.id, class: 'muted' }, 'Tenant'), sel);
}

function viewFromHash() {
  const m = location.hash.match(/^#\/([a-z]+)/);
  return m ? m[1] : 'tenants';
}

function go(view) {
  if (location.hash !== `#/${view}`) history.pushState(null, '', `#/${view}`);
  route();
}

function stopTimers() {
  for (const t of state.timers) clearInterval(t);
  state.timers = [];
}

function every(ms, fn) {
  state.timers.push(setInterval(fn, ms));
}

/** Render the view the hash names (again, when it is the same one). */
function route() {
  if (!state.me) return;
  stopTimers();
  const seq = ++state.seq;
  let id = viewFromHash();
  let v = VIEWS.find((x) => x.id === id);
  if (!v || (v.superadmin && (!isSuper() || state.fleetForbidden))) {
    id = 'tenants';
    v = VIEWS[0];
    history.replaceState(null, '', '#/tenants');
  }
  state.view = id;
  for (const a of document.querySelectorAll('.sidenav a')) {
    a.classList.toggle('active', a.dataset.view === id);
    if (a.dataset.view === id) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  const section = clear($('#view'));
  section.dataset.view = id;
  section.setAttribute('data-testid', `view-${id}`);
  if (v.scoped && !state.tenantId) {
    section.append(
      h('h2', {}, v.label),
      h('p', { class: 'empty', testid: 'no-tenant' }, 'There is no tenant yet: create one on the Tenants page first.'),
    );
    return;
  }
  const ctx = {
    seq,
    section,
    alive: () => seq === state.seq,
  };
  const render = {
    tenants: viewTenants,
    origins: viewOrigins,
    routes: viewRoutes,
    keys: viewKeys,
    plans: viewPlans,
    fleet: viewFleet,
    traffic: viewTraffic,
  }[id];
  Promise.resolve(render(ctx)).catch((e) => {
    if (e instanceof SessionEnded || !ctx.alive()) return;
    section.append(viewError(e));
  });
}

function viewError(e) {
  return h(
    'div',
    { class: 'form-error', testid: 'view-error', attrs: { role: 'alert' } },
    e instanceof ApiError && e.requestId ? `${e.message} (request id ${e.requestId})` : String(e.message || e),
  );
}

function heading(title, ...extra) {
  const t = tenantById(state.tenantId);
  return h(
    'div',
    { class: 'view-head' },
    h('h2', {}, title),
    VIEWS.find((v) => v.id === state.view && v.scoped) && t
      ? h('span', { class: 'muted', testid: 'view-tenant' }, `tenant ${t.name}`)
      : null,
    h('div', { class: 'spacer' }),
    ...extra,
  );
}

function refreshButton(testid, fn) {
  return h('button', { type: 'button', class: 'secondary', testid, on: { click: fn } }, 'Refresh');
}

/** A table with a header row; rows are appended to its tbody. */
function table(testid, columns) {
  const tbody = h('tbody');
  const t = h(
    'table',
    { class: 'grid', testid, data: { state: 'loading' } },
    h('thead', {}, h('tr', {}, columns.map((c) => h('th', { attrs: { scope: 'col' } }, c)))),
    tbody,
  );
  t.tbody = tbody;
  t.columns = columns.length;
  return t;
}

function fillTable(t, rows, emptyText) {
  clear(t.tbody);
  if (!rows.length) {
    t.tbody.append(
      h('tr', { class: 'empty-row' }, h('td', { attrs: { colspan: t.columns }, class: 'empty', testid: `${t.dataset.testid}-empty` }, emptyText)),
    );
  } else {
    for (const r of rows) t.tbody.append(r);
  }
  t.dataset.state = 'ready';
  t.dataset.count = String(rows.length);
}

function card(title, testid, ...children) {
  return h('div', { class: 'card', testid }, h('h3', {}, title), ...children);
}

/** Ask inside a row before `run` (a delete, a revoke): the question, Yes and Cancel. What the
 *  API refuses (a 409 "still in use" names what still uses it) is shown in the row, and
 *  `restore` redraws the row's usual buttons. Test ids: `<testid>-question`, `-confirm`,
 *  `-cancel`, `-error`. */
function confirmInRow(cell, { testid, question, yes, run, restore }) {
  clear(cell);
  const err = h('div', { class: 'field-error', hidden: true, testid: `${testid}-error`, attrs: { role: 'alert' } });
  async function confirmed(ev) {
    ev.target.disabled = true;
    try {
      await run();
    } catch (e) {
      if (e instanceof SessionEnded) return;
      clear(err);
      err.append(h('div', {}, e.message));
      for (const f of e instanceof ApiError ? e.fields : []) err.append(h('div', {}, `${f.path}: ${f.message}`));
      err.hidden = false;
      ev.target.disabled = false;
    }
  }
  cell.append(
    h('span', { class: 'confirm-text', testid: `${testid}-question` }, question),
    h('button', { type: 'button', class: 'danger', testid: `${testid}-confirm`, on: { click: confirmed } }, yes),
    h('button', { type: 'button', class: 'secondary', testid: `${testid}-cancel`, on: { click: restore } }, 'Cancel'),
    err,
  );
}

/** The Edit and Delete buttons of a row (`<testid>-edit`, `<testid>-delete`); Delete asks
 *  first (see confirmInRow, with test ids `<testid>-delete-…`). */
function editDeleteCell(testid, { edit, question, remove }) {
  const cell = h('td', { class: 'row-actions' });
  function idle() {
    clear(cell);
    cell.append(
      h('button', { type: 'button', class: 'secondary', testid: `${testid}-edit`, on: { click: edit } }, 'Edit'),
      h(
        'button',
        {
          type: 'button',
          class: 'danger',
          testid: `${testid}-delete`,
          on: {
            click: () => confirmInRow(cell, { testid: `${testid}-delete`, question, yes: 'Yes, delete', run: remove, restore: idle }),
          },
        },
        'Delete',
      ),
    );
  }
  idle();
  return cell;
}

/** A create form that can also edit one item. `start(item)` fills the form (`fill`) and turns
 *  its card into "Edit …" with "Save changes" and Cancel (`<testid>-cancel-edit`); `stop()`
 *  turns it back into the create form. `item` is the one being edited, or null. */
function editableForm(cardEl, form, { noun, testid, label, fill }) {
  const title = cardEl.querySelector('h3');
  const submit = form.querySelector('button[type="submit"]');
  const createTitle = title.textContent;
  const createLabel = submit.textContent;
  const ed = { item: null };
  const cancel = h('button', { type: 'button', class: 'secondary', testid: `${testid}-cancel-edit`, hidden: true, on: { click: () => ed.stop() } }, 'Cancel');
  submit.after(cancel);
  ed.start = (item) => {
    ed.item = item;
    clearErrors(form);
    form.reset();
    fill(item);
    title.textContent = `Edit ${noun} ${label(item)}`;
    submit.textContent = 'Save changes';
    cancel.hidden = false;
    cardEl.dataset.editing = item.id;
    cardEl.scrollIntoView({ block: 'nearest' });
  };
  ed.stop = () => {
    ed.item = null;
    clearErrors(form);
    form.reset();
    title.textContent = createTitle;
    submit.textContent = createLabel;
    cancel.hidden = true;
    delete cardEl.dataset.editing;
  };
  return ed;
}

// ---------------------------------------------------------------------------------------------
// Tenants

async function viewTenants(ctx) {
  const t = table('tenants-table', ['Name', 'Subdomain', 'Custom hosts', 'Plan', 'Id', 'Created', '']);
  ctx.section.append(heading('Tenants', refreshButton('tenants-refresh', () => route())), t);

  if (isSuper()) {
    const name = input({ name: 'name', testid: 'tenant-name', required: true, placeholder: 'Acme Corp' });
    const sub = input({ name: 'subdomain', testid: 'tenant-subdomain', required: true, placeholder: 'acme' });
    const hosts = textarea({ name: 'custom_hosts', testid: 'tenant-hosts', rows: 2, placeholder: 'api.acme.example' });
    const form = h(
      'form',
      { testid: 'tenant-form', attrs: { novalidate: true } },
      h(
        'div',
        { class: 'row' },
        field('name', 'Name', name),
        field('subdomain', 'Subdomain', sub, 'A lower-case DNS label: <subdomain>.<base domain>.'),
        field('custom_hosts', 'Custom hosts (optional)', hosts, 'One host name per line.'),
      ),
      formErrorBox(),
      h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary', testid: 'tenant-submit' }, 'Create tenant')),
    );
    onSubmit(form, async () => {
      const body = { name: name.value.trim(), subdomain: sub.value.trim() };
      const ch = splitList(hosts.value);
      if (ch.length) body.custom_hosts = ch;
      const { data } = await write('POST', '/tenants', body);
      form.reset();
      state.tenantId = data.id;
      rememberTenant();
      await loadTenants();
      if (ctx.alive()) route();
    });
    ctx.section.append(card('New tenant', 'tenant-card', form));
  }

  await loadTenants();
  if (!ctx.alive()) return;
  fillTable(
    t,
    state.tenants.map((x) =>
      h(
        'tr',
        { testid: 'tenant-row', data: { tenantId: x.id, name: x.name }, class: x.id === state.tenantId ? 'selected' : '' },
        h('td', { testid: 'tenant-row-name' }, x.name),
        h('td', {}, h('code', {}, x.subdomain)),
        h('td', {}, (x.custom_hosts || []).join(', ') || '—'),
        h('td', {}, x.plan_id ? shortId(x.plan_id) : '—'),
        h('td', {}, h('code', { attrs: { title: x.id } }, shortId(x.id))),
        h('td', {}, fmtTime(x.created_at)),
        h(
          'td',
          {},
          h(
            'button',
            {
              type: 'button',
              class: 'link',
              testid: 'tenant-open',
              on: {
                click: () => {
                  state.tenantId = x.id;
                  rememberTenant();
                  renderTenantPicker();
                  go('origins');
                },
              },
            },
            'Origins →',
          ),
        ),
      ),
    ),
    'No tenants yet.',
  );
}

// ---------------------------------------------------------------------------------------------
// Origins

function originLabel(o) {
  if (!o) return '—';
  const urls = (o.targets || []).map((t) => String(t.url).replace(/^http:\/\//, ''));
  if (o.discovery) urls.push('(DNS discovery)');
  return `${urls.join(', ') || 'no targets'} · ${shortId(o.id)}`;
}

const LB = [
  { value: 'round_robin', label: 'round robin' },
  { value: 'weighted', label: 'weighted' },
  { value: 'random', label: 'random' },
  { value: 'least_connections', label: 'least connections' },
];

async function viewOrigins(ctx) {
  const tenantId = state.tenantId;
  const t = table('origins-table', ['Targets', 'Balancing', 'Health check', 'Target health (per proxy)', 'Id', '']);
  const targets = textarea({ name: 'targets', testid: 'origin-targets', rows: 3, required: true, placeholder: '127.0.0.1:9001' });
  const lb = select({ name: 'lb', testid: 'origin-lb' }, LB);
  const hc = input({ name: 'health_check', testid: 'origin-health-path', placeholder: '/healthz' });
  const form = h(
    'form',
    { testid: 'origin-form', attrs: { novalidate: true } },
    h(
      'div',
      { class: 'row' },
      field('targets', 'Targets', targets, 'One host:port per line (http:// is assumed; https://host:port is kept).'),
      field('lb', 'Load balancing', lb),
      field('health_check', 'Health check path (optional)', hc, 'Probed with GET on every target.'),
    ),
    formErrorBox(),
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary', testid: 'origin-submit' }, 'Create origin')),
  );
  const formCard = card('New origin', 'origin-card', form);
  const ed = editableForm(formCard, form, {
    noun: 'origin',
    testid: 'origin',
    label: (o) => shortId(o.id),
    fill: (o) => {
      targets.value = (o.targets || []).map((x) => x.url).join('\n');
      lb.value = o.lb || 'round_robin';
      hc.value = o.health_check ? o.health_check.path || '' : '';
    },
  });
  onSubmit(form, async () => {
    const urls = splitList(targets.value).map((x) => (/^https?:\/\//.test(x) ? x : `http://${x}`));
    if (ed.item) {
      // A merge patch of what the form shows: a target kept by URL keeps its other fields
      // (weight, …), and the health check keeps its interval and thresholds.
      const before = new Map((ed.item.targets || []).map((x) => [x.url, x]));
      const path = hc.value.trim();
      const patch = { lb: lb.value, health_check: path ? { path } : null };
      // An origin found by DNS discovery has no target list to send.
      if (urls.length || !ed.item.discovery) patch.targets = urls.map((url) => before.get(url) || { url });
      await write('PATCH', `/origins/${encodeURIComponent(ed.item.id)}`, patch);
      ed.stop();
    } else {
      const body = { tenant_id: tenantId, targets: urls.map((url) => ({ url })), lb: lb.value };
      if (hc.value.trim()) body.health_check = { path: hc.value.trim() };
      await write('POST', '/origins', body);
      form.reset();
    }
    await load();
  });
  ctx.section.append(
    heading('Origins', refreshButton('origins-refresh', () => route())),
    t,
    h('p', { class: 'hint' }, 'Target health is what each proxy’s active health checks see (healthy/total targets); it refreshes every few seconds.'),
    formCard,
  );

  let origins = [];
  const healthCells = new Map();

  async function loadHealth() {
    let items;
    try {
      ({ data: { items } } = await api('GET', '/pool-health', { query: { tenant_id: tenantId } }));
    } catch (e) {
      if (e instanceof SessionEnded) throw e;
      for (const cell of healthCells.values()) {
        clear(cell).append(h('span', { class: 'muted' }, 'unavailable'));
      }
      return;
    }
    if (!ctx.alive()) return;
    const byOrigin = new Map();
    for (const it of items || []) {
      if (!byOrigin.has(it.origin_id)) byOrigin.set(it.origin_id, []);
      byOrigin.get(it.origin_id).push(it);
    }
    for (const [id, cell] of healthCells) {
      clear(cell);
      const reports = (byOrigin.get(id) || []).sort((a, b) => String(a.proxy).localeCompare(String(b.proxy)));
      cell.dataset.reports = String(reports.length);
      if (!reports.length) {
        cell.append(h('span', { class: 'muted' }, 'no reports'));
        continue;
      }
      for (const r of reports) {
        const cls = r.healthy >= r.total ? 'ok' : r.healthy > 0 ? 'warn' : 'bad';
        cell.append(
          h(
            'span',
            {
              class: `health ${cls}`,
              testid: 'origin-health',
              data: { proxy: r.proxy, healthy: r.healthy, total: r.total },
              attrs: { title: `reported ${fmtAgo(r.reported_at)}` },
            },
            `${r.proxy}: ${r.healthy}/${r.total}`,
          ),
        );
      }
    }
  }

  async function load() {
    origins = await listAll('/origins', { tenant_id: tenantId });
    if (!ctx.alive()) return;
    healthCells.clear();
    fillTable(
      t,
      origins.map((o) => {
        const cell = h('td', { testid: 'origin-health-cell' }, h('span', { class: 'muted' }, '…'));
        healthCells.set(o.id, cell);
        return h(
          'tr',
          { testid: 'origin-row', data: { originId: o.id } },
          h('td', { testid: 'origin-row-targets' }, (o.targets || []).map((x) => h('div', {}, h('code', {}, x.url)))),
          h('td', {}, String(o.lb || 'round_robin').replace(/_/g, ' ')),
          h('td', {}, o.health_check ? h('code', {}, o.health_check.path) : h('span', { class: 'muted' }, 'none')),
          cell,
          h('td', {}, h('code', { attrs: { title: o.id } }, shortId(o.id))),
          editDeleteCell('origin', {
            edit: () => ed.start(o),
            question: `Delete origin ${originLabel(o)}? Routes must not use it any more.`,
            remove: async () => {
              await write('DELETE', `/origins/${encodeURIComponent(o.id)}`);
              if (ed.item && ed.item.id === o.id) ed.stop();
              await load();
            },
          }),
        );
      }),
      'No origins for this tenant yet.',
    );
    await loadHealth();
  }

  await load();
  every(HEALTH_REFRESH_MS, () => {
    if (ctx.alive()) loadHealth().catch(() => {});
  });
}

// ---------------------------------------------------------------------------------------------
// Routes

const METHODS = ['GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'HEAD', 'OPTIONS'];
const AUTH = [
  { value: 'public', label: 'none (public)' },
  { value: 'apikey_required', label: 'API key' },
  { value: 'jwt_required', label: 'JWT' },
  { value: 'jwt_or_apikey', label: 'JWT or API key' },
];

async function viewRoutes(ctx) {
  const tenantId = state.tenantId;
  const t = table('routes-table', ['Path pattern', 'Methods', 'Origin', 'Auth', 'Priority', 'Id', '']);
  const pattern = input({ name: 'path_pattern', testid: 'route-path', required: true, placeholder: '/api/*' });
  const methodBoxes = METHODS.map((m) =>
    h(
      'label',
      { class: 'check' },
      h('input', { type: 'checkbox', value: m, name: 'methods', testid: `route-method-${m}` }),
      m,
    ),
  );
  const methods = h('div', { class: 'checks', id: `f${++idCounter}` }, methodBoxes);
  const origin = select({ name: 'origin_id', testid: 'route-origin', required: true }, [{ value: '', label: 'loading…' }]);
  const auth = select({ name: 'auth', testid: 'route-auth' }, AUTH);
  const form = h(
    'form',
    { testid: 'route-form', attrs: { novalidate: true } },
    h(
      'div',
      { class: 'row' },
      field('path_pattern', 'Path pattern', pattern, '/exact, /prefix/*, /users/:id'),
      field('methods', 'Methods', methods, 'None checked: any method.'),
    ),
    h('div', { class: 'row' }, field('origin_id', 'Origin', origin), field('auth', 'Authentication', auth)),
    formErrorBox(),
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary', testid: 'route-submit' }, 'Create route')),
  );
  const formCard = card('New route', 'route-card', form);
  const ed = editableForm(formCard, form, {
    noun: 'route',
    testid: 'route',
    label: (r) => r.path_pattern,
    fill: (r) => {
      pattern.value = r.path_pattern;
      for (const box of methodBoxes.map((l) => l.querySelector('input'))) box.checked = (r.methods || []).includes(box.value);
      origin.value = r.origin_id;
      auth.value = (r.auth && r.auth.mode) || 'public';
    },
  });
  onSubmit(form, async () => {
    // A merge patch when editing: what the form does not show (rate limits, cache, rewrites,
    // the rest of `auth`) stays as it is.
    const fields = {
      path_pattern: pattern.value.trim(),
      methods: methodBoxes.map((l) => l.querySelector('input')).filter((i) => i.checked).map((i) => i.value),
      origin_id: origin.value,
      auth: { mode: auth.value },
    };
    if (ed.item) {
      await write('PATCH', `/routes/${encodeURIComponent(ed.item.id)}`, fields);
      ed.stop();
    } else {
      await write('POST', '/routes', { tenant_id: tenantId, ...fields });
      form.reset();
    }
    await load();
  });
  ctx.section.append(heading('Routes', refreshButton('routes-refresh', () => route())), t, formCard);

  async function load() {
    const [routes, origins] = await Promise.all([
      listAll('/routes', { tenant_id: tenantId }),
      listAll('/origins', { tenant_id: tenantId }),
    ]);
    if (!ctx.alive()) return;
    const byId = new Map(origins.map((o) => [o.id, o]));
    setOptions(
      origin,
      origins.length
        ? [{ value: '', label: 'choose an origin' }, ...origins.map((o) => ({ value: o.id, label: originLabel(o) }))]
        : [{ value: '', label: 'no origins: create one first' }],
    );
    routes.sort((a, b) => String(a.path_pattern).localeCompare(String(b.path_pattern)));
    fillTable(
      t,
      routes.map((r) =>
        h(
          'tr',
          { testid: 'route-row', data: { routeId: r.id } },
          h('td', { testid: 'route-row-pattern' }, h('code', {}, r.path_pattern)),
          h('td', {}, (r.methods || []).length ? r.methods.join(', ') : 'any'),
          h('td', {}, originLabel(byId.get(r.origin_id)) || shortId(r.origin_id)),
          h('td', { testid: 'route-row-auth' }, (AUTH.find((a) => a.value === ((r.auth && r.auth.mode) || 'public')) || { label: r.auth.mode }).label),
          h('td', {}, String(r.priority || 0)),
          h('td', {}, h('code', { attrs: { title: r.id } }, shortId(r.id))),
          editDeleteCell('route', {
            edit: () => ed.start(r),
            question: `Delete route ${r.path_pattern}? The proxies stop serving it.`,
            remove: async () => {
              await write('DELETE', `/routes/${encodeURIComponent(r.id)}`);
              if (ed.item && ed.item.id === r.id) ed.stop();
              await load();
            },
          }),
        ),
      ),
      'No routes for this tenant yet.',
    );
  }
  await load();
}

// ---------------------------------------------------------------------------------------------
// API keys

async function viewKeys(ctx) {
  const tenantId = state.tenantId;
  const t = table('keys-table', ['Name', 'Prefix', 'Scopes', 'Plan', 'Expires', 'Last used', 'Status', '']);
  const issuedSlot = h('div', { testid: 'issued-slot' });
  const name = input({ name: 'name', testid: 'key-name', required: true, placeholder: 'CI pipeline' });
  const scopes = input({ name: 'scopes', testid: 'key-scopes', placeholder: 'orders:read, orders:write' });
  const expires = input({ name: 'expires_at', type: 'datetime-local', testid: 'key-expires' });
  const plan = select({ name: 'plan_id', testid: 'key-plan' }, [{ value: '', label: 'no plan' }]);
  const form = h(
    'form',
    { testid: 'key-form', attrs: { novalidate: true } },
    h(
      'div',
      { class: 'row' },
      field('name', 'Name', name),
      field('scopes', 'Scopes (optional)', scopes, 'Separated by commas or spaces.'),
      field('expires_at', 'Expires (optional)', expires, 'Your local time.'),
      field('plan_id', 'Plan (optional)', plan),
    ),
    formErrorBox(),
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary', testid: 'key-submit' }, 'Create API key')),
  );
  onSubmit(form, async () => {
    const body = { tenant_id: tenantId, name: name.value.trim(), scopes: splitList(scopes.value) };
    if (expires.value) {
      const d = new Date(expires.value);
      if (Number.isNaN(d.getTime())) {
        throw new ApiError(422, { error: { message: 'the request failed validation', fields: [{ path: 'expires_at', message: 'not a valid time' }] } });
      }
      body.expires_at = d.toISOString().replace(/\.\d{3}Z$/, 'Z');
    }
    if (plan.value) body.plan_id = plan.value;
    const { data } = await write('POST', '/api-keys', body);
    form.reset();
    showIssued(data);
    await load();
  });

  function showIssued(data) {
    clear(issuedSlot);
    if (!data || !data.key) return;
    let key = data.key;
    data.key = undefined; // the box holds the only copy; closing it drops it
    const code = h('code', { class: 'secret', testid: 'issued-key' }, key);
    const copied = h('span', { class: 'muted', testid: 'issued-key-copied', attrs: { role: 'status' } });
    const box = h(
      'div',
      { class: 'issued', testid: 'issued-key-box', attrs: { role: 'alertdialog', 'aria-label': 'New API key' } },
      h('h3', {}, `New API key “${data.name}”`),
      h(
        'p',
        { class: 'warn-text', testid: 'issued-key-warning' },
        'Copy this key now. It will not be shown again: only its hash is stored.',
      ),
      h('div', { class: 'secret-row' }, code),
      h(
        'div',
        { class: 'actions' },
        h(
          'button',
          {
            type: 'button',
            class: 'primary',
            testid: 'issued-key-copy',
            on: {
              click: async () => {
                try {
                  await navigator.clipboard.writeText(key);
                  copied.textContent = 'Copied.';
                } catch {
                  const r = document.createRange();
                  r.selectNodeContents(code);
                  const sel = getSelection();
                  sel.removeAllRanges();
                  sel.addRange(r);
                  copied.textContent = 'Selected: press Ctrl+C to copy.';
                }
              },
            },
          },
          'Copy',
        ),
        h(
          'button',
          {
            type: 'button',
            class: 'secondary',
            testid: 'issued-key-close',
            on: {
              click: () => {
                key = null;
                clear(issuedSlot);
              },
            },
          },
          'I have copied it, close',
        ),
        copied,
      ),
    );
    issuedSlot.append(box);
  }

  ctx.section.append(heading('API keys', refreshButton('keys-refresh', () => route())), issuedSlot, t, card('New API key', 'key-card', form));

  async function load() {
    const [keys, plans] = await Promise.all([
      listAll('/api-keys', { tenant_id: tenantId }),
      listAll('/plans', { tenant_id: tenantId }).catch((e) => {
        if (e instanceof SessionEnded) throw e;
        return [];
      }),
    ]);
    if (!ctx.alive()) return;
    const planName = new Map(plans.map((p) => [p.id, p.name]));
    setOptions(plan, [{ value: '', label: 'no plan' }, ...plans.map((p) => ({ value: p.id, label: p.name }))]);
    keys.sort((a, b) => String(b.created_at).localeCompare(String(a.created_at)));
    fillTable(t, keys.map((k) => keyRow(k, planName)), 'No API keys for this tenant yet.');
  }

  function keyRow(k, planName) {
    const actions = h('td', { class: 'row-actions' });
    const row = h(
      'tr',
      { testid: 'key-row', data: { keyId: k.id, name: k.name, status: k.status }, class: k.status === 'revoked' ? 'revoked' : '' },
      h('td', { testid: 'key-row-name' }, k.name),
      h('td', {}, h('code', {}, `${k.prefix || ''}…`)),
      h('td', {}, (k.scopes || []).join(', ') || '—'),
      h('td', {}, k.plan_id ? planName.get(k.plan_id) || shortId(k.plan_id) : '—'),
      h('td', {}, k.expires_at ? fmtTime(k.expires_at) : 'never'),
      h('td', {}, k.last_used_at ? fmtAgo(k.last_used_at) : 'never'),
      h('td', {}, h('span', { class: `badge ${k.status === 'revoked' ? 'bad' : 'ok'}`, testid: 'key-status' }, k.status)),
      actions,
    );
    function idle() {
      clear(actions);
      if (k.status === 'revoked') return;
      actions.append(
        h('button', { type: 'button', class: 'danger', testid: 'key-revoke', on: { click: confirm } }, 'Revoke'),
      );
    }
    function confirm() {
      confirmInRow(actions, {
        testid: 'key-revoke',
        question: `Revoke “${k.name}”? Requests with it are refused at once.`,
        yes: 'Yes, revoke',
        run: async () => {
          await write('POST', `/api-keys/${encodeURIComponent(k.id)}/revoke`);
          await load();
        },
        restore: idle,
      });
    }
    idle();
    return row;
  }

  await load();
}

// ---------------------------------------------------------------------------------------------
// Plans

function describeLimit(p) {
  const a = p.algorithm || {};
  const subj = p.subject ? p.subject.by + (p.subject.name ? ` ${p.subject.name}` : '') : '?';
  const algo =
    a.type === 'token_bucket'
      ? `${a.rate}/s, burst ${a.burst}`
      : a.type === 'sliding_window'
        ? `${a.limit} per ${a.period_s} s`
        : a.type || '?';
  return `${p.name}: ${algo} by ${subj}${p.mode === 'shadow' ? ' (shadow)' : ''}`;
}

function describeQuota(q) {
  return `${q.name}: ${fmtNum(q.limit)} per ${q.period || '?'}${q.group ? ` (group ${q.group})` : ''}, ${q.overage || 'block'}${q.mode === 'shadow' ? ', shadow' : ''}`;
}

async function viewPlans(ctx) {
  const tenantId = state.tenantId;
  const t = table('plans-table', ['Name', 'Time zone', 'Rate limits', 'Quotas', 'Billing', 'Id']);
  const name = input({ name: 'name', testid: 'plan-name', required: true, placeholder: 'pro' });
  const tz = input({ name: 'time_zone', testid: 'plan-tz', value: 'UTC' });
  const rate = input({ name: 'rate', type: 'number', min: '0', step: 'any', testid: 'plan-rate', placeholder: '50' });
  const burst = input({ name: 'burst', type: 'number', min: '0', step: '1', testid: 'plan-burst', placeholder: '100' });
  const limitBy = select({ name: 'limit_by', testid: 'plan-limit-by' }, [
    { value: 'api_key', label: 'per API key' },
    { value: 'user', label: 'per JWT subject' },
    { value: 'tenant', label: 'whole tenant' },
    { value: 'client_ip', label: 'per client IP' },
  ]);
  const qlimit = input({ name: 'quota_limit', type: 'number', min: '1', step: '1', testid: 'plan-quota-limit', placeholder: '100000' });
  const qperiod = select({ name: 'quota_period', testid: 'plan-quota-period' }, [
    { value: 'month', label: 'per month' },
    { value: 'day', label: 'per day' },
    { value: 'hour', label: 'per hour' },
  ]);
  const qover = select({ name: 'quota_overage', testid: 'plan-quota-overage' }, [
    { value: 'block', label: 'then block (429)' },
    { value: 'allow', label: 'then allow (overage)' },
  ]);
  const rlGroup = h('div', { class: 'inline', id: `f${++idCounter}` }, rate, h('span', {}, 'req/s, burst'), burst, limitBy);
  const qGroup = h('div', { class: 'inline', id: `f${++idCounter}` }, qlimit, qperiod, qover);
  const form = h(
    'form',
    { testid: 'plan-form', attrs: { novalidate: true } },
    h('div', { class: 'row' }, field('name', 'Name', name), field('time_zone', 'Time zone', tz, 'IANA name, e.g. Europe/Berlin.')),
    field('rate_limits', 'Rate limit (optional, token bucket)', rlGroup),
    field('quotas', 'Quota (optional)', qGroup),
    formErrorBox(),
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary', testid: 'plan-submit' }, 'Create plan')),
  );
  onSubmit(form, async () => {
    const planName = name.value.trim();
    const body = { tenant_id: tenantId, name: planName, time_zone: tz.value.trim() || 'UTC' };
    if (rate.value !== '' || burst.value !== '') {
      body.rate_limits = [
        {
          name: `${planName || 'plan'}-rate`,
          algorithm: { type: 'token_bucket', rate: Number(rate.value || 0), burst: Number(burst.value || 0) },
          subject: { by: limitBy.value },
        },
      ];
    }
    if (qlimit.value !== '') {
      body.quotas = [
        { name: `${planName || 'plan'}-${qperiod.value}`, limit: Number(qlimit.value), period: qperiod.value, overage: qover.value },
      ];
    }
    await write('POST', '/plans', body);
    form.reset();
    tz.value = 'UTC';
    await load();
  });
  ctx.section.append(heading('Plans', refreshButton('plans-refresh', () => route())), t, card('New plan', 'plan-card', form));

  async function load() {
    const plans = await listAll('/plans', { tenant_id: tenantId });
    if (!ctx.alive()) return;
    plans.sort((a, b) => String(a.name).localeCompare(String(b.name)));
    fillTable(
      t,
      plans.map((p) =>
        h(
          'tr',
          { testid: 'plan-row', data: { planId: p.id, name: p.name } },
          h('td', { testid: 'plan-row-name' }, p.name),
          h('td', {}, p.time_zone || 'UTC'),
          h('td', {}, (p.rate_limits || []).length ? p.rate_limits.map((r) => h('div', {}, describeLimit(r))) : '—'),
          h('td', {}, (p.quotas || []).length ? p.quotas.map((q) => h('div', {}, describeQuota(q))) : '—'),
          h(
            'td',
            {},
            p.billing
              ? `${p.billing.currency} ${fmtNum(p.billing.base_fee / 100, 2)} / ${p.billing.period || 'month'}`
              : '—',
          ),
          h('td', {}, h('code', { attrs: { title: p.id } }, shortId(p.id))),
        ),
      ),
      'No plans for this tenant yet.',
    );
  }
  await load();
}

// ---------------------------------------------------------------------------------------------
// Fleet

async function viewFleet(ctx) {
  const latest = h('strong', { testid: 'fleet-latest' }, '…');
  const converged = h('strong', { testid: 'fleet-converged' }, '…');
  const updated = h('span', { class: 'muted', testid: 'fleet-updated' });
  const t = table('fleet-table', [
    'Proxy',
    'State',
    'Ready',
    'Config version',
    'Lag',
    'Applied',
    'Last seen',
    'Build',
    'Started',
  ]);
  ctx.section.append(
    heading('Fleet', updated),
    h(
      'div',
      { class: 'stats' },
      h('div', { class: 'stat' }, h('span', { class: 'muted' }, 'Latest version'), latest),
      h('div', { class: 'stat' }, h('span', { class: 'muted' }, 'Converged'), converged),
    ),
    t,
    h('p', { class: 'hint' }, 'Refreshes every 2 seconds while shown. Lag is how far a live proxy is behind the latest version.'),
  );
  let inFlight = false;
  async function load() {
    if (inFlight) return;
    inFlight = true;
    try {
      let data;
      try {
        ({ data } = await api('GET', '/fleet'));
      } catch (e) {
        if (e instanceof ApiError && e.status === 403) {
          state.fleetForbidden = true;
          renderShell();
          go('tenants');
          return;
        }
        throw e;
      }
      if (!ctx.alive()) return;
      latest.textContent = String(data.latest_version);
      ctx.section.dataset.latest = String(data.latest_version);
      converged.textContent = data.converged ? 'yes' : 'no';
      converged.className = data.converged ? 'ok-text' : 'bad-text';
      converged.dataset.converged = String(!!data.converged);
      updated.textContent = `updated ${new Date().toLocaleTimeString()}`;
      const proxies = (data.proxies || []).slice().sort((a, b) => {
        if (a.state !== b.state) return a.state === 'live' ? -1 : 1;
        return String(a.id).localeCompare(String(b.id));
      });
      fillTable(
        t,
        proxies.map((p) =>
          h(
            'tr',
            {
              testid: 'fleet-row',
              class: p.state === 'live' ? '' : 'gone',
              data: { proxyId: p.id, state: p.state, version: p.config_version, lag: p.lag_versions, ready: p.ready },
            },
            h('td', { testid: 'fleet-id' }, h('div', {}, p.id), p.hostname && p.hostname !== p.id ? h('div', { class: 'muted' }, p.hostname) : null),
            h('td', {}, h('span', { class: `badge ${p.state === 'live' ? 'ok' : 'bad'}`, testid: 'fleet-state' }, p.state)),
            h('td', {}, h('span', { class: `badge ${p.ready ? 'ok' : 'warn'}`, testid: 'fleet-ready' }, p.ready ? 'ready' : 'not ready')),
            h('td', { testid: 'fleet-version' }, String(p.config_version)),
            h(
              'td',
              { testid: 'fleet-lag', class: p.lag_versions > 0 ? 'bad-text' : '' },
              p.lag_versions > 0
                ? `${p.lag_versions} version${p.lag_versions === 1 ? '' : 's'}, ${fmtNum(p.lag_seconds, 1)} s`
                : 'none',
            ),
            h('td', {}, fmtAgo(p.applied_at)),
            h('td', {}, fmtAgo(p.last_seen)),
            h('td', {}, p.build_version || '—'),
            h('td', {}, fmtTime(p.started_at)),
          ),
        ),
        'No proxy has reported yet.',
      );
    } finally {
      inFlight = false;
    }
  }
  await load();
  every(FLEET_REFRESH_MS, () => {
    if (ctx.alive()) {
      load().catch((e) => {
        if (!(e instanceof SessionEnded)) updated.textContent = `refresh failed: ${e.message}`;
      });
    }
  });
}

// ---------------------------------------------------------------------------------------------
// Traffic

const STEP_S = 60;
const BUCKETS = 60;

async function viewTraffic(ctx) {
  const tenantId = state.tenantId;
  const grid = h('div', { class: 'charts', testid: 'charts', data: { state: 'loading' } });
  const range = h('span', { class: 'muted', testid: 'traffic-range' });
  ctx.section.append(heading('Traffic', range, refreshButton('traffic-refresh', () => load().catch(report))), grid);
  function report(e) {
    if (e instanceof SessionEnded || !ctx.alive()) return;
    clear(grid).append(viewError(e));
  }

  async function load() {
    const stepMs = STEP_S * 1000;
    const now = Date.now();
    const start = Math.floor(now / stepMs) * stepMs - (BUCKETS - 1) * stepMs;
    const { data } = await api('GET', '/analytics/timeseries', {
      query: {
        tenant_id: tenantId,
        from: new Date(start).toISOString(),
        to: new Date(now).toISOString(),
        step_s: STEP_S,
      },
    });
    if (!ctx.alive()) return;
    const empty = () => ({ requests: 0, server_errors: 0, client_errors: 0, p95_ms: null, cache_hit_ratio: null, limited: 0, has: false });
    const buckets = Array.from({ length: BUCKETS }, empty);
    for (const p of data.points || []) {
      const t = Date.parse(p.t);
      if (Number.isNaN(t)) continue;
      const i = Math.floor((t - start) / stepMs);
      if (i < 0 || i >= BUCKETS) continue;
      const b = buckets[i];
      b.has = true;
      b.requests += Number(p.requests) || 0;
      b.server_errors += Number(p.server_errors) || 0;
      b.client_errors += Number(p.client_errors) || 0;
      b.limited += Number(p.limited) || 0;
      if (p.p95_ms !== null && p.p95_ms !== undefined) b.p95_ms = Math.max(b.p95_ms ?? 0, Number(p.p95_ms));
      if (p.cache_hit_ratio !== null && p.cache_hit_ratio !== undefined) b.cache_hit_ratio = Number(p.cache_hit_ratio);
    }
    const times = buckets.map((_, i) => start + i * stepMs);
    const sum = (k) => buckets.reduce((a, b) => a + b[k], 0);
    const last = (k) => {
      for (let i = BUCKETS - 1; i >= 0; i--) if (buckets[i][k] !== null) return buckets[i][k];
      return null;
    };
    const withData = buckets.filter((b) => b.has).length;
    range.textContent = `${new Date(start).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })} – now, by minute`;
    clear(grid);
    grid.append(
      chart({
        id: 'requests',
        title: 'Requests',
        kind: 'bar',
        series: [{ values: buckets.map((b) => b.requests), cls: 's-requests', label: 'requests' }],
        times,
        points: withData,
        total: sum('requests'),
        value: `${fmtNum(sum('requests'))} in the last hour`,
      }),
      chart({
        id: 'errors',
        title: 'Errors',
        kind: 'bar',
        series: [
          { values: buckets.map((b) => b.server_errors), cls: 's-server', label: '5xx' },
          { values: buckets.map((b) => b.client_errors), cls: 's-client', label: '4xx' },
        ],
        times,
        points: buckets.filter((b) => b.server_errors + b.client_errors > 0).length,
        total: sum('server_errors') + sum('client_errors'),
        extra: { serverTotal: sum('server_errors'), clientTotal: sum('client_errors') },
        value: `5xx ${fmtNum(sum('server_errors'))} · 4xx ${fmtNum(sum('client_errors'))}`,
        legend: true,
      }),
      chart({
        id: 'p95',
        title: 'p95 latency',
        kind: 'line',
        series: [{ values: buckets.map((b) => b.p95_ms), cls: 's-latency', label: 'p95 ms' }],
        times,
        points: buckets.filter((b) => b.p95_ms !== null).length,
        last: last('p95_ms'),
        value: last('p95_ms') === null ? 'no data' : `last ${fmtNum(last('p95_ms'), 1)} ms`,
        unit: ' ms',
      }),
      chart({
        id: 'cache',
        title: 'Cache hit ratio',
        kind: 'line',
        series: [{ values: buckets.map((b) => (b.cache_hit_ratio === null ? null : b.cache_hit_ratio * 100)), cls: 's-cache', label: 'hit %' }],
        times,
        points: buckets.filter((b) => b.cache_hit_ratio !== null).length,
        last: last('cache_hit_ratio'),
        value: last('cache_hit_ratio') === null ? 'no cached routes hit' : `last ${fmtNum(last('cache_hit_ratio') * 100, 1)} %`,
        max: 100,
        unit: ' %',
      }),
      chart({
        id: 'limited',
        title: 'Limit refusals (429)',
        kind: 'bar',
        series: [{ values: buckets.map((b) => b.limited), cls: 's-limited', label: 'refused' }],
        times,
        points: buckets.filter((b) => b.limited > 0).length,
        total: sum('limited'),
        value: `${fmtNum(sum('limited'))} refused`,
      }),
    );
    grid.dataset.state = 'ready';
    grid.dataset.buckets = String(withData);
  }
  await load();
}

/** A small SVG chart of one hour by minute. Bars stack when there are several series. */
function chart(o) {
  const W = 560;
  const H = 150;
  const L = 44;
  const R = 8;
  const T = 10;
  const B = 22;
  const n = o.times.length;
  const pw = (W - L - R) / n;
  let max = o.max || 0;
  if (!o.max) {
    for (let i = 0; i < n; i++) {
      if (o.kind === 'bar') {
        max = Math.max(max, o.series.reduce((a, sr) => a + (sr.values[i] || 0), 0));
      } else {
        for (const sr of o.series) if (sr.values[i] !== null) max = Math.max(max, sr.values[i]);
      }
    }
  }
  if (max <= 0) max = 1;
  const y = (v) => T + (H - T - B) * (1 - v / max);
  const attrs = {
    class: 'chart',
    testid: `chart-${o.id}`,
    viewBox: `0 0 ${W} ${H}`,
    role: 'img',
    'aria-label': `${o.title}: ${o.value}`,
    'data-points': o.points,
    'data-kind': o.kind,
  };
  if (o.total !== undefined) attrs['data-total'] = o.total;
  if (o.last !== undefined) attrs['data-last'] = o.last === null ? '' : o.last;
  for (const [k, v] of Object.entries(o.extra || {})) attrs[`data-${k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`] = v;
  const svg = s('svg', attrs);
  // Grid lines and labels.
  for (const f of [0, 0.5, 1]) {
    const yy = y(max * f);
    svg.append(s('line', { class: 'gridline', x1: L, x2: W - R, y1: yy, y2: yy }));
    svg.append(s('text', { class: 'axis', x: L - 6, y: yy + 4, 'text-anchor': 'end' }, fmtAxis(max * f)));
  }
  const tl = (ms) => new Date(ms).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  svg.append(s('text', { class: 'axis', x: L, y: H - 6, 'text-anchor': 'start' }, tl(o.times[0])));
  svg.append(s('text', { class: 'axis', x: L + (W - L - R) / 2, y: H - 6, 'text-anchor': 'middle' }, tl(o.times[Math.floor(n / 2)])));
  svg.append(s('text', { class: 'axis', x: W - R, y: H - 6, 'text-anchor': 'end' }, tl(o.times[n - 1])));

  if (o.kind === 'bar') {
    for (let i = 0; i < n; i++) {
      let acc = 0;
      for (const sr of o.series) {
        const v = sr.values[i] || 0;
        if (v <= 0) continue;
        const y0 = y(acc);
        const y1 = y(acc + v);
        acc += v;
        svg.append(
          s(
            'rect',
            { class: `bar ${sr.cls}`, x: (L + i * pw + 0.5).toFixed(1), y: y1.toFixed(1), width: Math.max(pw - 1, 1).toFixed(1), height: Math.max(y0 - y1, 1).toFixed(1) },
            s('title', {}, `${tl(o.times[i])} ${sr.label}: ${fmtNum(v)}`),
          ),
        );
      }
    }
  } else {
    for (const sr of o.series) {
      let d = '';
      let pen = false;
      for (let i = 0; i < n; i++) {
        const v = sr.values[i];
        if (v === null || v === undefined) {
          pen = false;
          continue;
        }
        const xx = (L + i * pw + pw / 2).toFixed(1);
        d += `${pen ? 'L' : 'M'}${xx} ${y(v).toFixed(1)} `;
        pen = true;
        svg.append(s('circle', { class: `dot ${sr.cls}`, cx: xx, cy: y(v).toFixed(1), r: 2 }, s('title', {}, `${tl(o.times[i])} ${sr.label}: ${fmtNum(v, 1)}`)));
      }
      if (d) svg.append(s('path', { class: `line ${sr.cls}`, d: d.trim(), fill: 'none' }));
    }
  }
  if (!o.points) {
    svg.append(s('text', { class: 'nodata', x: L + (W - L - R) / 2, y: (H - B) / 2 + 4, 'text-anchor': 'middle' }, 'no data in the last hour'));
  }
  return h(
    'figure',
    { class: 'chart-card', testid: `chart-card-${o.id}` },
    h(
      'figcaption',
      {},
      h('span', { class: 'chart-title' }, o.title),
      h('span', { class: 'chart-value', testid: `chart-${o.id}-value` }, o.value),
    ),
    svg,
    o.legend
      ? h('div', { class: 'legend' }, o.series.map((sr) => h('span', { class: `key ${sr.cls}` }, sr.label)))
      : null,
  );
}

function fmtAxis(v) {
  if (v >= 1e6) return `${fmtNum(v / 1e6, 1)}M`;
  if (v >= 1e4) return `${fmtNum(v / 1e3, 0)}k`;
  if (v >= 10 || v === 0) return fmtNum(v, 0);
  return fmtNum(v, 1);
}

// ---------------------------------------------------------------------------------------------
// Start

window.addEventListener('popstate', () => route());

async function start() {
  let token = null;
  try {
    token = sessionStorage.getItem(TOKEN_KEY);
  } catch {
    token = null;
  }
  if (!token) {
    renderSignIn();
    return;
  }
  try {
    await signIn(token, { fromStorage: true });
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) {
      signOut('Your session ended: the admin token was refused (401). Sign in again.');
    } else {
      signOut(`Cannot reach the admin API: ${e.message}`);
    }
  }
}

start();
