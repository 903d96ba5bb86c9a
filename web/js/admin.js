// Admin pages: users (search, create, plan, role, disable, prepaid credit),
// plans (create, edit, delete; token and USD limits) and providers with
// their status.

import {
  api, get, h, field, input, select, loading, failed, empty, formMessage, busy, modal, confirmAction,
  notify, table, badge, fmtDate, fmtInt, fmtUsd, fmtMoney, moneyInput, parseList, ApiError,
} from './lib.js';
import { creditDialog } from './credits.js';

function head(title, text, ...extra) {
  return h('header', { class: 'page-head' },
    h('div', {}, h('h1', { id: 'page-title' }, title), text ? h('p', { class: 'muted' }, text) : null), ...extra);
}

// ---------------------------------------------------------------- users

export async function usersPage(section, me, current) {
  const addBtn = h('button', { type: 'button', 'aria-expanded': 'false', 'aria-controls': 'user-form' }, 'Add user');
  section.append(head('Users', 'Who can sign in, their plan and role.', addBtn));

  const q = input({ type: 'search', name: 'q', placeholder: 'username or email', autocomplete: 'off' });
  const search = h('form', { class: 'toolbar', role: 'search', 'aria-label': 'User search' },
    field('Search users', q), h('button', { type: 'submit', class: 'secondary' }, 'Search'));
  const list = h('div', { class: 'card' }, loading('users'));
  let plans = [];

  const form = userForm(async (body) => {
    const u = await api('POST', '/admin/users', body);
    notify(`User ${u.username} created on plan ${u.plan}.`);
    form.hidden = true;
    addBtn.setAttribute('aria-expanded', 'false');
    await refresh();
  });
  addBtn.addEventListener('click', () => {
    form.hidden = !form.hidden;
    addBtn.setAttribute('aria-expanded', String(!form.hidden));
    if (!form.hidden) form.querySelector('input').focus();
  });
  // A page at a time, newest first (SPEC §13); "Show more" asks for the next.
  const more = h('button', { type: 'button', class: 'secondary', hidden: true }, 'Show more users');
  section.append(form, search, list, h('div', { class: 'actions center' }, more));
  let users = [];
  let nextBefore = null;

  let timer;
  q.addEventListener('input', () => { clearTimeout(timer); timer = setTimeout(() => refresh(false), 250); });
  search.addEventListener('submit', (e) => { e.preventDefault(); refresh(false); });
  more.addEventListener('click', () => refresh(true));

  async function refresh(append) {
    const params = new URLSearchParams({ limit: '100' });
    if (q.value.trim()) params.set('q', q.value.trim());
    if (append && nextBefore != null) params.set('before', String(nextBefore));
    try {
      const [u, p] = await Promise.all([get(`/admin/users?${params}`), get('/admin/plans')]);
      users = append ? [...users, ...(u.data || [])] : (u.data || []);
      nextBefore = u.next_before ?? null;
      plans = (p.data || []).map((x) => x.name);
    } catch (e) {
      if (current()) list.replaceChildren(failed(e, 'User management', '/admin/users'));
      return;
    }
    if (!current()) return;
    form.setPlans(plans);
    more.hidden = nextBefore == null;
    list.replaceChildren();
    if (users.length === 0) {
      list.append(q.value.trim()
        ? empty(`No user matches “${q.value.trim()}”.`, 'Try part of a username or an email address.')
        : empty('No users yet.', 'Choose "Add user" to create one.'));
      return;
    }
    list.append(table([
      ['User', (u) => h('div', {}, h('strong', {}, u.username), u.email ? h('div', { class: 'muted small' }, u.email) : null)],
      ['Plan', (u) => change(u, 'plan', select(plans.includes(u.plan) ? plans : [...plans, u.plan], u.plan, { 'aria-label': `Plan of ${u.username}` }))],
      ['Role', (u) => change(u, 'role', select(['user', 'admin'], u.role, { 'aria-label': `Role of ${u.username}`, disabled: u.id === me.id }))],
      ['Status', (u) => badge(u.disabled ? 'disabled' : 'active')],
      ['Created', (u) => fmtDate(u.created_at)],
      ['', (u) => h('div', { class: 'row-actions' },
        h('button', { type: 'button', class: 'secondary small', 'aria-label': `Credit of ${u.username}`, onclick: () => creditDialog(u) }, 'Credit'),
        u.id === me.id ? h('span', { class: 'muted small' }, 'you')
          : h('button', { type: 'button', class: u.disabled ? 'secondary small' : 'danger small', 'aria-label': `${u.disabled ? 'Enable' : 'Disable'} ${u.username}`, onclick: () => toggle(u) },
            u.disabled ? 'Enable' : 'Disable')), 'cell-actions'],
    ], users, 'Users'));
  }

  function change(u, fieldName, sel) {
    sel.addEventListener('change', async () => {
      sel.disabled = true;
      try {
        const r = await api('PATCH', `/admin/users/${u.id}`, { [fieldName]: sel.value });
        Object.assign(u, r);
        notify(`${u.username}: ${fieldName} is now ${sel.value}.`);
      } catch (e) {
        sel.value = u[fieldName];
        notify(e.message, 'error');
      } finally {
        sel.disabled = false;
      }
    });
    return sel;
  }

  async function toggle(u) {
    if (!u.disabled) {
      const ok = await confirmAction(`Disable ${u.username}?`,
        'Their API keys and sessions stop working at once. You can enable the account again later; they will have to sign in again.', 'Disable');
      if (!ok) return;
    }
    try {
      await api('PATCH', `/admin/users/${u.id}`, { disabled: !u.disabled });
      notify(`${u.username} ${u.disabled ? 'enabled' : 'disabled'}.`);
    } catch (e) {
      notify(e.message, 'error');
    }
    await refresh();
  }

  await refresh();
}

