// The web page's entry point: takes a token handed back in the URL fragment
// (OAuth), loads the signed-in user, draws the navigation and routes
// `#/page` hashes to the page modules.

import { api, session, h, destroyCharts, errorBox, loading } from './js/lib.js';
import { signInPage } from './js/auth.js';
import { usagePage } from './js/usage.js';
import { keysPage } from './js/keys.js';
import { usersPage, plansPage, providersPage } from './js/admin.js';
import { adminUsagePage, requestsPage } from './js/admin_usage.js';

const view = document.getElementById('view');
const nav = document.getElementById('nav');
const account = document.getElementById('account');

const routes = {
  '/usage': { title: 'My usage', render: usagePage },
  '/keys': { title: 'API keys', render: keysPage },
  '/admin/users': { title: 'Users', render: usersPage, admin: true },
  '/admin/plans': { title: 'Plans', render: plansPage, admin: true },
  '/admin/providers': { title: 'Providers', render: providersPage, admin: true },
  '/admin/usage': { title: 'All usage', render: adminUsagePage, admin: true },
  '/admin/requests': { title: 'Request log', render: requestsPage, admin: true },
};

/** A token handed back by OAuth as `#access_token=…` is stored, then the fragment cleared. */
function takeTokenFromFragment() {
  const frag = location.hash.replace(/^#\/?/, '');
  if (!/(^|&)(access_token|error)=/.test(frag)) return null;
  const params = new URLSearchParams(frag);
  const token = params.get('access_token');
  history.replaceState(null, '', `${location.pathname}${location.search}#/usage`);
  if (token) {
    session.token = token;
    return null;
  }
  return params.get('error_description') || params.get('error') || 'Sign-in was not completed.';
}

function signOut(message) {
  session.token = null;
  session.user = null;
  drawChrome();
  location.hash = '#/login';
  if (message) sessionStorage.setItem('tollgate.notice', message);
  route();
}

session.onExpired = () => signOut('Your session has ended. Sign in again.');

function drawChrome() {
  const u = session.user;
  nav.hidden = !u;
  account.hidden = !u;
  nav.replaceChildren();
  account.replaceChildren();
  if (!u) return;
  const link = (path) => h('a', { href: `#${path}`, dataset: { path } }, routes[path].title);
  nav.append(link('/usage'), link('/keys'));
  if (u.role === 'admin') {
    nav.append(h('span', { class: 'nav-sep', 'aria-hidden': 'true' }),
      h('span', { class: 'nav-group' }, 'Admin'),
      link('/admin/users'), link('/admin/plans'), link('/admin/providers'), link('/admin/usage'), link('/admin/requests'));
  }
  account.append(
    h('span', { class: 'who' }, h('span', { class: 'sr-only' }, 'Signed in as '), u.username, u.role === 'admin' ? h('span', { class: 'badge admin' }, 'admin') : null),
    h('button', { type: 'button', class: 'secondary small', onclick: () => signOut('You are signed out.') }, 'Sign out'));
}

function markCurrent(path) {
  for (const a of nav.querySelectorAll('a')) {
    if (a.dataset.path === path) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
}

async function loadUser() {
  if (!session.token) return null;
  try {
    session.user = await api('GET', '/auth/me');
  } catch (e) {
    session.user = null;
    if (e.status === 401 || e.status === 403) {
      session.token = null;
      sessionStorage.setItem('tollgate.notice', e.status === 403 ? e.message : 'Your session has ended. Sign in again.');
      return null;
    }
    throw e;
  }
  return session.user;
}

let routeSeq = 0;

async function route() {
  const seq = ++routeSeq;
  destroyCharts();
  const path = location.hash.replace(/^#/, '').split('?')[0] || '/usage';
  if (!session.user) {
    if (path !== '/login') {
      history.replaceState(null, '', '#/login');
    }
    document.title = 'Sign in · tollgate';
    markCurrent(null);
    const notice = sessionStorage.getItem('tollgate.notice');
    sessionStorage.removeItem('tollgate.notice');
    view.replaceChildren(signInPage({ notice, onSignedIn }));
    return;
  }
  let r = routes[path];
  if (!r || (r.admin && session.user.role !== 'admin')) {
    history.replaceState(null, '', '#/usage');
    r = routes['/usage'];
  }
  document.title = `${r.title} · tollgate`;
  markCurrent(location.hash.replace(/^#/, ''));
  const section = h('section', { class: 'page', 'aria-labelledby': 'page-title' });
  view.replaceChildren(section);
  try {
    await r.render(section, session.user, () => seq === routeSeq);
  } catch (e) {
    if (seq === routeSeq) section.append(errorBox(e));
  }
}

async function onSignedIn() {
  view.replaceChildren(loading('your account'));
  await loadUser();
  drawChrome();
  if (location.hash === '#/login' || !location.hash) location.hash = '#/usage';
  else route();
}

async function start() {
  const oauthError = takeTokenFromFragment();
  if (oauthError) sessionStorage.setItem('tollgate.notice', oauthError);
  view.replaceChildren(loading('tollgate'));
  try {
    await loadUser();
  } catch (e) {
    view.replaceChildren(errorBox(e));
    return;
  }
  drawChrome();
  window.addEventListener('hashchange', () => {
    if (takeTokenFromFragment() === null && session.token && !session.user) {
      onSignedIn();
      return;
    }
    route();
  });
  route();
}

start();
