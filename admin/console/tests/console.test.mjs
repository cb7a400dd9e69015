// Browser tests of the operator console (admin/console), run with `node console.test.mjs` by
// the admin's Rust test harness, which starts Postgres, vantage-admin, a vantage-proxy reading
// Postgres and a loopback origin, and passes:
//   CONSOLE_URL    the console, e.g. http://127.0.0.1:41234/console/
//   ROOT_TOKEN     a superadmin token
//   TENANT_TOKEN   a tenant_admin token of the existing tenant `globex` (subdomain globex)
//   PROXY_PORT     the proxy's HTTP port on 127.0.0.1
//   BASE_DOMAIN    tenants are served at <subdomain>.<BASE_DOMAIN> (sent as Host)
//   ORIGIN_PORT    a loopback origin on 127.0.0.1 answering 200 to any path
//   ARTIFACTS_DIR  where screenshots and HTML of failures go
//   CHROMIUM_PATH  the Chromium executable (playwright-core downloads no browser)
// Output is TAP: `ok - <name>` / `not ok - <name>: <error>`; the exit code is 1 when anything
// failed. Waits poll for a state with a deadline (never fixed sleeps).

import { chromium } from 'playwright-core';
import http from 'node:http';
import fs from 'node:fs/promises';
import path from 'node:path';

const REQUIRED = [
  'CONSOLE_URL',
  'ROOT_TOKEN',
  'TENANT_TOKEN',
  'PROXY_PORT',
  'BASE_DOMAIN',
  'ORIGIN_PORT',
  'ARTIFACTS_DIR',
  'CHROMIUM_PATH',
];
const missing = REQUIRED.filter((k) => !process.env[k]);
if (missing.length) {
  console.log(`Bail out! missing environment: ${missing.join(', ')}`);
  process.exit(1);
}
const env = Object.fromEntries(REQUIRED.map((k) => [k, process.env[k]]));
const PROXY_PORT = Number(env.PROXY_PORT);
const API = new URL('../api/v1/', env.CONSOLE_URL.endsWith('/') ? env.CONSOLE_URL : `${env.CONSOLE_URL}/`);
const WAIT_MS = 20_000;

// ---------------------------------------------------------------------------------------------
// Helpers

/** Poll `fn` until it returns a truthy value (returned) or `timeoutMs` passes; the error names
 *  `what` and the last value or exception seen. */
async function until(fn, timeoutMs = WAIT_MS, what = 'condition', intervalMs = 150) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
      last = `last value ${JSON.stringify(v)}`;
    } catch (e) {
      last = `last error: ${String(e && e.message ? e.message : e).split('\n')[0]}`;
    }
    if (Date.now() >= deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (${last})`);
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

function assert(cond, message) {
  if (!cond) throw new Error(message);
}

function slug(name) {
  return name.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '');
}

function digits(n) {
  let s = '';
  while (s.length < n) s += Math.floor(Math.random() * 10);
  return s;
}

/** A request to the proxy from node: GET 127.0.0.1:PROXY_PORT`path` with Host `host`. */
function proxyGet(pathname, host, headers = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: '127.0.0.1', port: PROXY_PORT, path: pathname, method: 'GET', headers: { Host: host, ...headers }, agent: false },
      (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode, body: Buffer.concat(chunks).toString('utf8') }));
        res.on('error', reject);
      },
    );
    req.setTimeout(5000, () => req.destroy(new Error('proxy request timed out after 5 s')));
    req.on('error', reject);
    req.end();
  });
}

/** The admin API from node (for checks the UI must not be trusted with). */
async function adminGet(p, token = env.ROOT_TOKEN) {
  const r = await fetch(new URL(p.replace(/^\//, ''), API), { headers: { Authorization: `Bearer ${token}` } });
  const body = await r.json().catch(() => null);
  if (!r.ok) throw new Error(`GET ${p}: HTTP ${r.status} ${JSON.stringify(body)}`);
  return body;
}

// ---------------------------------------------------------------------------------------------
// Browser

let browser;
let page;
const pageProblems = []; // uncaught page errors and CSP violations

async function saveArtifacts(name) {
  if (!page) return;
  try {
    await fs.mkdir(env.ARTIFACTS_DIR, { recursive: true });
    const base = path.join(env.ARTIFACTS_DIR, slug(name));
    await page.screenshot({ path: `${base}.png`, fullPage: true, timeout: 10_000 });
    await fs.writeFile(`${base}.html`, await page.content());
    console.log(`# artifacts: ${base}.png, ${base}.html`);
  } catch (e) {
    console.log(`# could not save artifacts for ${name}: ${e.message}`);
  }
}

