// "API keys": create a key (its secret shown once, with ready-to-use
// snippets), list, edit and revoke the caller's own keys.

import {
  api, get, h, field, input, loading, failed, empty, formMessage, busy, modal, confirmAction,
  notify, table, badge, fmtDate, fmtDateTime, fmtInt, fmtMoney, moneyInput, parseList, copyText,
} from './lib.js';

const baseUrl = () => `${location.origin}/v1`;

export async function keysPage(section, user, current) {
  const newBtn = h('button', { type: 'button', 'aria-expanded': 'false', 'aria-controls': 'key-form' }, 'Create key');
  section.append(h('header', { class: 'page-head' },
    h('div', {}, h('h1', { id: 'page-title' }, 'API keys'),
      h('p', { class: 'muted' }, 'Keys let your editor, scripts and SDKs call ', h('code', {}, baseUrl()), ' as you.')),
    newBtn));
  const secretSlot = h('div');
  const form = keyForm(null, async (body) => {
    const k = await api('POST', '/api/keys', body);
    form.hidden = true;
    newBtn.setAttribute('aria-expanded', 'false');
    secretSlot.replaceChildren(secretPanel(k, () => secretSlot.replaceChildren()));
    secretSlot.querySelector('input').focus();
    await refresh();
  });
  form.id = 'key-form';
  form.hidden = true;
  newBtn.addEventListener('click', () => {
    form.hidden = !form.hidden;
    newBtn.setAttribute('aria-expanded', String(!form.hidden));
    if (!form.hidden) form.querySelector('input').focus();
  });
  const list = h('div', { class: 'card' }, loading('your keys'));
  // A page at a time, newest first (SPEC §13); "Show more" asks for the next.
  const more = h('button', { type: 'button', class: 'secondary', hidden: true }, 'Show more keys');
  section.append(secretSlot, form, list, h('div', { class: 'actions center' }, more));
  let keys = [];
  let nextBefore = null;
  more.addEventListener('click', () => refresh(true));

  async function refresh(append) {
    const params = new URLSearchParams({ limit: '100' });
    if (append && nextBefore != null) params.set('before', String(nextBefore));
    try {
      const res = await get(`/api/keys?${params}`);
      keys = append ? [...keys, ...(res.data || [])] : (res.data || []);
      nextBefore = res.next_before ?? null;
    } catch (e) {
      if (current()) list.replaceChildren(failed(e, 'Key management', '/api/keys'));
      return;
    }
    if (!current()) return;
    more.hidden = nextBefore == null;
    list.replaceChildren(h('h2', {}, 'Your keys'));
    if (keys.length === 0) {
      list.append(empty('You have no API keys yet.', 'Choose "Create key" above; the secret is shown once, so copy it into your tool right away.'));
      return;
    }
    list.append(table([
      ['Name', (k) => h('div', {}, h('strong', {}, k.name), k.description ? h('div', { class: 'muted small' }, k.description) : null)],
      ['Prefix', (k) => h('code', {}, `${k.prefix}…`)],
      ['Models', (k) => (k.allowed_models && k.allowed_models.length ? k.allowed_models.join(', ') : h('span', { class: 'muted' }, 'plan default'))],
      ['Monthly limit', (k) => (k.monthly_token_limit == null ? h('span', { class: 'muted' }, 'plan') : fmtInt(k.monthly_token_limit)), 'num'],
      ['USD limit', (k) => (k.monthly_usd_limit == null ? h('span', { class: 'muted' }, 'plan') : fmtMoney(k.monthly_usd_limit)), 'num'],
      ['Last used', (k) => (k.last_used_at ? fmtDateTime(k.last_used_at) : h('span', { class: 'muted' }, 'never'))],
      ['Expires', (k) => (k.expires_at ? fmtDate(k.expires_at) : h('span', { class: 'muted' }, 'never'))],
      ['Status', (k) => badge(status(k))],
      ['', (k) => actions(k), 'cell-actions'],
    ], keys, 'Your API keys'));
  }

  function actions(k) {
    if (k.revoked) return null;
    return h('div', { class: 'row-actions' },
      h('button', { type: 'button', class: 'secondary small', 'aria-label': `Edit key ${k.name}`, onclick: () => editKey(k) }, 'Edit'),
      h('button', { type: 'button', class: 'danger small', 'aria-label': `Revoke key ${k.name}`, onclick: () => revokeKey(k) }, 'Revoke'));
  }

  async function editKey(k) {
    const f = keyForm(k, null);
    const saved = await modal(`Edit key “${k.name}”`, f.fieldsOnly, [
      { label: 'Cancel', value: null, class: 'secondary' },
      {
        label: 'Save', submit: true,
        onSubmit: async () => {
          try {
            await api('PATCH', `/api/keys/${k.id}`, f.collect(true));
            return true;
          } catch (e) {
            f.msg.show(e.message);
            return false;
          }
        },
      },
    ]);
    if (saved) {
      notify(`Key “${k.name}” saved.`);
      await refresh();
    }
  }

  async function revokeKey(k) {
    const ok = await confirmAction(`Revoke “${k.name}”?`,
      `Anything using the key ${k.prefix}… stops working at once. This cannot be undone.`, 'Revoke key');
    if (!ok) return;
    try {
      await api('DELETE', `/api/keys/${k.id}`);
      notify(`Key “${k.name}” revoked.`);
    } catch (e) {
      notify(e.message, 'error');
    }
    await refresh();
  }

  await refresh();
}

function status(k) {
  if (k.revoked) return 'revoked';
  if (k.expires_at && new Date(k.expires_at) <= new Date()) return 'expired';
  return 'active';
}