function userForm(onCreate) {
  const username = input({ required: true, autocomplete: 'off', autocapitalize: 'none', spellcheck: 'false' });
  const password = input({ type: 'password', required: true, minlength: 8, autocomplete: 'new-password' });
  const email = input({ type: 'email', autocomplete: 'off' });
  const role = select(['user', 'admin'], 'user');
  const plan = select([], '');
  const msg = formMessage();
  const submit = h('button', { type: 'submit' }, 'Create user');
  const cancel = h('button', { type: 'button', class: 'secondary' }, 'Cancel');
  const form = h('form', { id: 'user-form', class: 'card', hidden: true, 'aria-label': 'Add a user' },
    h('h2', {}, 'New user'),
    h('div', { class: 'grid' }, field('Username', username), field('Password', password, 'At least 8 characters.'),
      field('Email (optional)', email), field('Role', role), field('Plan', plan)),
    msg, h('div', { class: 'actions' }, cancel, submit));
  form.setPlans = (names) => {
    const keep = plan.value;
    plan.replaceChildren(...names.map((n) => h('option', { value: n }, n)));
    plan.value = names.includes(keep) ? keep : (names.includes('free') ? 'free' : names[0] || '');
  };
  cancel.addEventListener('click', () => { form.hidden = true; form.reset(); msg.show(''); });
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    msg.show('');
    const body = { username: username.value.trim(), password: password.value, role: role.value };
    if (email.value.trim()) body.email = email.value.trim();
    if (plan.value) body.plan = plan.value;
    await busy(submit, async () => {
      try {
        await onCreate(body);
        form.reset();
      } catch (err) {
        msg.show(err.message);
      }
    });
  });
  return form;
}

// ---------------------------------------------------------------- plans