let failed = false;
async function fatal(kind, e) {
  console.log(`not ok - ${kind}: ${e && e.stack ? e.stack.split('\n').slice(0, 3).join(' | ') : e}`);
  await saveArtifacts('uncaught');
  if (browser) await browser.close().catch(() => {});
  process.exit(1);
}
process.on('unhandledRejection', (e) => fatal('unhandled rejection', e));
process.on('uncaughtException', (e) => fatal('uncaught exception', e));

const byTestId = (id) => page.getByTestId(id);

async function textOf(locator) {
  return ((await locator.textContent({ timeout: 2000 })) || '').trim();
}

async function visible(testid) {
  await byTestId(testid).first().waitFor({ state: 'visible', timeout: WAIT_MS });
}

async function nav(view) {
  await byTestId(`nav-${view}`).click();
  await page.locator(`[data-testid="view-${view}"]`).waitFor({ state: 'visible', timeout: WAIT_MS });
}

/** Wait until table `testid` has finished loading (data-state=ready). */
async function tableReady(testid) {
  await page.locator(`[data-testid="${testid}"][data-state="ready"]`).waitFor({ state: 'visible', timeout: WAIT_MS });
}

async function signIn(token) {
  await visible('signin-form');
  await byTestId('signin-token').fill(token);
  await byTestId('signin-submit').click();
}

/** Sign in and wait for the console (not the sign-in form's error) to appear. */
async function signInOk(token) {
  await signIn(token);
  const outcome = await until(
    async () => {
      if ((await byTestId('nav').count()) > 0) return 'ok';
      const err = byTestId('signin-error');
      if ((await err.count()) > 0 && (await err.isVisible())) return `refused: ${await textOf(err)}`;
      return false;
    },
    WAIT_MS,
    'the console after sign in',
  );
  assert(outcome === 'ok', `sign in ${outcome}`);
}

async function pickTenant(id) {
  await until(
    async () => (await page.locator(`[data-testid="tenant-select"] option[value="${id}"]`).count()) > 0,
    WAIT_MS,
    `tenant ${id} in the tenant selector`,
  );
  await byTestId('tenant-select').selectOption(id);
}

/** The version of the last write's notice (X-Config-Version), when the admin sent one. */
async function noticeVersion() {
  if ((await byTestId('write-notice').count()) === 0) return null;
  const v = await byTestId('write-notice').getAttribute('data-version');
  return v ? Number(v) : null;
}

// ---------------------------------------------------------------------------------------------
// Scenarios (in order, sharing one page)

const suffix = digits(6);
const ctx = {
  tenantName: `shop${suffix}`,
  subdomain: `shop${suffix}`,
  keyName: `console-test-${suffix}`,
};
const host = () => `${ctx.subdomain}.${env.BASE_DOMAIN}`;

