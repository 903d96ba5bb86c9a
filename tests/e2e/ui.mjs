// End-to-end test of the web page in headless Debian Chromium, driven by
// playwright-core (which never downloads a browser of its own).
//
//   node tests/e2e/ui.mjs <base-url> <admin-password> <artifacts-dir>
//
// Run by tests/web_ui.rs against a real tollgate on 127.0.0.1. Each entry of
// STEPS is one thing a person does; to add one, append
// `step('what it checks', async (t) => { … })` in the right place. `t.page` is
// the signed-in admin's tab, `t.shot(name)` saves a screenshot, `t.api(…)`
// calls the JSON API directly, `t.go('#/keys')` opens a page.

import { chromium } from 'playwright-core';
import { mkdirSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import assert from 'node:assert/strict';

const [base, adminPassword, artifacts] = process.argv.slice(2);
if (!base || !adminPassword || !artifacts) {
  console.error('usage: node ui.mjs <base-url> <admin-password> <artifacts-dir>');
  process.exit(2);
}
mkdirSync(artifacts, { recursive: true });
for (const f of readdirSync(artifacts)) if (f.startsWith('FAILED-')) rmSync(join(artifacts, f));

const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const DESKTOP = { width: 1280, height: 860 };
const PHONE = { width: 390, height: 844 };
const STEP_TIMEOUT_MS = 30_000;
const run = Date.now().toString(36);
const USER = `e2e-${run}`;
const KEY = `e2e-key-${run}`;

// ------------------------------------------------------------------ harness

const STEPS = [];
const step = (name, fn) => STEPS.push({ name, fn });

async function apiCall(method, path, body, token) {
  const headers = { Accept: 'application/json' };
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const r = await fetch(base + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await r.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch { json = text; }
  return { status: r.status, body: json };
}

async function adminToken() {
  const r = await apiCall('POST', '/auth/login', { username: 'admin', password: adminPassword });
  assert.equal(r.status, 200, `admin login via API: ${JSON.stringify(r.body)}`);
  return r.body.access_token;
}

/** A fresh tab of a given size, with uncaught page errors collected. */
async function newTab(browser, viewport) {
  const context = await browser.newContext({ viewport, baseURL: base });
  await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: base }).catch(() => {});
  const page = await context.newPage();
  page.setDefaultTimeout(10_000);
  page.errors = [];
  page.on('pageerror', (e) => page.errors.push(String(e)));
  return page;
}

function passwordForm(page) {
  return page.getByRole('form', { name: 'Sign in with password' });
}

async function signIn(page, username, password) {
  await page.goto('/ui/');
  const form = passwordForm(page);
  await form.getByLabel('Username').fill(username);
  await form.getByLabel('Password').fill(password);
  await form.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('navigation', { name: 'Main' }).waitFor();
}

/** Waits until no loading indicator is left in the page. */
async function settled(page) {
  await page.waitForFunction(() => !document.querySelector('.state.loading'), null, { timeout: 10_000 });
}

function context(browser, page) {
  return {
    browser,
    page,
    api: apiCall,
    token: null,
    async go(hash, heading) {
      // A full load every time (sessionStorage survives it), so each page
      // is also checked from a cold start.
      await page.goto('about:blank');
      await page.goto(`/ui/${hash}`);
      if (heading) await page.getByRole('heading', { level: 1, name: heading }).waitFor();
      await settled(page);
    },
    async shot(name, p = page) {
      const file = join(artifacts, `${name}.png`);
      await p.screenshot({ path: file, fullPage: true });
      console.log(`    screenshot ${file}`);
    },
  };
}

// ------------------------------------------------------------------ steps

step('sign-in page renders, registration off is explained', async (t) => {
  const { page } = t;
  await page.goto('/ui/');
  await page.getByRole('heading', { name: 'Sign in to tollgate' }).waitFor();
  await page.getByRole('button', { name: 'Create an account' }).click();
  const reg = page.getByRole('form', { name: 'Create an account' });
  await reg.getByLabel('Username').fill(`self-${run}`);
  await reg.getByLabel('Password').fill('a-long-password');
  await reg.getByRole('button', { name: 'Create account' }).click();
  await reg.getByText('Self-service sign-up is turned off').waitFor();
  // Each enabled OAuth provider gets a button to its login route.
  const sso = page.getByRole('link', { name: 'Continue with Corp SSO' });
  await sso.waitFor();
  assert.equal(await sso.getAttribute('href'), '/auth/corp/login');
  await t.shot('01-sign-in');
});

