// Requests: the Claiming settings card, incoming claims and license
// requests to approve or decline, and the caller's own claims and requests.
// The incoming lists refresh by themselves when the panel sees a new one.
import { gql, nodes } from '../api.js';
import { actionButton, checkbox, describeError, h, mount, table, time } from '../dom.js';
import { allLicenses, allOrders } from './orders.js';

const SETTINGS = [
  ['requireManualApproval', 'Require manual approval for claims (every claim waits for you; orders may override it)'],
  ['allowOverrideAssignee', 'Allow overriding an existing assignee without approval'],
  ['notifyOnClaim', 'Email me when a key is claimed (not while manual approval applies)'],
  ['allowAssigneeOrganization', 'Allow assignees to link an organization to their license'],
];

const INCOMING = `{
  claimRequests(status: PENDING, first: 100) { edges { node {
    id createdAt claimer { email } license { id key order { number } } } } }
  licenseRequests(direction: INCOMING, status: PENDING, first: 100) { edges { node {
    id createdAt message requester { email } } } } }`;

const OUTGOING = `{
  myClaims(first: 100) { edges { node { id status createdAt decidedAt license { key } } } }
  licenseRequests(direction: OUTGOING, first: 100) { edges { node {
    id status buyerEmail message createdAt decidedAt license { key } } } } }`;

export async function requestsView(container, ctx) {
  const incoming = h('section', { id: 'incoming', 'aria-labelledby': 'incoming-title' },
    h('h2', { id: 'incoming-title' }, 'Incoming'), h('p', { class: 'muted' }, 'Loading…'));
  const outgoing = h('section', { id: 'outgoing', 'aria-labelledby': 'outgoing-title' },
    h('h2', { id: 'outgoing-title' }, 'Sent by you'));
  mount(container, h('h1', {}, 'Requests'), settingsCard(ctx), incoming, outgoing);
  await Promise.all([showIncoming(incoming), showOutgoing(outgoing)]);
  return (event) => {
    if (/^(CLAIM|REQUEST)_/.test(event.kind)) {
      showIncoming(incoming).catch(() => {});
      showOutgoing(outgoing).catch(() => {});
    }
  };
}

function settingsCard(ctx) {
  const settings = ctx.me.claimSettings;
  const note = h('p', { role: 'status' });
  const boxes = SETTINGS.map(([name, label]) => {
    const box = checkbox(label, { name, checked: settings[name] });
    box.querySelector('input').addEventListener('change', async (event) => {
      note.textContent = '';
      note.className = '';
      const input = event.target;
      try {
        const data = await gql(`mutation($input: ClaimSettingsInput!) { updateClaimSettings(input: $input) {
          claimSettings { requireManualApproval allowOverrideAssignee notifyOnClaim allowAssigneeOrganization } } }`,
        { input: { [name]: input.checked } });
        ctx.setMe({ claimSettings: data.updateClaimSettings.claimSettings });
        note.textContent = 'Saved.';
        note.className = 'ok';
      } catch (error) {
        input.checked = !input.checked;
        note.textContent = describeError(error);
        note.className = 'error';
      }
    });
    return box;
  });
  return h('section', { class: 'card', id: 'claiming-settings', 'aria-labelledby': 'settings-title' },
    h('h2', { id: 'settings-title' }, 'Claiming settings'), boxes, note);
}

async function showIncoming(section) {
  const data = await gql(INCOMING);
  const claims = nodes(data.claimRequests);
  const requests = nodes(data.licenseRequests);
  const free = requests.length ? await freeKeys() : [];
  const refresh = () => showIncoming(section);
  mount(section, h('h2', { id: 'incoming-title' }, 'Incoming'),
    h('h3', {}, 'Claims waiting for you'),
    table(['Claimed by', 'Key', 'When', ''], claims.map((claim) => [
      claim.claimer ? claim.claimer.email : '',
      claim.license ? [h('span', { class: 'key' }, claim.license.key), claim.license.order ? ` (order ${claim.license.order.number})` : ''] : '',
      time(claim.createdAt),
      h('div', { class: 'actions', 'data-claim-id': claim.id },
        actionButton('Approve', async () => {
          await gql('mutation($c: ID!) { approveClaim(claimId: $c) { id status } }', { c: claim.id });
          await refresh();
        }),
        actionButton('Decline', async () => {
          await gql('mutation($c: ID!) { declineClaim(claimId: $c) { id status } }', { c: claim.id });
          await refresh();
        }, { class: 'secondary' })),
    ]), 'No claim is waiting.'),
    h('h3', {}, 'License requests'),
    table(['From', 'Message', 'When', ''], requests.map((request) => {
      const id = `key-for-${request.id}`;
      const select = h('select', { id },
        free.length ? null : h('option', { value: '' }, 'No free key'),
        free.map((key) => h('option', { value: key.id }, `${key.key} (${key.productName}, order ${key.number})`)));
      return [
        request.requester ? request.requester.email : '',
        h('span', { class: 'message' }, request.message),
        time(request.createdAt),
        h('div', { class: 'actions', 'data-request-id': request.id },
          h('label', { for: id }, 'Key to give', select),
          actionButton('Approve', async () => {
            await gql('mutation($r: ID!, $l: ID!) { approveLicenseRequest(requestId: $r, licenseId: $l) { id status } }',
              { r: request.id, l: select.value });
            await refresh();
          }),
          actionButton('Decline', async () => {
            await gql('mutation($r: ID!) { declineLicenseRequest(requestId: $r) { id status } }', { r: request.id });
            await refresh();
          }, { class: 'secondary' })),
      ];
    }), 'No license request is waiting.'));
}

async function freeKeys() {
  const orders = (await allOrders()).filter((o) => o.status === 'PAID');
  const perOrder = await Promise.all(orders.map((o) => allLicenses(o.id, 'UNASSIGNED')));
  return orders.flatMap((order, i) => perOrder[i].map((license) => ({
    id: license.id, key: license.key, number: order.number, productName: order.productName,
  })));
}

const STATUS = { PENDING: 'Waiting', APPROVED: 'Approved', DECLINED: 'Declined', EXPIRED: 'Expired' };

async function showOutgoing(section) {
  const data = await gql(OUTGOING);
  mount(section, h('h2', { id: 'outgoing-title' }, 'Sent by you'),
    h('h3', {}, 'Your claims'),
    table(['Key', 'Status', 'When'], nodes(data.myClaims).map((claim) => [
      claim.license ? h('span', { class: 'key' }, claim.license.key) : h('span', { class: 'muted' }, 'hidden until approved'),
      STATUS[claim.status] || claim.status, time(claim.decidedAt || claim.createdAt),
    ]), 'You have not claimed a key.'),
    h('h3', {}, 'Your license requests'),
    table(['To', 'Message', 'Status', 'Key'], nodes(data.licenseRequests).map((request) => [
      request.buyerEmail, h('span', { class: 'message' }, request.message), STATUS[request.status] || request.status,
      request.license ? h('span', { class: 'key' }, request.license.key) : '',
    ]), 'You have not asked for a license.'));
}