const scenarios = [
  {
    name: 'a wrong token is refused at sign in',
    async run() {
      await page.goto(env.CONSOLE_URL);
      await signIn(`wrong-token-${suffix}`);
      const err = byTestId('signin-error');
      await err.waitFor({ state: 'visible', timeout: WAIT_MS });
      const msg = await until(async () => textOf(err), WAIT_MS, 'a sign-in error message');
      assert(/refused|unknown|revoked/i.test(msg), `unexpected sign-in error: ${msg}`);
      assert(await byTestId('signin-form').isVisible(), 'the sign-in form is gone');
      assert((await byTestId('nav').count()) === 0, 'the navigation is shown after a refused token');
    },
  },
  {
    name: 'sign in as superadmin',
    async run() {
      await signInOk(env.ROOT_TOKEN);
      await visible('tenants-table');
      await tableReady('tenants-table');
      const role = await byTestId('whoami').getAttribute('data-role');
      assert(role === 'superadmin', `whoami says role ${role}`);
      await visible('nav-fleet');
      await visible('tenant-select');
      const stored = await page.evaluate(() => Object.keys(localStorage).length);
      assert(stored === 0, 'something was written to localStorage');
      ctx.superadmin = true;
    },
  },
  {
    name: 'a bad subdomain gets its field error',
    needs: ['superadmin'],
    async run() {
      await nav('tenants');
      const badName = `bad${suffix}`;
      const form = byTestId('tenant-form');
      await form.getByTestId('tenant-name').fill(badName);
      await form.getByTestId('tenant-subdomain').fill('Not Valid!');
      await form.getByTestId('tenant-submit').click();
      const fe = form.locator('[data-field-error="subdomain"]');
      await fe.waitFor({ state: 'visible', timeout: WAIT_MS });
      const msg = await until(async () => textOf(fe), WAIT_MS, 'the subdomain field error text');
      console.log(`# subdomain error: ${msg}`);
      const nameErr = form.locator('[data-field-error="name"]');
      assert(!(await nameErr.isVisible()), 'an error is shown on the name field too');
      const { items } = await adminGet('/tenants?limit=500');
      assert(!items.some((t) => t.name === badName), 'the refused tenant was created anyway');
      const text = await page.locator('[data-testid="tenants-table"]').innerText();
      assert(!text.includes(badName), 'the refused tenant is listed');
    },
  },
  {
    name: 'create a tenant',
    needs: ['superadmin'],
    async run() {
      const form = byTestId('tenant-form');
      await form.getByTestId('tenant-name').fill(ctx.tenantName);
      await form.getByTestId('tenant-subdomain').fill(ctx.subdomain);
      await form.getByTestId('tenant-submit').click();
      const row = page.locator('[data-testid="tenant-row"]', { hasText: ctx.tenantName });
      await row.first().waitFor({ state: 'visible', timeout: WAIT_MS });
      ctx.tenantId = await row.first().getAttribute('data-tenant-id');
      assert(ctx.tenantId, 'the tenant row has no data-tenant-id');
      await visible('write-notice');
      console.log(`# ${await textOf(byTestId('write-notice-text'))}`);
      const errBox = byTestId('tenant-form').getByTestId('form-error');
      assert(!(await errBox.isVisible()), `the form shows an error: ${await errBox.textContent()}`);
    },
  },
  {
    name: 'create an origin',
    needs: ['tenantId'],
    async run() {
      await pickTenant(ctx.tenantId);
      await nav('origins');
      await tableReady('origins-table');
      const target = `127.0.0.1:${env.ORIGIN_PORT}`;
      const form = byTestId('origin-form');
      await form.getByTestId('origin-targets').fill(target);
      await form.getByTestId('origin-submit').click();
      const row = page.locator('[data-testid="origin-row"]', { hasText: target });
      await row.first().waitFor({ state: 'visible', timeout: WAIT_MS });
      ctx.originId = await row.first().getAttribute('data-origin-id');
      assert(ctx.originId, 'the origin row has no data-origin-id');
      const shown = await textOf(byTestId('view-tenant'));
      assert(shown.includes(ctx.tenantName), `the origins view is for ${shown}`);
    },
  },
  {
    name: 'create a route',
    needs: ['originId'],
    async run() {
      await nav('routes');
      await tableReady('routes-table');
      const form = byTestId('route-form');
      await form.getByTestId('route-path').fill('/hello/*');
      await form.getByTestId('route-method-GET').check();
      await until(
        async () => (await form.locator(`[data-testid="route-origin"] option[value="${ctx.originId}"]`).count()) > 0,
        WAIT_MS,
        'the new origin among the route form options',
      );
      await form.getByTestId('route-origin').selectOption(ctx.originId);
      await form.getByTestId('route-auth').selectOption('apikey_required');
      await form.getByTestId('route-submit').click();
      const row = page.locator('[data-testid="route-row"]', { hasText: '/hello/*' });
      await row.first().waitFor({ state: 'visible', timeout: WAIT_MS });
      ctx.routeId = await row.first().getAttribute('data-route-id');
      const auth = await textOf(row.first().getByTestId('route-row-auth'));
      assert(/api key/i.test(auth), `the route's auth shows ${auth}`);
    },
  },
  {
    name: 'create an API key and see it once',
    needs: ['routeId'],
    async run() {
      await nav('keys');
      await tableReady('keys-table');
      const form = byTestId('key-form');
      await form.getByTestId('key-name').fill(ctx.keyName);
      await form.getByTestId('key-submit').click();
      const issued = byTestId('issued-key');
      await issued.waitFor({ state: 'visible', timeout: WAIT_MS });
      const key = await textOf(issued);
      assert(/^\S{16,}$/.test(key), `the issued key looks wrong: ${JSON.stringify(key)}`);
      const warning = await textOf(byTestId('issued-key-warning'));
      assert(/not be shown again/i.test(warning), `the warning says: ${warning}`);
      await visible('issued-key-copy');
      await page.locator('[data-testid="key-row"]', { hasText: ctx.keyName }).first().waitFor({ state: 'visible', timeout: WAIT_MS });
      ctx.key = key;
      await byTestId('issued-key-close').click();
      await until(async () => (await byTestId('issued-key').count()) === 0, WAIT_MS, 'the issued key box to close');
      const html = await page.content();
      assert(!html.includes(key), 'the key is still in the page after closing its box');
      const row = page.locator('[data-testid="key-row"]', { hasText: ctx.keyName }).first();
      ctx.keyId = await row.getAttribute('data-key-id');
    },
  },
  {
    name: 'the proxy serves the new route',
    needs: ['key'],
    async run() {
      const res = await until(
        async () => {
          const r = await proxyGet('/hello/world', host(), { 'X-API-Key': ctx.key });
          return r.status === 200 ? r : false;
        },
        WAIT_MS,
        `200 from ${host()}/hello/world with the key`,
      );
      assert(res.body.length > 0, 'the origin answered an empty body');
      const anon = await proxyGet('/hello/world', host());
      assert(anon.status === 401, `without the key the proxy answered ${anon.status}, not 401`);
    },
  },
  {
    name: 'the fleet view shows the new version applied',
    needs: ['superadmin'],
    async run() {
      const wrote = await noticeVersion();
      await nav('fleet');
      await tableReady('fleet-table');
      const seen = await until(
        async () => {
          const latest = Number(await textOf(byTestId('fleet-latest')));
          if (!Number.isFinite(latest) || latest <= 0) return false;
          if (wrote !== null && latest < wrote) return false;
          const converged = await byTestId('fleet-converged').getAttribute('data-converged');
          if (converged !== 'true') return false;
          const rows = page.locator(`[data-testid="fleet-row"][data-state="live"][data-version="${latest}"]`);
          if ((await rows.count()) < 1) return false;
          const version = Number(await textOf(rows.first().getByTestId('fleet-version')));
          const state = await textOf(rows.first().getByTestId('fleet-state'));
          return version === latest && state === 'live' ? { latest, rows: await rows.count() } : false;
        },
        WAIT_MS,
        `a live proxy at the latest version${wrote !== null ? ` (>= ${wrote})` : ''}, converged`,
      );
      assert((await textOf(byTestId('fleet-converged'))) === 'yes', 'converged does not say yes');
      console.log(`# fleet: version ${seen.latest}, ${seen.rows} live proxies at it`);
    },
  },
  {
    name: 'the traffic chart has data',
    needs: ['key', 'tenantId'],
    async run() {
      for (let i = 0; i < 5; i++) {
        const r = await proxyGet(`/hello/traffic-${i}`, host(), { 'X-API-Key': ctx.key });
        assert(r.status === 200, `request ${i} through the proxy answered ${r.status}`);
      }
      await pickTenant(ctx.tenantId);
      await nav('traffic');
      const chartEl = byTestId('chart-requests');
      await chartEl.waitFor({ state: 'visible', timeout: WAIT_MS });
      const total = await until(
        async () => {
          const t = Number(await chartEl.getAttribute('data-total'));
          if (t >= 1) return t;
          await byTestId('traffic-refresh').click();
          return false;
        },
        WAIT_MS,
        'chart-requests data-total >= 1',
        1000,
      );
      const points = Number(await chartEl.getAttribute('data-points'));
      assert(points >= 1, `chart-requests has data-total ${total} but data-points ${points}`);
      const value = await textOf(byTestId('chart-requests-value'));
      assert(/\d/.test(value), `the requests chart shows no number: ${value}`);
      for (const id of ['errors', 'p95', 'cache', 'limited']) await visible(`chart-${id}`);
      console.log(`# traffic: ${total} requests in ${points} buckets`);
    },
  },
  {
    name: 'revoke the key',
    needs: ['key', 'keyId'],
    async run() {
      await nav('keys');
      await tableReady('keys-table');
      const row = page.locator(`[data-testid="key-row"][data-key-id="${ctx.keyId}"]`);
      await row.getByTestId('key-revoke').click();
      await row.getByTestId('key-revoke-confirm').click();
      await until(
        async () => (await textOf(page.locator(`[data-testid="key-row"][data-key-id="${ctx.keyId}"]`).getByTestId('key-status'))) === 'revoked',
        WAIT_MS,
        'the key row to show revoked',
      );
      await until(
        async () => (await proxyGet('/hello/world', host(), { 'X-API-Key': ctx.key })).status === 401,
        WAIT_MS,
        'the proxy to answer 401 to the revoked key',
      );
    },
  },
  {
    name: 'edit the route: another path, no key',
    needs: ['routeId', 'tenantId'],
    async run() {
      await nav('routes');
      await tableReady('routes-table');
      const row = () => page.locator(`[data-testid="route-row"][data-route-id="${ctx.routeId}"]`);
      await row().getByTestId('route-edit').click();
      const cardEl = byTestId('route-card');
      await until(async () => (await cardEl.getAttribute('data-editing')) === ctx.routeId, WAIT_MS, 'the route form in edit mode');
      const form = byTestId('route-form');
      assert((await form.getByTestId('route-path').inputValue()) === '/hello/*', 'the form was not filled with the route');
      assert(await form.getByTestId('route-method-GET').isChecked(), 'the route’s GET is not checked in the form');
      assert((await form.getByTestId('route-origin').inputValue()) === ctx.originId, 'the form shows another origin');
      await form.getByTestId('route-path').fill('/hi/*');
      await form.getByTestId('route-auth').selectOption('public');
      await form.getByTestId('route-submit').click();
      await until(async () => (await cardEl.getAttribute('data-editing')) === null, WAIT_MS, 'the route form back to create mode');
      await until(async () => (await textOf(row().getByTestId('route-row-pattern'))) === '/hi/*', WAIT_MS, 'the row to show /hi/*');
      assert((await page.locator('[data-testid="route-row"]').count()) === 1, 'editing added a route instead of changing it');
      await until(async () => (await proxyGet('/hi/there', host())).status === 200, WAIT_MS, 'the proxy to serve /hi/there without a key');
      const old = await proxyGet('/hello/world', host());
      assert(old.status === 404, `the old path answered ${old.status}, not 404`);
    },
  },
  {
    name: 'edit the origin: its balancing',
    needs: ['originId'],
    async run() {
      await nav('origins');
      await tableReady('origins-table');
      const row = () => page.locator(`[data-testid="origin-row"][data-origin-id="${ctx.originId}"]`);
      await row().getByTestId('origin-edit').click();
      const form = byTestId('origin-form');
      const targets = await form.getByTestId('origin-targets').inputValue();
      assert(targets.includes(`127.0.0.1:${env.ORIGIN_PORT}`), `the form's targets are ${JSON.stringify(targets)}`);
      await form.getByTestId('origin-lb').selectOption('random');
      await form.getByTestId('origin-submit').click();
      await until(async () => (await row().innerText()).includes('random'), WAIT_MS, 'the origin row to show random balancing');
      assert((await page.locator('[data-testid="origin-row"]').count()) === 1, 'editing added an origin instead of changing it');
      await until(async () => (await proxyGet('/hi/again', host())).status === 200, WAIT_MS, 'the route served through the edited origin');
    },
  },
  {
    name: 'an origin in use cannot be deleted',
    needs: ['originId'],
    async run() {
      const row = () => page.locator(`[data-testid="origin-row"][data-origin-id="${ctx.originId}"]`);
      await row().getByTestId('origin-delete').click();
      const question = await textOf(row().getByTestId('origin-delete-question'));
      assert(/delete origin/i.test(question), `the question says ${question}`);
      await row().getByTestId('origin-delete-confirm').click();
      const err = row().getByTestId('origin-delete-error');
      await err.waitFor({ state: 'visible', timeout: WAIT_MS });
      const text = await textOf(err);
      assert(/still in use/i.test(text), `the refusal says ${JSON.stringify(text)}`);
      await row().getByTestId('origin-delete-cancel').click();
      await row().getByTestId('origin-delete').waitFor({ state: 'visible', timeout: WAIT_MS });
      const r = await proxyGet('/hi/still', host());
      assert(r.status === 200, `after the refused delete the route answered ${r.status}`);
    },
  },
  {
    name: 'a tenant admin sees only its own tenant',
    async run() {
      if ((await byTestId('signout').count()) > 0) await byTestId('signout').click();
      else await page.goto(env.CONSOLE_URL);
      await visible('signin-form');
      const left = await page.evaluate(() => sessionStorage.length);
      assert(left === 0, 'sign out left something in sessionStorage');
      await signInOk(env.TENANT_TOKEN);
      await visible('tenants-table');
      await tableReady('tenants-table');
      const role = await byTestId('whoami').getAttribute('data-role');
      assert(role === 'tenant_admin', `whoami says role ${role}`);
      const rows = page.locator('[data-testid="tenant-row"]');
      const n = await rows.count();
      const names = [];
      for (let i = 0; i < n; i++) names.push(await rows.nth(i).getAttribute('data-name'));
      assert(n === 1 && String(names[0]).toLowerCase() === 'globex', `the tenants page lists ${JSON.stringify(names)}`);
      assert((await byTestId('nav-fleet').count()) === 0, 'the Fleet nav item is shown to a tenant admin');
      assert((await byTestId('tenant-select').count()) === 0, 'the tenant selector is shown to a tenant admin');
      assert((await byTestId('tenant-form').count()) === 0, 'a tenant admin is offered to create tenants');
      const text = await page.locator('body').innerText();
      assert(!text.includes(ctx.tenantName), `the page text names ${ctx.tenantName}`);
      assert(!(await page.content()).includes(ctx.tenantName), `the page's HTML names ${ctx.tenantName}`);
      await nav('routes');
      await tableReady('routes-table');
      if (ctx.routeId) {
        assert(
          (await page.locator(`[data-testid="route-row"][data-route-id="${ctx.routeId}"]`).count()) === 0,
          'the new tenant’s route is listed to globex’s admin',
        );
      }
      if (ctx.originId) {
        assert(
          (await page.locator(`[data-testid="route-origin"] option[value="${ctx.originId}"]`).count()) === 0,
          'the new tenant’s origin is offered to globex’s admin',
        );
      }
      const routesText = await page.locator('body').innerText();
      assert(!routesText.includes(ctx.tenantName), `the routes page names ${ctx.tenantName}`);
    },
  },
  {
    // A tenant admin chooses names; whoever looks at them must only ever see text.
    name: 'a hostile key name is shown as text and never runs',
    async run() {
      const hostile = `<img src=x onerror="window.__pwned=1">${suffix}`;
      const r = await fetch(new URL('api-keys', API), {
        method: 'POST',
        headers: { Authorization: `Bearer ${env.TENANT_TOKEN}`, 'Content-Type': 'application/json' },
        body: JSON.stringify({ name: hostile }),
      });
      assert(r.status === 201, `creating the key: HTTP ${r.status} ${await r.text()}`);
      await nav('keys');
      await tableReady('keys-table');
      await until(
        async () => (await page.locator('[data-testid="keys-table"]').innerText()).includes(hostile),
        WAIT_MS,
        'the hostile name shown literally in the keys table',
      );
      assert((await page.locator('[data-testid="keys-table"] img').count()) === 0, 'an <img> element made it into the table');
      assert((await page.evaluate(() => window.__pwned)) === undefined, 'the hostile name ran');
    },
  },
  {
    name: 'delete the route, then its origin',
    needs: ['routeId', 'originId', 'tenantId'],
    async run() {
      if ((await byTestId('signout').count()) > 0) await byTestId('signout').click();
      await signInOk(env.ROOT_TOKEN);
      await pickTenant(ctx.tenantId);
      await nav('routes');
      await tableReady('routes-table');
      const routeRow = page.locator(`[data-testid="route-row"][data-route-id="${ctx.routeId}"]`);
      await routeRow.getByTestId('route-delete').click();
      await routeRow.getByTestId('route-delete-confirm').click();
      await until(async () => (await routeRow.count()) === 0, WAIT_MS, 'the route row to go');
      await until(async () => (await proxyGet('/hi/there', host())).status === 404, WAIT_MS, 'the proxy to answer 404 for the deleted route');
      await nav('origins');
      await tableReady('origins-table');
      const originRow = page.locator(`[data-testid="origin-row"][data-origin-id="${ctx.originId}"]`);
      await originRow.getByTestId('origin-delete').click();
      await originRow.getByTestId('origin-delete-confirm').click();
      await until(async () => (await originRow.count()) === 0, WAIT_MS, 'the origin row to go');
      const r = await fetch(new URL(`origins/${ctx.originId}`, API), { headers: { Authorization: `Bearer ${env.ROOT_TOKEN}` } });
      assert(r.status === 404, `GET of the deleted origin answered ${r.status}`);
    },
  },
  {
    name: 'the page raised no script errors or CSP violations',
    async run() {
      assert(pageProblems.length === 0, pageProblems.slice(0, 5).join(' | '));
    },
  },
];

