// Prepaid credit (SPEC §12): the ledger table, the admin's dialog to top up
// or deduct a user's credit and read its history, and the user's own card
// on "My usage".

import { api, get, h, field, input, formMessage, modal, table, empty, fmtMoney, fmtDateTime, moneyInput, ApiError } from './lib.js';

/** The history of credit entries, newest first. */
export function ledgerTable(entries, caption) {
  return table([
    ['Date', (e) => fmtDateTime(e.created_at), 'nowrap'],
    ['Amount', (e) => fmtMoney(e.amount_usd), 'num'],
    ['Note', (e) => e.note || h('span', { class: 'muted' }, '—')],
    ['By', (e) => e.created_by || h('span', { class: 'muted' }, 'command line')],
  ], entries, caption);
}

/** The admin's dialog for `user`: balance, a top-up / deduction form and the history. */
export async function creditDialog(user) {
  const balance = h('dd', {}, '…');
  const history = h('div', { class: 'credit-history' });
  const amount = input({ inputmode: 'decimal', required: true, autocomplete: 'off', placeholder: 'e.g. 25 or -2.50' });
  const note = input({ maxlength: 500, autocomplete: 'off', placeholder: 'e.g. invoice 1042' });
  const msg = formMessage();
  const path = `/admin/users/${user.id}/credits`;

  async function load() {
    try {
      const r = await get(`${path}?limit=100`);
      balance.textContent = fmtMoney(r.credit_usd);
      history.replaceChildren(r.data.length
        ? ledgerTable(r.data, `Credit history of ${user.username}`)
        : empty('No credit entries yet.', 'Top-ups and deductions are listed here, newest first.'));
    } catch (e) {
      msg.show(e.message);
    }
  }

  const body = h('div', { class: 'stack' },
    h('dl', { class: 'stats' }, h('div', { class: 'stat' }, h('dt', {}, 'Credit'), balance)),
    h('div', { class: 'grid' },
      field('Amount (USD)', amount, 'Positive tops up, negative deducts; up to 6 decimals.'),
      field('Note (optional)', note)),
    msg,
    h('h3', {}, 'History'),
    history);
  const done = modal(`Credit of ${user.username}`, body, [
    { label: 'Close', value: null, class: 'secondary' },
    {
      label: 'Add entry', submit: true,
      onSubmit: async () => {
        msg.show('');
        try {
          const e = await api('POST', path, { amount_usd: moneyInput(amount.value), note: note.value.trim() });
          const what = e.amount_usd < 0 ? `Deducted ${fmtMoney(-e.amount_usd)}` : `Added ${fmtMoney(e.amount_usd)}`;
          msg.show(`${what}. Credit is now ${fmtMoney(e.credit_usd)}.`, 'info');
          amount.value = '';
          note.value = '';
          await load();
        } catch (err) {
          msg.show(err.message);
        }
        return false; // stays open, for the next entry
      },
    },
  ]);
  await load();
  return done;
}

/** The signed-in user's credit card: hidden when they have no ledger and no credit applies. */
export async function creditCard(card, me) {
  let r;
  try {
    r = await get('/subscriptions/credits?limit=20');
  } catch (e) {
    if (e instanceof ApiError && e.status === 404) return; // a server without credit
    card.hidden = false;
    card.replaceChildren(h('h2', {}, 'Prepaid credit'), h('p', { class: 'state error' }, e.message));
    return;
  }
  const applies = me && me.credit_usd !== null && me.credit_usd !== undefined;
  if (r.data.length === 0 && !applies && !r.credit_usd) return;
  card.hidden = false;
  card.replaceChildren(h('h2', {}, 'Prepaid credit'),
    h('dl', { class: 'stats' }, h('div', { class: 'stat' }, h('dt', {}, 'Credit left'), h('dd', {}, fmtMoney(r.credit_usd)))),
    r.data.length ? ledgerTable(r.data, 'Your credit history') : empty('No credit entries yet.', 'An administrator adds credit to your account.'));
}
