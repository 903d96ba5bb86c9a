// The signed-out page: password sign-in, a button per enabled OAuth provider,
// and self-service registration (which the server may have turned off).

import { api, session, h, field, input, formMessage, busy, ApiError } from './lib.js';

export function signInPage({ notice, onSignedIn }) {
  const page = h('section', { class: 'page auth', 'aria-labelledby': 'page-title' });
  const card = h('div', { class: 'card auth-card' });
  page.append(card);
  card.append(h('h1', { id: 'page-title' }, 'Sign in to tollgate'));
  if (notice) card.append(h('p', { class: 'form-msg info', role: 'status' }, notice));

  // Password sign-in.
  const user = input({ name: 'username', autocomplete: 'username', required: true, autocapitalize: 'none', spellcheck: 'false' });
  const pass = input({ type: 'password', name: 'password', autocomplete: 'current-password', required: true });
  const msg = formMessage();
  const submit = h('button', { type: 'submit' }, 'Sign in');
  const form = h('form', { class: 'stack', 'aria-label': 'Sign in with password' },
    field('Username', user), field('Password', pass), msg, submit);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    msg.show('');
    await busy(submit, async () => {
      try {
        const t = await api('POST', '/auth/login', { username: user.value.trim(), password: pass.value });
        session.token = t.access_token;
        pass.value = '';
        await onSignedIn();
      } catch (err) {
        msg.show(err.status === 401 ? 'That username and password do not match.' : err.message);
      }
    });
  });
  card.append(form);

  // OAuth providers, when any are enabled.
  const oauth = h('div', { class: 'oauth', hidden: true });
  card.append(oauth);
  api('GET', '/auth/providers').then((list) => {
    if (!Array.isArray(list) || list.length === 0) return;
    oauth.append(h('p', { class: 'divider' }, h('span', {}, 'or')));
    for (const p of list) {
      oauth.append(h('a', { class: 'button secondary block', href: p.login_url }, `Continue with ${p.name}`));
    }
    oauth.hidden = false;
  }).catch(() => { /* no providers to offer */ });

  // Registration: tried on submit; a 403 means it is off here.
  const regToggle = h('button', { type: 'button', class: 'link', 'aria-expanded': 'false', 'aria-controls': 'register' }, 'Create an account');
  const regUser = input({ name: 'new-username', autocomplete: 'username', required: true, autocapitalize: 'none', spellcheck: 'false' });
  const regEmail = input({ type: 'email', name: 'email', autocomplete: 'email' });
  const regPass = input({ type: 'password', name: 'new-password', autocomplete: 'new-password', required: true, minlength: 8 });
  const regMsg = formMessage();
  const regSubmit = h('button', { type: 'submit' }, 'Create account');
  const reg = h('form', { id: 'register', class: 'stack', hidden: true, 'aria-label': 'Create an account' },
    h('h2', {}, 'Create an account'),
    field('Username', regUser), field('Email (optional)', regEmail), field('Password', regPass, 'At least 8 characters.'),
    regMsg, regSubmit);
  regToggle.addEventListener('click', () => {
    reg.hidden = !reg.hidden;
    regToggle.setAttribute('aria-expanded', String(!reg.hidden));
    if (!reg.hidden) regUser.focus();
  });
  reg.addEventListener('submit', async (e) => {
    e.preventDefault();
    regMsg.show('');
    await busy(regSubmit, async () => {
      const body = { username: regUser.value.trim(), password: regPass.value };
      if (regEmail.value.trim()) body.email = regEmail.value.trim();
      try {
        await api('POST', '/auth/register', body);
        const t = await api('POST', '/auth/login', { username: body.username, password: body.password });
        session.token = t.access_token;
        await onSignedIn();
      } catch (err) {
        if (err instanceof ApiError && err.status === 403) {
          regMsg.show('Self-service sign-up is turned off on this server. Ask an administrator to create an account for you.', 'info');
        } else regMsg.show(err.message);
      }
    });
  });
  card.append(h('p', { class: 'muted center' }, 'New here? ', regToggle), reg);
  return page;
}
