// Licenses (the keys of my orders), Assigned licenses (keys given to me),
// and Quick actions (claim a key, request a license).
import { gql, nodes } from '../api.js';
import { field, h, mount, onSubmit, table, time } from '../dom.js';
import { allLicenses, allOrders } from './orders.js';

export async function licensesView(container) {
  mount(container, h('h1', {}, 'Licenses'), h('p', { class: 'muted' }, 'Loading…'));
  const orders = (await allOrders()).filter((o) => o.status === 'PAID');
  const perOrder = await Promise.all(orders.map((o) => allLicenses(o.id)));
  const rows = [];
  orders.forEach((order, i) => {
    for (const license of perOrder[i]) {
      rows.push([
        h('span', { class: 'key' }, license.key),
        order.productName,
        h('a', { href: `#/orders/${encodeURIComponent(order.id)}` }, order.number),
        license.assigneeEmail || h('span', { class: 'muted' }, 'Free'),
      ]);
    }
  });
  mount(container, h('h1', {}, 'Licenses'),
    h('p', { class: 'muted' }, 'The keys of your paid orders. Open an order to assign them.'),
    table(['Key', 'Product', 'Order', 'Assignee'], rows, 'No keys yet.'));
}

const ASSIGNED = `query($after: String) { assignedLicenses(first: 100, after: $after) {
  edges { node { id key productName assignedAt organization { name siret } activations { name } } }
  pageInfo { hasNextPage endCursor } } }`;

export async function assignedView(container) {
  mount(container, h('h1', {}, 'Assigned licenses'), h('p', { class: 'muted' }, 'Loading…'));
  const licenses = [];
  let after = null;
  for (;;) {
    const page = (await gql(ASSIGNED, { after })).assignedLicenses;
    licenses.push(...nodes(page));
    if (!page.pageInfo.hasNextPage) break;
    after = page.pageInfo.endCursor;
  }
  mount(container, h('h1', {}, 'Assigned licenses'), table(
    ['Key', 'Product', 'Organization', 'Devices', 'Since'],
    licenses.map((l) => [
      h('span', { class: 'key' }, l.key), l.productName,
      l.organization ? `${l.organization.name} (${l.organization.siret})` : '',
      l.activations.map((a) => a.name).join(', '), time(l.assignedAt),
    ]),
    'No key is assigned to you yet.',
  ));
}

const OUTCOMES = {
  LINKED: 'The key is now yours: see Assigned licenses.',
  PENDING: 'The key\'s owner approves claims by hand: you will get an email once they decide.',
  ALREADY_YOURS: 'This key is already yours.',
};

export function actionsView(container) {
  const claim = onSubmit(
    h('form', { id: 'claim', 'aria-labelledby': 'claim-title' },
      h('h2', { id: 'claim-title' }, 'Claim a key'),
      field('Key (XXXX-XXXX-XXXX-XXXX)', { name: 'key', required: true, autocomplete: 'off', maxlength: 64, spellcheck: 'false' }),
      h('button', { type: 'submit' }, 'Claim')),
    async ({ key }) => (await gql('mutation($k: String!) { claimLicense(key: $k) { outcome } }', { k: key })).claimLicense,
    (result, note) => {
      note.className = 'form-message ok';
      note.textContent = OUTCOMES[result.outcome] || result.outcome;
    },
  );
  const request = onSubmit(
    h('form', { id: 'request', 'aria-labelledby': 'request-title' },
      h('h2', { id: 'request-title' }, 'Request a license'),
      field('Buyer\'s email', { name: 'buyerEmail', type: 'email', required: true }),
      field('Message (optional)', { name: 'message', maxlength: 1000, rows: 3 }, 'textarea'),
      h('button', { type: 'submit' }, 'Send request')),
    async ({ buyerEmail, message }) => gql(
      'mutation($input: RequestLicenseInput!) { requestLicense(input: $input) { request { id status } } }',
      { input: { buyerEmail, message: message || null } },
    ),
    (_, note) => {
      note.className = 'form-message ok';
      note.textContent = 'Request sent. The buyer is notified; you will get an email once they decide (requests expire after 7 days).';
    },
  );
  mount(container, h('h1', {}, 'Quick actions'),
    h('div', { class: 'grid2' }, h('section', {}, claim), h('section', {}, request)));
}
