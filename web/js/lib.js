// Shared helpers of the web page: the API client, DOM building, formatting,
// dialogs, notices and charts. Nothing here knows about a particular page.

const TOKEN_KEY = 'tollgate.token';

export const session = {
  get token() { return sessionStorage.getItem(TOKEN_KEY); },
  set token(t) {
    if (t) sessionStorage.setItem(TOKEN_KEY, t);
    else sessionStorage.removeItem(TOKEN_KEY);
  },
  user: null,
  onExpired: () => {},
};

/** An error answered by the API, carrying its status and `error.message`. */
export class ApiError extends Error {
  constructor(status, message, code) {
    super(message);
    this.status = status;
    this.code = code || null;
  }
}

/** Calls the JSON API with the session's token; throws ApiError on any non-2xx. */
export async function api(method, path, body) {
  const headers = { Accept: 'application/json' };
  const token = session.token;
  if (token) headers.Authorization = `Bearer ${token}`;
  const init = { method, headers };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(path, init);
  } catch {
    throw new ApiError(0, 'The server could not be reached. Check that tollgate is running and try again.');
  }
  if (resp.status === 204) return null;
  const text = await resp.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (!resp.ok) {
    const msg = data && data.error && data.error.message ? data.error.message : `The server answered ${resp.status} ${resp.statusText}.`;
    const err = new ApiError(resp.status, msg, data && data.error ? data.error.code : null);
    if (resp.status === 401 && token && !path.startsWith('/auth/login')) session.onExpired(err);
    throw err;
  }
  return data;
}

export const get = (path) => api('GET', path);

/** Builds an element: h('a', {href: '#'}, 'text', child). Text is never parsed as HTML. */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k === 'value') el.value = v;
    else if (v === true) el.setAttribute(k, '');
    else el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

let uid = 0;
/** A labelled form control: returns [wrapper, control]. */
export function field(label, control, hint) {
  const id = control.id || `f${++uid}`;
  control.id = id;
  const hintEl = hint ? h('small', { class: 'hint', id: `${id}-hint` }, hint) : null;
  if (hintEl) control.setAttribute('aria-describedby', hintEl.id);
  return h('div', { class: 'field' }, h('label', { for: id }, label), control, hintEl);
}

export function input(attrs) { return h('input', { type: 'text', ...attrs }); }

export function select(options, value, attrs) {
  const s = h('select', attrs || {});
  for (const o of options) {
    const [v, label] = Array.isArray(o) ? o : [o, o];
    const opt = h('option', { value: v }, label);
    if (String(v) === String(value)) opt.selected = true;
    s.append(opt);
  }
  return s;
}

// ---- formatting ----

const nf = new Intl.NumberFormat();
export const fmtInt = (n) => (n === null || n === undefined ? '—' : nf.format(n));
export function fmtUsd(n) {
  if (n === null || n === undefined) return '—';
  const digits = Math.abs(n) > 0 && Math.abs(n) < 0.01 ? 4 : 2;
  return `$${Number(n).toFixed(digits)}`;
}
/**
 * An exact amount of money (the API's dollars, up to 6 decimals): at least
 * cents, more digits only when the amount has them ($0.000001, $12.50).
 */
export function fmtMoney(n) {
  if (n === null || n === undefined) return '—';
  const abs = Math.abs(Number(n));
  let text = abs.toFixed(6).replace(/0+$/, '');
  if (/\.\d?$/.test(text)) text = abs.toFixed(2);
  const [whole, frac] = text.split('.');
  return `${Number(n) < 0 ? '-' : ''}$${nf.format(Number(whole))}.${frac}`;
}
/** An amount typed by a person, as the API takes it: the text itself (never a float), or null when blank. */
export function moneyInput(s) {
  const t = String(s ?? '').trim().replace(/^\$/, '');
  return t === '' ? null : t;
}
export function fmtDate(ts) {
  if (!ts) return '—';
  const d = new Date(ts);
  return Number.isNaN(d.getTime()) ? ts : d.toLocaleDateString(undefined, { year: 'numeric', month: 'short', day: 'numeric' });
}
export function fmtDateTime(ts) {
  if (!ts) return '—';
  const d = new Date(ts);
  return Number.isNaN(d.getTime()) ? ts : d.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' });
}
/** "a, b" → ["a","b"]; blank → null. */
export function parseList(s) {
  const items = String(s || '').split(/[,\s]+/).map((x) => x.trim()).filter(Boolean);
  return items.length ? items : null;
}

// ---- page states ----

export function loading(what) {
  return h('p', { class: 'state loading', role: 'status', 'aria-live': 'polite' }, h('span', { class: 'spinner', 'aria-hidden': 'true' }), `Loading ${what}…`);
}

export function errorBox(err, extra) {
  const msg = err instanceof Error ? err.message : String(err);
  return h('div', { class: 'state error', role: 'alert' }, h('strong', {}, 'Something went wrong. '), msg, extra ? h('p', {}, extra) : null);
}

/** A 404 from an endpoint that this server does not have (yet). */
export function unavailable(what, path) {
  return h('div', { class: 'state empty', role: 'status' },
    h('strong', {}, `${what} is not available on this server yet.`),
    h('p', {}, `The page asked `, h('code', {}, path), ` and the server does not offer it. It appears once that part of tollgate is enabled; nothing is wrong with your account.`));
}

export function empty(title, text) {
  return h('div', { class: 'state empty' }, h('strong', {}, title), text ? h('p', {}, text) : null);
}