step('a wrong password shows the error', async (t) => {
  const { page } = t;
  const form = passwordForm(page);
  await form.getByLabel('Username').fill('admin');
  await form.getByLabel('Password').fill('not-the-password');
  await form.getByRole('button', { name: 'Sign in' }).click();
  await page.getByText('That username and password do not match.').waitFor();
});

step('admin signs in with the password', async (t) => {
  await signIn(t.page, 'admin', adminPassword);
  await t.page.getByRole('heading', { level: 1, name: 'My usage' }).waitFor();
  const token = await t.page.evaluate(() => sessionStorage.getItem('tollgate.token'));
  assert.ok(token, 'the JWT is kept in sessionStorage');
  t.token = token;
  await t.page.getByRole('link', { name: 'Users' }).waitFor();
});

step('a metered call shows in the usage chart, the table and the request log', async (t) => {
  const admin = await adminToken();
  const key = await t.api('POST', '/api/keys', { name: `metered-${run}` }, admin);
  assert.equal(key.status, 201, JSON.stringify(key.body));
  // The mock upstream reports 120 prompt + 80 completion tokens for this model name.
  const r = await fetch(`${base}/v1/chat/completions`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${key.body.api_key}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ model: 'aiml/usage:120:80', messages: [{ role: 'user', content: 'hello' }] }),
  });
  assert.equal(r.status, 200, await r.clone().text());
  const requestId = r.headers.get('x-request-id');
  const answer = await r.json();
  assert.equal(answer._usage_info.tokens_used, 200);

  await t.go('#/usage', 'My usage');
  await t.page.locator('.card canvas').first().waitFor();
  const table = t.page.getByRole('table', { name: 'Usage by provider and model' });
  await table.getByText('aiml/usage:120:80').waitFor();
  const row = table.locator('tr', { hasText: 'aiml/usage:120:80' });
  assert.match(await row.innerText(), /\b200\b/, 'the row shows the 200 tokens the upstream reported');
  assert.ok(!/\bnull\b|undefined/.test(await t.page.locator('main').innerText()), 'no null or undefined shown');
  await t.shot('02a-usage-after-a-call');

  await t.go('#/admin/requests', 'Request log');
  await t.page.getByText(requestId).waitFor();
  await t.shot('10a-request-log-after-a-call');
});

step('usage page renders (even while metering endpoints are missing)', async (t) => {
  await t.go('#/usage', 'My usage');
  await t.page.getByRole('heading', { name: 'Plan and balance' }).waitFor();
  await t.page.getByRole('heading', { name: 'Tokens and cost per day' }).waitFor();
  // Either data, an empty state or a clear "not available" state; never a blank card.
  const states = await t.page.locator('.card .state, .card canvas, .card table').count();
  assert.ok(states >= 2, 'each usage card shows data or a state');
  await t.shot('02-usage');
});

step('admin creates a user on the Users page', async (t) => {
  const { page } = t;
  await t.go('#/admin/users', 'Users');
  await page.getByRole('button', { name: 'Add user' }).click();
  const form = page.getByRole('form', { name: 'Add a user' });
  await form.getByLabel('Username').fill(USER);
  await form.getByLabel('Password').fill('e2e-password-123');
  await form.getByLabel('Email (optional)').fill(`${USER}@example.test`);
  await form.getByRole('button', { name: 'Create user' }).click();
  await page.getByRole('cell', { name: USER }).first().waitFor();
  const r = await t.api('GET', `/admin/users?q=${USER}`, undefined, t.token);
  assert.equal(r.body.data.length, 1);
  assert.equal(r.body.data[0].plan, 'free');
});

step("admin changes that user's plan in the page", async (t) => {
  const { page } = t;
  await page.getByLabel(`Plan of ${USER}`).selectOption('pro');
  await page.getByText(`${USER}: plan is now pro.`).waitFor();
  const r = await t.api('GET', `/admin/users?q=${USER}`, undefined, t.token);
  assert.equal(r.body.data[0].plan, 'pro', 'the plan change reached the server');
  await page.getByLabel('Search users').fill(USER);
  await page.getByRole('button', { name: 'Search', exact: true }).click();
  await page.waitForFunction((u) => document.querySelectorAll('tbody tr').length === 1 && document.querySelector('tbody').textContent.includes(u), USER);
  assert.equal(await page.getByLabel(`Plan of ${USER}`).inputValue(), 'pro');
  await page.getByLabel('Search users').fill('');
  await page.getByRole('button', { name: 'Search', exact: true }).click();
  await page.getByRole('cell', { name: 'admin', exact: true }).first().waitFor();
  await t.shot('03-admin-users');
});

