// "My usage": plan, balance and reset date (tokens, and money when a USD
// limit or credit applies), prepaid credit and its history, a per-day chart
// of tokens and cost, and a table by provider and model built from the
// daily rows.

import { get, h, loading, failed, empty, fmtInt, fmtUsd, fmtMoney, fmtDate, chartBox, tokensCostChart, table, ApiError } from './lib.js';
import { creditCard } from './credits.js';

export async function usagePage(section, user, current) {
  section.append(h('header', { class: 'page-head' }, h('h1', { id: 'page-title' }, 'My usage'),
    h('p', { class: 'muted' }, 'Your plan, what is left this month, and where your tokens went.')));

  const summary = h('div', { class: 'card' }, loading('your plan'));
  const credit = h('div', { class: 'card', hidden: true });
  const chartCard = h('div', { class: 'card' }, h('h2', {}, 'Tokens and cost per day'), loading('daily usage'));
  const tableCard = h('div', { class: 'card' }, h('h2', {}, 'By provider and model'));
  section.append(summary, credit, chartCard, tableCard);

  const [me, daily] = await Promise.allSettled([get('/subscriptions/me'), get('/subscriptions/usage/daily')]);
  if (!current()) return;
  drawSummary(summary, user, me);
  drawDaily(chartCard, tableCard, daily);
  await creditCard(credit, me.status === 'fulfilled' ? me.value : null);
}

/** The money side of the balance; none when every money field is null or absent. */
function moneyStats(s) {
  const has = (k) => s[k] !== null && s[k] !== undefined;
  const rows = [];
  if (has('remaining_usd')) rows.push(stat('USD remaining', fmtMoney(s.remaining_usd)));
  if (has('usd_used')) rows.push(stat('USD used', has('monthly_usd') ? `${fmtMoney(s.usd_used)} of ${fmtMoney(s.monthly_usd)}` : fmtMoney(s.usd_used)));
  else if (has('monthly_usd')) rows.push(stat('USD per month', fmtMoney(s.monthly_usd)));
  if (has('credit_usd')) rows.push(stat('Prepaid credit', fmtMoney(s.credit_usd)));
  if (rows.length === 0) return [];
  const out = [h('dl', { class: 'stats money', 'aria-label': 'Money' }, rows)];
  if (s.usd_reserved) out.push(h('p', { class: 'muted small' }, `${fmtMoney(s.usd_reserved)} is reserved by calls in progress.`));
  return out;
}

function drawSummary(card, user, res) {
  card.replaceChildren(h('h2', {}, 'Plan and balance'));
  if (res.status === 'rejected') {
    // The account still knows its plan even when metering is not served.
    card.append(h('dl', { class: 'stats' }, stat('Plan', user.plan)), failed(res.reason, 'Your balance', '/subscriptions/me'));
    return;
  }
  const s = res.value;
  const limit = s.monthly_tokens || 0;
  const used = (s.tokens_used || 0) + (s.tokens_reserved || 0);
  const pct = limit > 0 ? Math.min(100, Math.round((used / limit) * 100)) : 0;
  card.append(
    h('dl', { class: 'stats' },
      stat('Plan', s.plan),
      stat('Remaining', `${fmtInt(s.remaining_tokens)} tokens`),
      stat('Used', `${fmtInt(s.tokens_used)} of ${fmtInt(limit)}`),
      stat('Resets on', fmtDate(s.period_end))),
    h('div', { class: 'meter-row' },
      h('progress', { max: 100, value: pct, 'aria-label': `${pct}% of this month's tokens used` }),
      h('span', { class: 'muted' }, `${pct}% used`)),
    ...(s.tokens_reserved ? [h('p', { class: 'muted small' }, `${fmtInt(s.tokens_reserved)} tokens are reserved by calls in progress.`)] : []),
    ...moneyStats(s));
}

function stat(label, value) {
  return h('div', { class: 'stat' }, h('dt', {}, label), h('dd', {}, value ?? '—'));
}

/** Sums rows by a key function, keeping tokens, requests and cost. */
export function aggregate(rows, keyOf) {
  const m = new Map();
  for (const r of rows) {
    const k = keyOf(r);
    const a = m.get(k) || { key: k, tokens: 0, requests: 0, cost_usd: 0, first: r };
    a.tokens += r.tokens || 0;
    a.requests += r.requests || 0;
    a.cost_usd += r.cost_usd || 0;
    m.set(k, a);
  }
  return [...m.values()];
}

function drawDaily(chartCard, tableCard, res) {
  const title = chartCard.firstChild;
  chartCard.replaceChildren(title);
  if (res.status === 'rejected') {
    const err = res.reason;
    chartCard.append(failed(err, 'Daily usage', '/subscriptions/usage/daily'));
    tableCard.append(err instanceof ApiError && err.status === 404
      ? empty('No breakdown yet.', 'The table fills in once usage metering is available.')
      : failed(err, 'Daily usage', '/subscriptions/usage/daily'));
    return;
  }
  const rows = (res.value && res.value.days) || [];
  if (rows.length === 0) {
    const text = `Create an API key on the API keys page and send a request to ${location.origin}/v1; your usage shows up here.`;
    chartCard.append(empty('No calls this month yet.', text));
    tableCard.append(empty('Nothing to break down yet.', 'Each provider and model you call gets a row here.'));
    return;
  }
  const byDay = aggregate(rows, (r) => r.date).sort((a, b) => a.key.localeCompare(b.key));
  const [box, canvas] = chartBox('Bar chart of tokens per day with a line of cost per day');
  chartCard.append(box);
  tokensCostChart(canvas, byDay.map((d) => d.key), byDay.map((d) => d.tokens), byDay.map((d) => +d.cost_usd.toFixed(6)));

  const byModel = aggregate(rows, (r) => `${r.provider ?? ''}\u0000${r.model ?? ''}`).sort((a, b) => b.tokens - a.tokens);
  const total = byModel.reduce((t, r) => ({ tokens: t.tokens + r.tokens, requests: t.requests + r.requests, cost_usd: t.cost_usd + r.cost_usd }), { tokens: 0, requests: 0, cost_usd: 0 });
  tableCard.append(table([
    ['Provider', (r) => r.first.provider ?? '—'],
    ['Model', (r) => h('code', {}, r.first.model ?? '—')],
    ['Requests', (r) => fmtInt(r.requests), 'num'],
    ['Tokens', (r) => fmtInt(r.tokens), 'num'],
    ['Cost', (r) => fmtUsd(r.cost_usd), 'num'],
  ], [...byModel, { first: { provider: 'Total', model: '' }, ...total }], 'Usage by provider and model'));
}