/** Shows the right state for a failed load. */
export function failed(err, what, path) {
  return err instanceof ApiError && err.status === 404 ? unavailable(what, path) : errorBox(err);
}

// ---- notices ----

export function notify(message, kind = 'ok') {
  const region = document.getElementById('toasts');
  const t = h('div', { class: `toast ${kind}` }, message);
  region.append(t);
  setTimeout(() => t.remove(), kind === 'error' ? 8000 : 4000);
}

/** An inline message area inside a form. */
export function formMessage() {
  const el = h('p', { class: 'form-msg', role: 'alert', hidden: true });
  el.show = (msg, kind = 'error') => { el.textContent = msg; el.className = `form-msg ${kind}`; el.hidden = !msg; };
  return el;
}

/** Disables a submit button while `fn` runs. */
export async function busy(button, fn) {
  const label = button.textContent;
  button.disabled = true;
  button.setAttribute('aria-busy', 'true');
  button.textContent = `${label}…`;
  try { return await fn(); } finally {
    button.disabled = false;
    button.removeAttribute('aria-busy');
    button.textContent = label;
  }
}

// ---- dialogs ----

/** A modal dialog with `body` and buttons; resolves to the chosen value (null on cancel). */
export function modal(title, body, buttons) {
  return new Promise((resolve) => {
    const titleId = `d${++uid}`;
    const dlg = h('dialog', { 'aria-labelledby': titleId, class: 'dialog' });
    const done = (v) => { dlg.close(); dlg.remove(); resolve(v); };
    const form = h('form', { method: 'dialog' });
    form.append(h('h2', { id: titleId }, title), body,
      h('div', { class: 'actions' }, buttons.map((b) => h('button', {
        type: b.submit ? 'submit' : 'button', class: b.class || '',
        onclick: b.submit ? null : () => done(b.value ?? null),
      }, b.label))));
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      const b = buttons.find((x) => x.submit);
      if (b && b.onSubmit) {
        const ok = await b.onSubmit(form);
        if (ok === false) return;
        done(ok);
      } else done(b ? b.value ?? true : true);
    });
    dlg.addEventListener('cancel', (e) => { e.preventDefault(); done(null); });
    dlg.append(form);
    document.body.append(dlg);
    dlg.showModal();
  });
}

/** Asks for confirmation of a destructive action. */
export function confirmAction(title, text, confirmLabel) {
  return modal(title, h('p', {}, text), [
    { label: 'Cancel', value: false, class: 'secondary' },
    { label: confirmLabel, submit: true, value: true, class: 'danger' },
  ]).then((v) => v === true);
}

// ---- charts (Chart.js, vendored under vendor/) ----

const charts = new Set();

export function destroyCharts() {
  for (const c of charts) c.destroy();
  charts.clear();
}

const css = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim();

/** A bar chart of tokens with a cost line on a second axis. */
export function tokensCostChart(canvas, labels, tokens, costs, opts = {}) {
  if (!window.Chart) {
    canvas.replaceWith(errorBox('The chart library did not load.'));
    return null;
  }
  const axis = opts.horizontal ? ['xAxisID', 'x', 'x1'] : ['yAxisID', 'y', 'y1'];
  const valueScale = (title, extra) => ({ beginAtZero: true, title: { display: true, text: title }, ...extra });
  const chart = new window.Chart(canvas, {
    data: {
      labels,
      datasets: [
        { type: 'bar', label: 'Tokens', data: tokens, backgroundColor: css('--accent-soft'), borderColor: css('--accent'), borderWidth: 1, [axis[0]]: axis[1] },
        { type: opts.horizontal ? 'bar' : 'line', label: 'Cost (USD)', data: costs, borderColor: css('--warn'), backgroundColor: css('--warn'), pointRadius: 2, cubicInterpolationMode: 'monotone', [axis[0]]: axis[2] },
      ],
    },
    options: {
      responsive: true,
      maintainAspectRatio: false,
      animation: false,
      indexAxis: opts.horizontal ? 'y' : 'x',
      interaction: { mode: 'index', intersect: false },
      plugins: { legend: { position: 'bottom', labels: { boxWidth: 12 } } },
      scales: {
        [axis[1]]: valueScale('tokens'),
        [axis[2]]: valueScale('USD', { position: opts.horizontal ? 'top' : 'right', grid: { drawOnChartArea: false } }),
      },
    },
  });
  charts.add(chart);
  return chart;
}

export function chartBox(label) {
  const canvas = h('canvas', { role: 'img', 'aria-label': label });
  return [h('div', { class: 'chart' }, canvas), canvas];
}

/** A table; `cols` are [header, row => cell, className?]. */
export function table(cols, rows, caption) {
  return h('div', { class: 'table-wrap' }, h('table', {},
    caption ? h('caption', { class: 'sr-only' }, caption) : null,
    h('thead', {}, h('tr', {}, cols.map(([t, , cls]) => h('th', { scope: 'col', class: cls || null }, t)))),
    h('tbody', {}, rows.map((r) => h('tr', {}, cols.map(([, f, cls]) => h('td', { class: cls || null }, f(r))))))));
}

export function badge(text, kind) {
  return h('span', { class: `badge ${kind || text}` }, text);
}

export async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    // Clipboard API needs a secure context; fall back to a hidden textarea.
    const ta = h('textarea', { 'aria-hidden': 'true', class: 'offscreen' });
    ta.value = text;
    document.body.append(ta);
    ta.select();
    let ok = false;
    try { ok = document.execCommand('copy'); } catch { ok = false; }
    ta.remove();
    return ok;
  }
}
