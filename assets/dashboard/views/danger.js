// Danger zone: transfer an order to another account, and the transfers
// under way (the new owner confirms from the link emailed to them).
import { gql } from '../api.js';
import { actionButton, field, h, mount, onSubmit, table, time } from '../dom.js';
import { allOrders } from './orders.js';

const TRANSFERS = `query($d: Direction!) { orderTransfers(direction: $d) {
  id status orderNumber fromEmail toEmail createdAt expiresAt } }`;

const STATUS = { PENDING: 'Waiting for the new owner', ACCEPTED: 'Accepted', CANCELLED: 'Cancelled', EXPIRED: 'Expired' };

export async function dangerView(container, ctx) {
  mount(container, h('h1', {}, 'Danger zone'), h('p', { class: 'muted' }, 'Loading…'));
  const [orders, outgoing, incoming] = await Promise.all([
    allOrders(),
    gql(TRANSFERS, { d: 'OUTGOING' }),
    gql(TRANSFERS, { d: 'INCOMING' }),
  ]);
  const form = onSubmit(
    h('form', { id: 'transfer', 'aria-labelledby': 'transfer-title' },
      h('h2', { id: 'transfer-title' }, 'Transfer ownership of an order'),
      h('p', { class: 'muted' }, 'The new owner gets every key of the order and the right to assign them; you lose yours. '
        + 'Both of you are emailed; the transfer completes when they confirm (the link is valid 7 days). '
        + 'Keys active on devices must be deactivated first.'),
      field('Order', { name: 'orderId', required: true }, 'select'),
      field('Email of the new owner', { name: 'newOwnerEmail', type: 'email', required: true }),
      h('button', { type: 'submit', class: 'danger' }, 'Transfer')),
    ({ orderId, newOwnerEmail }) => gql(
      'mutation($o: ID!, $e: String!) { startOrderTransfer(orderId: $o, newOwnerEmail: $e) { id } }',
      { o: orderId, e: newOwnerEmail },
    ),
    () => ctx.refresh(),
  );
  form.elements.orderId.append(...orders.map((o) => h('option', { value: o.id }, `${o.number} — ${o.productName} (${o.quantity})`)));
  mount(container, h('h1', {}, 'Danger zone'),
    h('section', {}, form),
    h('section', { 'aria-labelledby': 'out-title' }, h('h2', { id: 'out-title' }, 'Transfers you started'),
      table(['Order', 'To', 'Status', 'Started', ''], outgoing.orderTransfers.map((t) => [
        t.orderNumber, t.toEmail, STATUS[t.status] || t.status, time(t.createdAt),
        t.status === 'PENDING' ? actionButton('Cancel', async () => {
          await gql('mutation($t: ID!) { cancelOrderTransfer(transferId: $t) { id status } }', { t: t.id });
          ctx.refresh();
        }, { class: 'secondary', 'aria-label': `Cancel the transfer of order ${t.orderNumber}` }) : '',
      ]), 'No transfer.')),
    h('section', { 'aria-labelledby': 'in-title' }, h('h2', { id: 'in-title' }, 'Transfers to you'),
      h('p', { class: 'muted' }, 'Confirm one from the link in the email it sent you.'),
      table(['Order', 'From', 'Status', 'Expires'], incoming.orderTransfers.map((t) => [
        t.orderNumber, t.fromEmail, STATUS[t.status] || t.status, time(t.expiresAt),
      ]), 'No transfer.')));
}
