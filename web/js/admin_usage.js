// Admin usage across users (grouped by day, user, provider or model, with a
// chart) and the request log with filters and paging.

import {
  get, h, field, input, select, loading, failed, empty, table, badge, chartBox, tokensCostChart,
  destroyCharts, fmtInt, fmtUsd, fmtDateTime,
} from './lib.js';

const GROUPS = [['day', 'Day'], ['user', 'User'], ['provider', 'Provider'], ['model', 'Model']];

export async function adminUsagePage(section, me, current) {
  section.append(h('header', { class: 'page-head' }, h('div', {},
    h('h1', { id: 'page-title' }, 'All usage'),
    h('p', { class: 'muted' }, 'Tokens, requests and cost across every user.'))));
  const group = select(GROUPS, 'day', { name: 'group_by' });
  const from = input({ type: 'date', name: 'from' });
  const to = input({ type: 'date', name: 'to' });
  const filters = h('form', { class: 'toolbar', 'aria-label': 'Usage filters' },
    field('Group by', group), field('From', from), field('To (exclusive)', to),
    h('button', { type: 'submit', class: 'secondary' }, 'Show'));
  const out = h('div', { class: 'card' });
  section.append(filters, out);
  filters.addEventListener('submit', (e) => { e.preventDefault(); refresh(); });
  group.addEventListener('change', refresh);

  async function refresh() {
    destroyCharts();
    out.replaceChildren(loading('usage'));
    const params = new URLSearchParams({ group_by: group.value });
    if (from.value) params.set('from', from.value);
    if (to.value) params.set('to', to.value);
    let res;
    try {
      res = await get(`/admin/usage?${params}`);
    } catch (e) {
      if (current()) out.replaceChildren(failed(e, 'Usage across users', '/admin/usage'));
      return;
    }
    if (!current()) return;
    const rows = (res && res.rows) || [];
    out.replaceChildren();
    if (rows.length === 0) {
      out.append(empty('No usage in this range.', 'Calls made with any key show up here; widen the dates or wait for traffic.'));
      return;
    }
    const byDay = group.value === 'day';
    const sorted = byDay ? [...rows].sort((a, b) => String(a.key).localeCompare(String(b.key))) : [...rows].sort((a, b) => b.tokens - a.tokens);
    const shown = byDay ? sorted : sorted.slice(0, 20);
    const label = GROUPS.find(([g]) => g === group.value)[1];
    const [box, canvas] = chartBox(`Chart of tokens and cost by ${label.toLowerCase()}`);
    if (!byDay) box.style.height = `${Math.max(180, shown.length * 28 + 80)}px`;
    out.append(box);
    tokensCostChart(canvas, shown.map((r) => String(r.key ?? '—')), shown.map((r) => r.tokens), shown.map((r) => r.cost_usd), { horizontal: !byDay });
    const total = rows.reduce((t, r) => ({ tokens: t.tokens + (r.tokens || 0), requests: t.requests + (r.requests || 0), cost_usd: t.cost_usd + (r.cost_usd || 0) }), { tokens: 0, requests: 0, cost_usd: 0 });
    out.append(table([
      [label, (r) => (r.total ? h('strong', {}, 'Total') : String(r.key ?? '—'))],
      ['Requests', (r) => fmtInt(r.requests), 'num'],
      ['Tokens', (r) => fmtInt(r.tokens), 'num'],
      ['Cost', (r) => fmtUsd(r.cost_usd), 'num'],
    ], [...sorted, { total: true, ...total }], `Usage by ${label.toLowerCase()}`));
  }

  await refresh();
}

const OUTCOMES = [['', 'Any'], ['ok', 'ok'], ['upstream_error', 'upstream error'], ['client_cancelled', 'client cancelled'], ['refused', 'refused']];

export async function requestsPage(section, me, current) {
  section.append(h('header', { class: 'page-head' }, h('div', {},
    h('h1', { id: 'page-title' }, 'Request log'),
    h('p', { class: 'muted' }, 'Every call through the gateway, newest first.'))));
  const user = input({ name: 'user', placeholder: 'id or username', autocomplete: 'off' });
  const provider = input({ name: 'provider', placeholder: 'e.g. openrouter', autocomplete: 'off' });
  const status = select(OUTCOMES, '', { name: 'status' });
  const filters = h('form', { class: 'toolbar', 'aria-label': 'Request filters' },
    field('User', user), field('Provider', provider), field('Outcome', status),
    h('button', { type: 'submit', class: 'secondary' }, 'Filter'));
  const out = h('div', { class: 'card' });
  const more = h('button', { type: 'button', class: 'secondary', hidden: true }, 'Load older');
  section.append(filters, out, h('div', { class: 'actions center' }, more));

  let rows = [];
  let nextBefore = null;

  async function load(reset) {
    const params = new URLSearchParams({ limit: '50' });
    if (user.value.trim()) params.set('user', user.value.trim());
    if (provider.value.trim()) params.set('provider', provider.value.trim());
    if (status.value) params.set('status', status.value);
    if (!reset && nextBefore != null) params.set('before', String(nextBefore));
    if (reset) out.replaceChildren(loading('requests'));
    let res;
    try {
      res = await get(`/admin/requests?${params}`);
    } catch (e) {
      if (current()) {
        out.replaceChildren(failed(e, 'The request log', '/admin/requests'));
        more.hidden = true;
      }
      return;
    }
    if (!current()) return;
    rows = reset ? (res.data || []) : [...rows, ...(res.data || [])];
    nextBefore = res.next_before ?? null;
    more.hidden = nextBefore == null;
    draw();
  }

  function draw() {
    out.replaceChildren();
    if (rows.length === 0) {
      out.append(empty('No requests match.', 'Clear the filters, or send a call with an API key to see it here.'));
      return;
    }
    out.append(table([
      ['Time', (r) => fmtDateTime(r.created_at), 'nowrap'],
      ['User', (r) => r.username ?? r.user_id ?? '—'],
      ['Provider', (r) => r.provider ?? '—'],
      ['Model', (r) => h('code', { title: r.upstream_model ? `upstream: ${r.upstream_model}` : null }, r.model ?? '—')],
      ['Endpoint', (r) => r.endpoint ?? '—'],
      ['Status', (r) => h('span', {}, badge(r.outcome || 'unknown', r.outcome === 'ok' ? 'active' : 'disabled'), ' ', h('span', { class: 'muted small' }, r.http_status ?? ''))],
      ['Tokens', (r) => h('span', { title: `prompt ${r.prompt_tokens ?? 0} + completion ${r.completion_tokens ?? 0}` }, fmtInt(r.total_tokens), r.estimated ? h('abbr', { title: 'estimated' }, ' ~') : ''), 'num'],
      ['Cost', (r) => fmtUsd(r.cost_usd), 'num'],
      ['Latency', (r) => (r.latency_ms == null ? '—' : `${fmtInt(r.latency_ms)} ms`), 'num'],
      ['Request id', (r) => h('code', { class: 'small' }, r.request_id ?? '')],
    ], rows, 'Requests'));
  }

  filters.addEventListener('submit', (e) => { e.preventDefault(); nextBefore = null; load(true); });
  status.addEventListener('change', () => { nextBefore = null; load(true); });
  more.addEventListener('click', () => load(false));
  await load(true);
}