step("admin tops up and deducts a user's credit; the history shows both", async (t) => {
  const { page } = t;
  await page.getByLabel('Search users').fill(USER);
  await page.waitForFunction((u) => document.querySelectorAll('tbody tr').length === 1 && document.querySelector('tbody').textContent.includes(u), USER);
  await page.getByRole('button', { name: `Credit of ${USER}` }).click();
  const dlg = page.getByRole('dialog', { name: `Credit of ${USER}` });
  await dlg.getByText('No credit entries yet.').waitFor();
  await dlg.getByLabel('Amount (USD)').fill('25');
  await dlg.getByLabel('Note (optional)').fill('welcome credit');
  await dlg.getByRole('button', { name: 'Add entry' }).click();
  await dlg.getByText('Added $25.00. Credit is now $25.00.').waitFor();
  await dlg.getByRole('cell', { name: 'welcome credit' }).waitFor();
  await dlg.getByLabel('Amount (USD)').fill('-2.5');
  await dlg.getByLabel('Note (optional)').fill('correction');
  await dlg.getByRole('button', { name: 'Add entry' }).click();
  await dlg.getByText('Deducted $2.50. Credit is now $22.50.').waitFor();
  await dlg.getByRole('cell', { name: 'correction' }).waitFor();
  // More than the credit holds is refused, saying why; nothing is added.
  await dlg.getByLabel('Amount (USD)').fill('-100');
  await dlg.getByRole('button', { name: 'Add entry' }).click();
  await dlg.getByText('would take it below zero').waitFor();
  const rows = dlg.locator('tbody tr');
  assert.equal(await rows.count(), 2, 'two entries in the history');
  assert.match(await rows.first().innerText(), /-\$2\.50[\s\S]*correction[\s\S]*admin/, 'newest first, with the author');
  assert.equal(await dlg.locator('.stat dd').innerText(), '$22.50');
  await t.shot('03b-admin-credit');
  const users = await t.api('GET', `/admin/users?q=${USER}`, undefined, t.token);
  const ledger = await t.api('GET', `/admin/users/${users.body.data[0].id}/credits`, undefined, t.token);
  assert.equal(ledger.body.credit_usd, 22.5, JSON.stringify(ledger.body));
  assert.deepEqual(ledger.body.data.map((e) => [e.amount_usd, e.note, e.created_by]), [[-2.5, 'correction', 'admin'], [25, 'welcome credit', 'admin']]);
  await dlg.getByRole('button', { name: 'Close' }).click();
  await dlg.waitFor({ state: 'detached' });
  await page.getByLabel('Search users').fill('');
});

step('the user sees their credit and its history on "My usage"', async (t) => {
  const tab = await newTab(t.browser, DESKTOP);
  await signIn(tab, USER, 'e2e-password-123');
  await tab.getByRole('heading', { level: 1, name: 'My usage' }).waitFor();
  await settled(tab);
  const card = tab.locator('.card', { has: tab.getByRole('heading', { name: 'Prepaid credit' }) });
  await card.getByRole('cell', { name: 'welcome credit' }).waitFor();
  await card.getByRole('cell', { name: 'correction' }).waitFor();
  assert.match(await card.locator('.stat').innerText(), /Credit left\s+\$22\.50/i);
  assert.ok(!/\bnull\b|undefined|NaN/.test(await tab.locator('main').innerText()), 'no null, undefined or NaN shown');
  await t.shot('02b-user-credit', tab);
  assert.deepEqual(tab.errors, []);
  await tab.context().close();
});