async function main() {
  console.log(`1..${scenarios.length}`);
  browser = await chromium.launch({ executablePath: env.CHROMIUM_PATH, headless: true, args: ['--no-sandbox'] });
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  page = await context.newPage();
  page.setDefaultTimeout(WAIT_MS);
  page.on('pageerror', (e) => pageProblems.push(`page error: ${e.message}`));
  page.on('console', (m) => {
    const t = m.text();
    if (/Content.Security.Policy|Refused to (execute|apply|load|connect)/i.test(t)) pageProblems.push(`CSP: ${t}`);
  });

  for (const sc of scenarios) {
    const lacking = (sc.needs || []).filter((k) => !ctx[k]);
    if (lacking.length) {
      failed = true;
      console.log(`not ok - ${sc.name}: skipped, an earlier scenario did not produce ${lacking.join(', ')}`);
      continue;
    }
    const t0 = Date.now();
    try {
      await sc.run();
      console.log(`ok - ${sc.name} (${Date.now() - t0} ms)`);
    } catch (e) {
      failed = true;
      // Playwright's messages carry a call log with terminal colours: keep it, on one line.
      const msg = String(e && e.message ? e.message : e)
        .replace(/\u001b\[[0-9;]*m/g, '')
        .replace(/\s*\n\s*/g, ' | ')
        .replace(/ \| $/, '');
      console.log(`not ok - ${sc.name}: ${msg}`);
      await saveArtifacts(sc.name);
    }
  }
  await browser.close();
  process.exit(failed ? 1 : 0);
}

main().catch((e) => fatal('main', e));
