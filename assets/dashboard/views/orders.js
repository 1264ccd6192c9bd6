// Orders and an order's detail: its keys, assigning, the per-order
// manual-approval override, and the devices of each key.
import { gql, nodes } from '../api.js';
import { actionButton, describeError, field, h, mount, onSubmit, table, time } from '../dom.js';

export const ORDERS = `query($after: String) { orders(first: 100, after: $after) {
  edges { node { id number product productName quantity status createdAt paidAt } }
  pageInfo { hasNextPage endCursor } } }`;

/** Every order the caller manages (all pages). */
export async function allOrders() {
  const orders = [];
  let after = null;
  for (;;) {
    const page = (await gql(ORDERS, { after })).orders;
    orders.push(...nodes(page));
    if (!page.pageInfo.hasNextPage) return orders;
    after = page.pageInfo.endCursor;
  }
}

const LICENSES = `query($id: ID!, $after: String, $status: LicenseStatus) { order(id: $id) {
  licenses(first: 100, after: $after, status: $status) {
    edges { node { id key status assigneeEmail assignedAt organization { name siret }
      activations { fingerprint name activatedAt } } }
    pageInfo { hasNextPage endCursor } } } }`;

/** Every key of an order (all pages), optionally only `status` ones. */
export async function allLicenses(orderId, status = null) {
  const licenses = [];
  let after = null;
  for (;;) {
    const page = (await gql(LICENSES, { id: orderId, after, status })).order.licenses;
    licenses.push(...nodes(page));
    if (!page.pageInfo.hasNextPage) return licenses;
    after = page.pageInfo.endCursor;
  }
}

const STATUS = { PENDING_PAYMENT: 'Waiting for payment', PAID: 'Paid', REFUNDED: 'Refunded' };

export async function ordersView(container) {
  mount(container, h('h1', {}, 'Orders'), h('p', { class: 'muted' }, 'Loading…'));
  const orders = await allOrders();
  mount(container, h('h1', {}, 'Orders'), table(
    ['Order', 'Product', 'Keys', 'Status', 'Created'],
    orders.map((o) => [
      h('a', { href: `#/orders/${encodeURIComponent(o.id)}` }, o.number),
      o.productName, String(o.quantity), STATUS[o.status] || o.status, time(o.createdAt),
    ]),
    'No orders yet. Keys you buy appear here once the order is paid.',
  ));
}

const ORDER = `query($id: ID!) { order(id: $id) {
  id number productName quantity status createdAt paidAt deviceLimit requireManualApproval } }`;

export async function orderView(container, ctx, id) {
  mount(container, h('h1', {}, 'Order'), h('p', { class: 'muted' }, 'Loading…'));
  const [{ order }, licenses] = await Promise.all([gql(ORDER, { id }), allLicenses(id)]);
  const inherited = ctx.me.claimSettings && ctx.me.claimSettings.requireManualApproval ? 'on' : 'off';
  mount(container,
    h('p', {}, h('a', { href: '#/orders' }, '← Orders')),
    h('h1', {}, `Order ${order.number}`),
    h('p', {}, `${order.productName} · ${order.quantity} keys · ${STATUS[order.status] || order.status}`,
      order.paidAt ? ' on ' : '', order.paidAt ? time(order.paidAt) : '',
      ` · up to ${order.deviceLimit} device(s) per key`),
    approvalOverride(order, inherited),
    h('section', { 'aria-labelledby': 'keys-title' },
      h('h2', { id: 'keys-title' }, 'Keys'),
      table(['Key', 'Status', 'Assignee', 'Devices', 'Actions'],
        licenses.map((license) => keyRow(license, ctx)),
        order.status === 'PAID' ? 'This order has no keys.' : 'Keys appear once the order is paid.')),
  );
}

function approvalOverride(order, inherited) {
  const value = order.requireManualApproval === null ? 'inherit' : order.requireManualApproval ? 'on' : 'off';
  const select = h('select', { name: 'requireManualApproval', id: 'order-approval' },
    h('option', { value: 'inherit' }, `As in my claiming settings (${inherited})`),
    h('option', { value: 'on' }, 'Always require manual approval'),
    h('option', { value: 'off' }, 'Never require manual approval'));
  select.value = value;
  const note = h('span', { role: 'status' });
  select.addEventListener('change', async () => {
    note.textContent = '';
    note.className = '';
    const chosen = { inherit: null, on: true, off: false }[select.value];
    try {
      await gql('mutation($o: ID!, $v: Boolean) { setOrderManualApproval(orderId: $o, value: $v) { id requireManualApproval } }',
        { o: order.id, v: chosen });
      note.textContent = 'Saved.';
      note.className = 'ok';
    } catch (error) {
      note.textContent = describeError(error);
      note.className = 'error';
    }
  });
  return h('section', { 'aria-labelledby': 'approval-title' },
    h('h2', { id: 'approval-title' }, 'Claims on this order'),
    h('label', { for: 'order-approval' }, 'Manual approval of claims', select), note);
}

function keyRow(license, ctx) {
  const assignee = license.assigneeEmail
    ? [license.assigneeEmail,
      license.organization ? h('div', { class: 'muted' }, `${license.organization.name} (SIRET ${license.organization.siret})`) : null]
    : h('span', { class: 'muted' }, 'Free');
  const devices = license.activations.length
    ? h('ul', {}, license.activations.map((device) => h('li', {},
      `${device.name} `, h('code', {}, device.fingerprint), ' ',
      actionButton('Deactivate', async () => {
        await gql('mutation($l: ID!, $f: String!) { deactivateDevice(licenseId: $l, fingerprint: $f) { fingerprint } }',
          { l: license.id, f: device.fingerprint });
        ctx.refresh();
      }, { class: 'secondary', 'aria-label': `Deactivate ${device.name}` }))))
    : h('span', { class: 'muted' }, 'None');
  const assign = onSubmit(
    h('form', { class: 'assign', 'aria-label': `Assign ${license.key}` },
      field('Email of the person who will use the key', { name: 'email', type: 'email', required: true, autocomplete: 'off' }),
      field('Organization name (optional)', { name: 'organization.name', maxlength: 200 }),
      field('SIRET (14 digits, with the name)', { name: 'organization.siret', inputmode: 'numeric', maxlength: 14 }),
      h('button', { type: 'submit' }, license.assigneeEmail ? 'Reassign' : 'Assign')),
    async (values) => {
      const name = values['organization.name'].trim();
      const siret = values['organization.siret'].trim();
      const organization = name || siret ? { name: name || null, siret: siret || null } : null;
      await gql(`mutation($input: AssignLicenseInput!) { assignLicense(input: $input) { id status assigneeEmail } }`,
        { input: { licenseId: license.id, email: values.email, organization } });
    },
    () => ctx.refresh(),
  );
  const actions = h('div', {},
    h('details', {}, h('summary', {}, license.assigneeEmail ? 'Reassign' : 'Assign'), assign),
    license.assigneeEmail ? actionButton('Unassign', async () => {
      await gql('mutation($l: ID!) { unassignLicense(licenseId: $l) { id } }', { l: license.id });
      ctx.refresh();
    }, { class: 'secondary', 'aria-label': `Unassign ${license.key}` }) : null);
  return [
    h('span', { class: 'key', 'data-license-id': license.id }, license.key),
    license.status === 'ASSIGNED' ? 'Assigned' : 'Unassigned',
    assignee, devices, actions,
  ];
}
