// keyledger's dashboard: the customer area as one page of plain modules.
// Routes are URL fragments (#/orders, #/orders/ID, #/licenses, #/assigned,
// #/actions, #/requests, #/danger); each view builds its own DOM.
import { gql, hooks, session } from './api.js';
import { describeError, h, mount } from './dom.js';
import { NotificationPanel, forgetPanels } from './live.js';
import { ME, signInView, verifyBanner } from './views/account.js';
import { orderView, ordersView } from './views/orders.js';
import { actionsView, assignedView, licensesView } from './views/licenses.js';
import { requestsView } from './views/requests.js';
import { dangerView } from './views/danger.js';

const main = document.getElementById('main');
const nav = document.getElementById('nav');
const who = document.getElementById('who');
const signOutButton = document.getElementById('sign-out');
const aside = document.getElementById('notifications');

const state = { me: null, panel: null, onEvent: null };

const ROUTES = [
  [/^\/orders$/, ordersView],
  [/^\/orders\/([^/]+)$/, orderView],
  [/^\/licenses$/, licensesView],
  [/^\/assigned$/, assignedView],
  [/^\/actions$/, actionsView],
  [/^\/requests$/, requestsView],
  [/^\/danger$/, dangerView],
];

async function start() {
  hooks.unauthenticated = () => signedOut('Your session has ended: sign in again.');
  signOutButton.addEventListener('click', signOut);
  window.addEventListener('hashchange', () => route(true));
  if (session.token) {
    try {
      state.me = (await gql(ME)).me;
    } catch {
      state.me = null;
    }
  }
  if (state.me) signedIn();
  else signedOut();
}

function signedIn() {
  nav.hidden = false;
  signOutButton.hidden = false;
  who.textContent = state.me.email;
  state.panel = new NotificationPanel({
    aside,
    list: document.getElementById('events'),
    status: document.getElementById('live-status'),
    accountId: state.me.id,
    onEvent: (event) => state.onEvent && state.onEvent(event),
    onUnauthenticated: () => signedOut('Your session has ended: sign in again.'),
  });
  state.panel.start();
  route(false);
}

function signedOut(message) {
  session.token = null;
  state.me = null;
  state.onEvent = null;
  if (state.panel) state.panel.stop();
  state.panel = null;
  nav.hidden = true;
  signOutButton.hidden = true;
  who.textContent = '';
  const container = h('div');
  mount(main, container);
  signInView(container, {
    message,
    signedIn: async (token) => {
      session.token = token;
      state.me = (await gql(ME)).me;
      if (!window.location.hash.startsWith('#/')) window.location.hash = '#/orders';
      signedIn();
    },
  });
}

async function signOut() {
  try {
    await gql('mutation { signOut }');
  } catch {
    // The token is forgotten here whatever the server answered.
  }
  forgetPanels();
  signedOut('You are signed out.');
}

/** Render the view the fragment names; `focus` moves focus to it (navigation). */
async function route(focus) {
  if (!state.me) return;
  const path = window.location.hash.replace(/^#/, '') || '/orders';
  let view = null;
  let params = [];
  for (const [pattern, candidate] of ROUTES) {
    const match = pattern.exec(path);
    if (match) {
      view = candidate;
      params = match.slice(1).map(decodeURIComponent);
      break;
    }
  }
  for (const link of nav.querySelectorAll('a')) {
    const current = path === link.hash.slice(1) || path.startsWith(`${link.hash.slice(1)}/`);
    if (current) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  state.onEvent = null;
  const container = h('div', { 'data-view': path });
  mount(main, verifyBanner(state.me), container);
  if (focus) main.focus();
  if (!view) {
    mount(container, h('h1', {}, 'Not found'), h('p', {}, h('a', { href: '#/orders' }, 'Back to your orders')));
    return;
  }
  const ctx = {
    me: state.me,
    refresh: () => route(false),
    setMe: (me) => { state.me = { ...state.me, ...me }; ctx.me = state.me; },
  };
  try {
    const onEvent = await view(container, ctx, ...params);
    if (container.isConnected) state.onEvent = onEvent || null;
  } catch (error) {
    if (container.isConnected) mount(container, h('p', { class: 'error', role: 'alert' }, describeError(error)));
  }
}

start();