step('the users list pages: 100 at a time, newest first, "Show more users" for the rest', async (t) => {
  const { page } = t;
  const made = await Promise.all(Array.from({ length: 100 }, (_, i) => t.api('POST', '/admin/users',
    { username: `pager${String(i).padStart(3, '0')}`, password: 'pager-password-1' }, t.token)));
  assert.ok(made.every((r) => r.status === 201), 'the users were created');
  await t.go('#/admin/users', 'Users');
  await page.getByRole('cell', { name: 'pager099', exact: true }).waitFor();
  assert.equal(await page.locator('tbody tr').count(), 100, 'one page of 100');
  assert.equal(await page.getByRole('cell', { name: 'admin', exact: true }).count(), 0, 'the oldest user is on the next page');
  await page.getByRole('button', { name: 'Show more users' }).click();
  await page.getByRole('cell', { name: 'admin', exact: true }).first().waitFor();
  assert.ok(await page.getByRole('button', { name: 'Show more users' }).isHidden(), 'no page after the last');
  await page.getByLabel('Search users').fill('pager00');
  await page.waitForFunction(() => document.querySelectorAll('tbody tr').length === 10);
  await page.getByLabel('Search users').fill('');
});

step('user creates a key: the secret is shown once, with a copy button', async (t) => {
  const { page } = t;
  await t.go('#/keys', 'API keys');
  await page.getByRole('button', { name: 'Create key' }).click();
  const form = page.getByRole('form', { name: 'Create an API key' });
  await form.getByLabel('Name').fill(KEY);
  await form.getByLabel('Description (optional)').fill('made by the browser test');
  await form.getByLabel('Monthly token limit (optional)').fill('5000');
  await form.getByLabel('Monthly USD limit (optional)').fill('2.5');
  await form.getByRole('button', { name: 'Create key' }).click();
  const secretBox = page.getByLabel('Your new API key');
  await secretBox.waitFor();
  const secret = await secretBox.inputValue();
  assert.match(secret, /^sk_live_[0-9A-Za-z]{43,}$/);
  await page.getByRole('button', { name: 'Copy API key' }).waitFor();
  const pageText = await page.locator('.secret-card').innerText();
  assert.ok(pageText.includes(`${base}/v1`) || (await page.locator('.secret-card code').first().innerText()).includes('/v1'), 'base URL shown');
  await page.getByText('curl', { exact: true }).click();
  assert.ok((await page.locator('.snippet pre').first().innerText()).includes(secret), 'curl snippet carries the key');
  await t.shot('04-key-created');
  const me = await t.api('GET', '/auth/me', undefined, secret);
  assert.equal(me.status, 200, 'the new key works');
  t.secret = secret;
  const keys = await t.api('GET', '/api/keys', undefined, t.token);
  const made = keys.body.data.find((k) => k.name === KEY);
  assert.equal(made.monthly_usd_limit, 2.5, 'the USD limit reached the server');
  assert.equal(made.monthly_token_limit, 5000);

  await page.getByRole('button', { name: 'I have copied it' }).click();
  await page.getByLabel('Your new API key').waitFor({ state: 'detached' });
  await t.go('#/keys', 'API keys');
  await page.getByRole('cell', { name: KEY }).first().waitFor();
  await page.getByRole('row').filter({ hasText: KEY }).getByRole('cell', { name: '$2.50' }).waitFor();
  assert.ok(!(await page.content()).includes(secret), 'the secret is not shown again');
  await t.shot('05-keys');
});

step('user edits a key', async (t) => {
  const { page } = t;
  await page.getByRole('button', { name: `Edit key ${KEY}` }).click();
  const dlg = page.getByRole('dialog');
  await dlg.getByLabel('Allowed models (optional)').fill('openrouter/*');
  await dlg.getByRole('button', { name: 'Save' }).click();
  await page.getByText(`Key “${KEY}” saved.`).waitFor();
  await page.getByRole('row').filter({ hasText: KEY }).getByRole('cell', { name: 'openrouter/*' }).waitFor();
});

step('user revokes a key after confirming', async (t) => {
  const { page } = t;
  await page.getByRole('button', { name: `Revoke key ${KEY}` }).click();
  const dlg = page.getByRole('dialog');
  await dlg.getByText('stops working at once').waitFor();
  await t.shot('06-revoke-confirm');
  await dlg.getByRole('button', { name: 'Revoke key' }).click();
  await page.getByText(`Key “${KEY}” revoked.`).waitFor();
  const row = page.getByRole('row').filter({ hasText: KEY });
  await row.getByText('revoked', { exact: true }).waitFor();
  const me = await t.api('GET', '/auth/me', undefined, t.secret);
  assert.equal(me.status, 401, 'the revoked key stops working');
});