/** The create form (onCreate set) or the fields of the edit dialog (existing key). */
function keyForm(existing, onCreate) {
  const k = existing || {};
  const name = input({ required: true, maxlength: 100, value: k.name || '', placeholder: 'laptop' });
  const desc = input({ value: k.description || '', placeholder: 'What uses this key' });
  const models = input({ value: (k.allowed_models || []).join(', '), placeholder: 'e.g. openrouter/*, aiml/gpt-4' });
  const limit = input({ type: 'number', min: 0, step: 1, inputmode: 'numeric', value: k.monthly_token_limit ?? '' });
  const usd = input({ inputmode: 'decimal', autocomplete: 'off', placeholder: 'e.g. 5 or 0.50', value: k.monthly_usd_limit ?? '' });
  const expires = input({ type: 'date', value: k.expires_at ? k.expires_at.slice(0, 10) : '' });
  const msg = formMessage();
  const fields = h('div', { class: 'grid' },
    field('Name', name),
    field('Description (optional)', desc),
    field('Allowed models (optional)', models, 'Comma-separated patterns; empty means whatever your plan allows.'),
    field('Monthly token limit (optional)', limit, 'Empty means your plan’s limit.'),
    field('Monthly USD limit (optional)', usd, 'Dollars per month, up to 6 decimals; empty means your plan’s limit.'),
    field('Expires (optional)', expires, 'The key stops working at the end of this day (UTC).'));

  const collect = (forEdit) => {
    const body = { name: name.value.trim() };
    const d = desc.value.trim();
    const m = parseList(models.value);
    const l = limit.value === '' ? null : Number(limit.value);
    const u = moneyInput(usd.value);
    const e = expires.value ? `${expires.value}T23:59:59Z` : null;
    if (forEdit) {
      // PATCH: send every field, null clears it.
      return { ...body, description: d || null, allowed_models: m, monthly_token_limit: l, monthly_usd_limit: u, expires_at: e };
    }
    if (d) body.description = d;
    if (m) body.allowed_models = m;
    if (l !== null) body.monthly_token_limit = l;
    if (u !== null) body.monthly_usd_limit = u;
    if (e) body.expires_at = e;
    return body;
  };

  if (!onCreate) {
    const wrap = h('div', {}, fields, msg);
    return { fieldsOnly: wrap, collect, msg };
  }
  const submit = h('button', { type: 'submit' }, 'Create key');
  const cancel = h('button', { type: 'button', class: 'secondary' }, 'Cancel');
  const form = h('form', { class: 'card', 'aria-label': 'Create an API key' },
    h('h2', {}, 'New key'), fields, msg, h('div', { class: 'actions' }, cancel, submit));
  cancel.addEventListener('click', () => { form.hidden = true; form.reset(); msg.show(''); });
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    msg.show('');
    await busy(submit, async () => {
      try {
        await onCreate(collect(false));
        form.reset();
      } catch (e) {
        msg.show(e.message);
      }
    });
  });
  return form;
}

/** The new key's secret, shown this once, with a copy button and snippets. */
function secretPanel(k, onDone) {
  const secret = h('input', { type: 'text', readonly: true, value: k.api_key, class: 'secret mono', id: 'new-key-secret', spellcheck: 'false' });
  const copyBtn = h('button', { type: 'button', class: 'small', 'aria-label': 'Copy API key', onclick: async () => {
    const ok = await copyText(k.api_key);
    copyBtn.textContent = ok ? 'Copied' : 'Copy failed: select and copy by hand';
    setTimeout(() => { copyBtn.textContent = 'Copy'; }, 2500);
  } }, 'Copy');
  const curl = `curl ${baseUrl()}/chat/completions \\
  -H "Authorization: Bearer ${k.api_key}" \\
  -H "Content-Type: application/json" \\
  -d '{"model": "openrouter/openai/gpt-4o-mini", "messages": [{"role": "user", "content": "Hello"}]}'`;
  const py = `from openai import OpenAI

client = OpenAI(base_url="${baseUrl()}", api_key="${k.api_key}")
reply = client.chat.completions.create(
    model="openrouter/openai/gpt-4o-mini",
    messages=[{"role": "user", "content": "Hello"}],
)
print(reply.choices[0].message.content)`;
  const snippet = (title, text) => h('details', { class: 'snippet' },
    h('summary', {}, title),
    h('div', { class: 'snippet-body' },
      h('button', { type: 'button', class: 'secondary small copy-snippet', 'aria-label': `Copy ${title} example`, onclick: async (e) => {
        const ok = await copyText(text);
        e.target.textContent = ok ? 'Copied' : 'Copy failed';
        setTimeout(() => { e.target.textContent = 'Copy'; }, 2500);
      } }, 'Copy'),
      h('pre', {}, h('code', {}, text))));
  return h('div', { class: 'card secret-card', role: 'region', 'aria-labelledby': 'secret-title' },
    h('h2', { id: 'secret-title' }, `Key “${k.name}” created`),
    h('p', { class: 'warn-text' }, 'Copy this secret now. It is shown only once; tollgate stores only a hash of it.'),
    h('div', { class: 'copy-row' }, h('label', { for: 'new-key-secret', class: 'sr-only' }, 'Your new API key'), secret, copyBtn),
    h('p', { class: 'muted small' }, 'Base URL for OpenAI-compatible tools: ', h('code', {}, baseUrl())),
    snippet('curl', curl), snippet('OpenAI Python SDK', py),
    h('div', { class: 'actions' }, h('button', { type: 'button', class: 'secondary', onclick: onDone }, 'I have copied it')));
}