export async function plansPage(section, me, current) {
  const newBtn = h('button', { type: 'button' }, 'New plan');
  section.append(head('Plans', 'Monthly token and USD allowances, request rate and models of each plan.', newBtn));
  const list = h('div', { class: 'card' }, loading('plans'));
  section.append(list);
  newBtn.addEventListener('click', () => editPlan(null));

  async function refresh() {
    let plans;
    try {
      plans = (await get('/admin/plans')).data || [];
    } catch (e) {
      if (current()) list.replaceChildren(failed(e, 'Plan management', '/admin/plans'));
      return;
    }
    if (!current()) return;
    list.replaceChildren();
    if (plans.length === 0) {
      list.append(empty('There are no plans.', 'Create one with "New plan"; every user needs a plan.'));
      return;
    }
    list.append(table([
      ['Name', (p) => h('strong', {}, p.name)],
      ['Tokens / month', (p) => fmtInt(p.monthly_tokens), 'num'],
      ['USD / month', (p) => (p.monthly_usd == null ? h('span', { class: 'muted' }, 'no limit') : fmtMoney(p.monthly_usd)), 'num'],
      ['Billing', (p) => (p.pay_as_you_go ? badge('pay-as-you-go', 'info') : h('span', { class: 'muted' }, 'allowance'))],
      ['Requests / min', (p) => fmtInt(p.requests_per_minute), 'num'],
      ['Price / month', (p) => fmtUsd(p.price_usd_month), 'num'],
      ['Models', (p) => h('code', {}, (p.allowed_models || []).join(', ') || '—')],
      ['', (p) => h('div', { class: 'row-actions' },
        h('button', { type: 'button', class: 'secondary small', 'aria-label': `Edit plan ${p.name}`, onclick: () => editPlan(p) }, 'Edit'),
        h('button', { type: 'button', class: 'danger small', 'aria-label': `Delete plan ${p.name}`, onclick: () => deletePlan(p) }, 'Delete')), 'cell-actions'],
    ], plans, 'Plans'));
  }

  async function editPlan(p) {
    const name = input({ required: true, value: p ? p.name : '', disabled: !!p, maxlength: 64 });
    const tokens = input({ type: 'number', required: true, min: 0, step: 1, value: p ? p.monthly_tokens : 10000 });
    const usd = input({ inputmode: 'decimal', autocomplete: 'off', placeholder: 'no limit', value: p && p.monthly_usd != null ? String(p.monthly_usd) : '' });
    const payg = h('input', { type: 'checkbox', class: 'check', checked: !!(p && p.pay_as_you_go) });
    const rpm = input({ type: 'number', required: true, min: 1, step: 1, value: p ? p.requests_per_minute : 60 });
    const price = input({ type: 'number', min: 0, step: 0.01, value: p ? p.price_usd_month : 0 });
    const models = input({ value: p ? (p.allowed_models || []).join(', ') : '*' });
    const msg = formMessage();
    const body = h('div', {}, h('div', { class: 'grid' },
      field('Name', name, p ? 'A plan’s name cannot change.' : null),
      field('Tokens per month', tokens),
      field('USD per month (optional)', usd, 'Up to 6 decimals; empty means no USD limit.'),
      field('Requests per minute', rpm),
      field('Price per month (USD)', price),
      field('Allowed models', models, 'Comma-separated patterns, * for all.'),
      field('Pay-as-you-go', payg, 'Calls are paid from the user’s prepaid credit.')), msg);
    const saved = await modal(p ? `Edit plan “${p.name}”` : 'New plan', body, [
      { label: 'Cancel', value: null, class: 'secondary' },
      {
        label: p ? 'Save' : 'Create plan', submit: true,
        onSubmit: async () => {
          const b = {
            monthly_tokens: Number(tokens.value), requests_per_minute: Number(rpm.value),
            price_usd_month: Number(price.value || 0), allowed_models: parseList(models.value) || [],
            monthly_usd: moneyInput(usd.value), pay_as_you_go: payg.checked,
          };
          try {
            if (p) await api('PATCH', `/admin/plans/${encodeURIComponent(p.name)}`, b);
            else await api('POST', '/admin/plans', { name: name.value.trim(), ...b });
            return true;
          } catch (e) {
            msg.show(e.message);
            return false;
          }
        },
      },
    ]);
    if (saved) {
      notify(p ? `Plan ${p.name} saved.` : `Plan ${name.value.trim()} created.`);
      await refresh();
    }
  }

  async function deletePlan(p) {
    const ok = await confirmAction(`Delete plan “${p.name}”?`, 'The plan is removed for good. A plan that users are on cannot be deleted.', 'Delete plan');
    if (!ok) return;
    try {
      await api('DELETE', `/admin/plans/${encodeURIComponent(p.name)}`);
      notify(`Plan ${p.name} deleted.`);
      await refresh();
    } catch (e) {
      if (e instanceof ApiError && e.status === 409) {
        await modal(`“${p.name}” is still in use`, h('div', {},
          h('p', {}, 'Some users are on this plan, so it cannot be deleted.'),
          h('p', {}, 'Move them to another plan on the Users page, then delete it.'),
          h('p', { class: 'muted small' }, e.message)), [
          { label: 'Close', value: null, class: 'secondary' },
          { label: 'Go to Users', submit: true, value: 'users' },
        ]).then((v) => { if (v === 'users') location.hash = '#/admin/users'; });
      } else notify(e.message, 'error');
    }
  }

  await refresh();
}

// ---------------------------------------------------------------- providers

export async function providersPage(section, me, current) {
  const reload = h('button', { type: 'button', class: 'secondary' }, 'Refresh');
  section.append(head('Providers', 'Upstream providers, whether calls can reach them, and why not.', reload));
  const list = h('div', { class: 'card' }, loading('providers'));
  section.append(list);

  async function refresh() {
    list.replaceChildren(loading('providers'));
    let providers;
    try {
      providers = await get('/llm/providers');
    } catch (e) {
      if (current()) list.replaceChildren(failed(e, 'Provider status', '/llm/providers'));
      return;
    }
    if (!current()) return;
    list.replaceChildren();
    if (!Array.isArray(providers) || providers.length === 0) {
      list.append(empty('No providers are configured.', 'Set a provider key such as OPENROUTER_API_KEY, or add a [providers.NAME] section to config.toml, and restart.'));
      return;
    }
    list.append(table([
      ['Provider', (p) => h('div', {}, h('strong', {}, p.name || p.id), h('div', { class: 'muted small' }, h('code', {}, p.id)))],
      ['Status', (p) => badge(p.status)],
      ['Default', (p) => (p.default ? badge('default', 'info') : '')],
      ['Base URL', (p) => h('code', { class: 'wrap' }, p.base_url || '—')],
      ['Reason', (p) => p.reason || h('span', { class: 'muted' }, '—')],
    ], providers, 'Providers'));
  }
  reload.addEventListener('click', () => busy(reload, refresh));
  await refresh();
}