step('plans page lists plans; deleting a plan in use is explained', async (t) => {
  const { page } = t;
  await t.go('#/admin/plans', 'Plans');
  for (const name of ['free', 'pro', 'enterprise']) await page.getByRole('cell', { name, exact: true }).waitFor();
  await t.shot('07-admin-plans');
  await page.getByRole('button', { name: 'Delete plan pro' }).click();
  await page.getByRole('dialog').getByRole('button', { name: 'Delete plan' }).click();
  await page.getByRole('heading', { name: '“pro” is still in use' }).waitFor();
  await page.getByRole('dialog').getByRole('button', { name: 'Close' }).click();
  await page.getByRole('dialog').waitFor({ state: 'detached' });
});

step('admin creates and edits a plan', async (t) => {
  const { page } = t;
  await page.getByRole('button', { name: 'New plan' }).click();
  let dlg = page.getByRole('dialog');
  await dlg.getByLabel('Name').fill(`team-${run}`);
  await dlg.getByLabel('Tokens per month').fill('250000');
  await dlg.getByLabel('USD per month (optional)').fill('12.5');
  await dlg.getByLabel('Pay-as-you-go').check();
  await dlg.getByRole('button', { name: 'Create plan' }).click();
  await page.getByRole('cell', { name: `team-${run}`, exact: true }).waitFor();
  const row = page.getByRole('row').filter({ hasText: `team-${run}` });
  await row.getByRole('cell', { name: '$12.50' }).waitFor();
  await row.getByText('pay-as-you-go').waitFor();
  let made = (await t.api('GET', '/admin/plans', undefined, t.token)).body.data.find((p) => p.name === `team-${run}`);
  assert.deepEqual([made.monthly_usd, made.pay_as_you_go], [12.5, true]);
  await page.getByRole('button', { name: `Edit plan team-${run}` }).click();
  dlg = page.getByRole('dialog');
  assert.equal(await dlg.getByLabel('USD per month (optional)').inputValue(), '12.5');
  await dlg.getByLabel('Requests per minute').fill('30');
  await dlg.getByLabel('USD per month (optional)').fill('');
  await dlg.getByLabel('Pay-as-you-go').uncheck();
  await dlg.getByRole('button', { name: 'Save' }).click();
  await page.getByText(`Plan team-${run} saved.`).waitFor();
  made = (await t.api('GET', '/admin/plans', undefined, t.token)).body.data.find((p) => p.name === `team-${run}`);
  assert.deepEqual([made.requests_per_minute, made.monthly_usd, made.pay_as_you_go], [30, null, false]);
});

step('providers page renders', async (t) => {
  await t.go('#/admin/providers', 'Providers');
  await t.page.locator('.card table, .card .state').first().waitFor();
  await t.shot('08-admin-providers');
});

step('admin usage page renders', async (t) => {
  await t.go('#/admin/usage', 'All usage');
  await t.page.locator('.card table, .card .state').first().waitFor();
  await t.shot('09-admin-usage');
});

step('request log page renders', async (t) => {
  await t.go('#/admin/requests', 'Request log');
  await t.page.locator('.card table, .card .state').first().waitFor();
  await t.shot('10-admin-requests');
});

step('a token handed back in the URL fragment signs in, and the fragment is cleared', async (t) => {
  const tab = await newTab(t.browser, DESKTOP);
  const token = await adminToken();
  await tab.goto(`/ui/#access_token=${encodeURIComponent(token)}&token_type=bearer&expires_in=3600`);
  await tab.getByRole('heading', { level: 1, name: 'My usage' }).waitFor();
  assert.ok(!tab.url().includes('access_token'), `fragment cleared, got ${tab.url()}`);
  assert.equal(await tab.evaluate(() => sessionStorage.getItem('tollgate.token')), token);
  assert.deepEqual(tab.errors, []);
  await tab.context().close();
});

step('pages draw charts and tables from SPEC-shaped answers (mocked in the browser)', async (t) => {
  // The metering endpoints may not exist yet on the server; this checks the
  // page's side of the contract (SPEC §5-§7 shapes) with answers served by
  // the browser itself, in a tab of its own.
  const tab = await newTab(t.browser, DESKTOP);
  const json = (body) => ({ status: 200, contentType: 'application/json', body: JSON.stringify(body) });
  const day = (d) => `2026-11-${String(d).padStart(2, '0')}`;
  const days = [];
  for (let d = 1; d <= 12; d += 1) {
    days.push({ date: day(d), provider: 'openrouter', model: 'openrouter/openai/gpt-4o-mini', tokens: 400 + d * 37, requests: 3 + (d % 4), cost_usd: 0.0004 * d });
    if (d % 3 === 0) days.push({ date: day(d), provider: 'aiml', model: 'aiml/gpt-4', tokens: 900, requests: 2, cost_usd: 0.05 });
  }
  const me = { plan: 'pro', monthly_tokens: 100000, tokens_used: 23456, tokens_reserved: 120, remaining_tokens: 76424, period_start: '2026-11-01T00:00:00Z', period_end: '2026-12-01T00:00:00Z' };
  const money = { monthly_usd: 10, usd_used: 3.25, usd_reserved: 0.5, remaining_usd: 6.25, credit_usd: 0.000001 };
  await tab.route('**/subscriptions/me', (r) => r.fulfill(json({ ...me, ...money })));
  await tab.route('**/subscriptions/usage/daily*', (r) => r.fulfill(json({ days })));
  await tab.route('**/llm/providers', (r) => r.fulfill(json([
    { id: 'openrouter', name: 'OpenRouter', status: 'active', base_url: 'https://openrouter.ai/api/v1', default: true },
    { id: 'aiml', name: 'AIML API', status: 'degraded', base_url: 'https://api.aimlapi.com/v1', default: false, reason: 'model list: HTTP 500' },
    { id: 'glama', name: 'Glama', status: 'inactive', base_url: 'https://glama.ai/api/gateway/openai/v1', default: false, reason: 'no API key (GLAMA_API_KEY)' },
  ])));
  await tab.route('**/admin/usage?*', (r) => {
    const g = new URL(r.request().url()).searchParams.get('group_by');
    const rows = g === 'day' ? days.map((x) => ({ key: x.date, tokens: x.tokens, requests: x.requests, cost_usd: x.cost_usd }))
      : [{ key: 'alice', tokens: 12000, requests: 40, cost_usd: 0.3 }, { key: 'bob', tokens: 5000, requests: 12, cost_usd: 0.1 }];
    return r.fulfill(json({ group_by: g, rows }));
  });
  await tab.route('**/admin/requests*', (r) => {
    const before = new URL(r.request().url()).searchParams.get('before');
    const mk = (id) => ({ id, request_id: `req_${id}`, user_id: 2, username: 'alice', key_id: 1, provider: 'openrouter', model: 'openrouter/openai/gpt-4o-mini', upstream_model: 'openai/gpt-4o-mini', endpoint: 'chat/completions', prompt_tokens: 12, completion_tokens: 30, total_tokens: 42, cost_usd: 0.0001, estimated: id % 5 === 0, http_status: id % 7 === 0 ? 429 : 200, outcome: id % 7 === 0 ? 'refused' : 'ok', latency_ms: 800 + id, ttft_ms: 200, created_at: '2026-11-26T10:00:00Z' });
    const start = before ? Number(before) - 1 : 60;
    const data = [];
    for (let id = start; id > Math.max(0, start - 50); id -= 1) data.push(mk(id));
    return r.fulfill(json({ data, next_before: start - 50 > 0 ? start - 49 : null }));
  });
  await signIn(tab, 'admin', adminPassword);
  await tab.getByRole('heading', { level: 1, name: 'My usage' }).waitFor();
  await settled(tab);
  await tab.locator('canvas').waitFor();
  await tab.getByRole('cell', { name: 'aiml/gpt-4' }).waitFor();
  assert.ok((await tab.locator('.stats').first().innerText()).includes('76,424'), 'remaining tokens shown');
  const moneyText = await tab.locator('.stats.money').innerText();
  for (const want of ['$6.25', '$3.25 of $10.00', '$0.000001']) assert.ok(moneyText.includes(want), `${want} in ${moneyText}`);
  await tab.getByText('$0.50 is reserved by calls in progress.').waitFor();
  await t.shot('11-usage-with-data', tab);
  // Money that does not apply (every field null) is not shown at all.
  await tab.unroute('**/subscriptions/me');
  await tab.route('**/subscriptions/me', (r) => r.fulfill(json({ ...me, monthly_usd: null, usd_used: null, usd_reserved: null, remaining_usd: null, credit_usd: null })));
  await tab.getByRole('link', { name: 'API keys' }).click();
  await tab.getByRole('heading', { level: 1, name: 'API keys' }).waitFor();
  await tab.getByRole('link', { name: 'My usage' }).click();
  await tab.getByRole('heading', { level: 1, name: 'My usage' }).waitFor();
  await settled(tab);
  await tab.locator('.stats').first().getByText('76,424', { exact: false }).waitFor();
  assert.equal(await tab.locator('.stats.money').count(), 0, 'no money rows');
  assert.equal(await tab.getByRole('heading', { name: 'Prepaid credit' }).count(), 0, 'no credit card for an admin without credit');
  await tab.getByRole('link', { name: 'Providers' }).click();
  await tab.getByText('no API key (GLAMA_API_KEY)').waitFor();
  await t.shot('12-providers-with-data', tab);
  await tab.getByRole('link', { name: 'All usage' }).click();
  await tab.locator('canvas').waitFor();
  await tab.getByLabel('Group by').selectOption('user');
  await tab.getByRole('cell', { name: 'alice' }).waitFor();
  await t.shot('13-admin-usage-with-data', tab);
  await tab.getByRole('link', { name: 'Request log' }).click();
  await tab.getByRole('cell', { name: 'req_60' }).waitFor();
  await tab.getByRole('button', { name: 'Load older' }).click();
  await tab.getByRole('cell', { name: 'req_1', exact: true }).waitFor();
  await tab.getByRole('button', { name: 'Load older' }).waitFor({ state: 'hidden' });
  await t.shot('14-requests-with-data', tab);
  assert.deepEqual(tab.errors, []);
  await tab.context().close();
});

step('every page at phone width', async (t) => {
  const tab = await newTab(t.browser, PHONE);
  await signIn(tab, 'admin', adminPassword);
  const pages = [['#/usage', 'My usage'], ['#/keys', 'API keys'], ['#/admin/users', 'Users'], ['#/admin/plans', 'Plans'],
    ['#/admin/providers', 'Providers'], ['#/admin/usage', 'All usage'], ['#/admin/requests', 'Request log']];
  for (const [hash, heading] of pages) {
    await tab.goto(`/ui/${hash}`);
    await tab.getByRole('heading', { level: 1, name: heading }).waitFor();
    await settled(tab);
    const overflow = await tab.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 1, `${hash} does not scroll sideways at phone width (overflow ${overflow}px)`);
    await t.shot(`phone-${hash.replace(/[#/]+/g, '-').replace(/^-/, '')}`, tab);
  }
  assert.deepEqual(tab.errors, []);
  await tab.context().close();
});

step('sign out returns to the sign-in page', async (t) => {
  await t.page.getByRole('button', { name: 'Sign out' }).click();
  await t.page.getByRole('heading', { name: 'Sign in to tollgate' }).waitFor();
  assert.equal(await t.page.evaluate(() => sessionStorage.getItem('tollgate.token')), null);
});

// ------------------------------------------------------------------ main

let browser;
let failed = 0;
let passed = 0;
try {
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-quic',
      '--no-first-run', '--disable-component-update', '--disable-sync'],
    // playwright-core gives the browser a fresh, empty profile directory of its own.
  });
  const page = await newTab(browser, DESKTOP);
  const t = context(browser, page);
  for (const s of STEPS) {
    const started = Date.now();
    try {
      await Promise.race([
        s.fn(t),
        new Promise((_, rej) => setTimeout(() => rej(new Error(`step timed out after ${STEP_TIMEOUT_MS} ms`)), STEP_TIMEOUT_MS)),
      ]);
      if (page.errors.length) throw new Error(`uncaught errors in the page: ${page.errors.join('; ')}`);
      passed += 1;
      console.log(`ok   ${s.name} (${Date.now() - started} ms)`);
    } catch (e) {
      failed += 1;
      console.log(`FAIL ${s.name}\n     ${String(e && e.stack ? e.stack : e).split('\n').slice(0, 6).join('\n     ')}`);
      await page.screenshot({ path: join(artifacts, `FAILED-${STEPS.indexOf(s) + 1}.png`), fullPage: true }).catch(() => {});
      break; // later steps build on earlier ones
    }
  }
} finally {
  if (browser) await browser.close().catch(() => {});
}
const skipped = STEPS.length - passed - failed;
console.log(`${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}`);
process.exit(failed || passed !== STEPS.length ? 1 : 0);
