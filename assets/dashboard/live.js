// The live notification panel: the account's events as they happen, over
// one resumable subscription. The cursor of the last event shown and the
// panel's items are kept in sessionStorage, so a lost connection or a
// reload resumes right after it: nothing missed, nothing shown twice.
import { LiveSubscription } from './api.js';
import { h, mount, time } from './dom.js';

const MAX_SHOWN = 50;

const QUERY = `subscription($after: ID) {
  events(after: $after) {
    id kind occurredAt
    actor { email }
    order { number }
    license { key }
    claim { status claimer { email } }
    request { buyerEmail requester { email } }
    transfer { orderNumber fromEmail toEmail }
  }
}`;

const LABELS = {
  CLAIM_CREATED: 'New claim',
  CLAIM_APPROVED: 'Claim approved',
  CLAIM_DECLINED: 'Claim declined',
  REQUEST_CREATED: 'New license request',
  REQUEST_APPROVED: 'License request approved',
  REQUEST_DECLINED: 'License request declined',
  REQUEST_EXPIRED: 'License request expired',
  LICENSE_ASSIGNED: 'Key assigned',
  LICENSE_UNASSIGNED: 'Key unassigned',
  ORGANIZATION_CHANGED: 'Organization changed',
  TRANSFER_STARTED: 'Order transfer started',
  TRANSFER_ACCEPTED: 'Order transfer accepted',
  TRANSFER_CANCELLED: 'Order transfer cancelled',
  DEVICE_ACTIVATED: 'Device activated',
  DEVICE_DEACTIVATED: 'Device deactivated',
  ORDER_CREATED: 'Order created',
  ORDER_PAID: 'Order paid',
  ORDER_REFUNDED: 'Order refunded',
  CLAIM_SETTINGS_CHANGED: 'Claiming settings changed',
};

/** One line saying what happened, from the event's fields (text only). */
export function describe(event) {
  const label = LABELS[event.kind] || event.kind.replaceAll('_', ' ').toLowerCase();
  const claimer = event.claim && event.claim.claimer && event.claim.claimer.email;
  const requester = event.request && event.request.requester && event.request.requester.email;
  const actor = event.actor && event.actor.email;
  const details = [
    claimer && `from ${claimer}`,
    requester && `from ${requester}`,
    !claimer && !requester && actor && `by ${actor}`,
    event.license && event.license.key && `key ${event.license.key}`,
    event.order && `order ${event.order.number}`,
    !event.order && event.transfer && `order ${event.transfer.orderNumber}`,
  ].filter(Boolean);
  return details.length ? `${label} ${details.join(', ')}` : label;
}

export class NotificationPanel {
  /** `onEvent(event)` runs for every new event (the views refresh on it). */
  constructor({ aside, list, status, accountId, onEvent, onUnauthenticated }) {
    Object.assign(this, { aside, list, status, onEvent });
    this.cursorKey = `keyledger:cursor:${accountId}`;
    this.shownKey = `keyledger:shown:${accountId}`;
    this.shown = readJson(this.shownKey, []);
    this.ids = new Set(this.shown.map((e) => e.id));
    this.subscription = new LiveSubscription({
      query: QUERY,
      variables: () => ({ after: sessionStorage.getItem(this.cursorKey) }),
      onData: (data) => this.receive(data.events),
      onStatus: (state, detail) => this.showStatus(state, detail),
      onUnauthenticated,
    });
  }

  start() {
    this.aside.hidden = false;
    mount(this.list, ...this.shown.map((e) => this.item(e)));
    this.subscription.start();
  }

  stop() {
    this.subscription.stop();
    this.aside.hidden = true;
    mount(this.list);
  }

  receive(event) {
    if (!event || this.ids.has(event.id)) return;
    this.ids.add(event.id);
    sessionStorage.setItem(this.cursorKey, event.id);
    this.shown.unshift({ id: event.id, kind: event.kind, occurredAt: event.occurredAt, text: describe(event) });
    for (const gone of this.shown.splice(MAX_SHOWN)) this.ids.delete(gone.id);
    sessionStorage.setItem(this.shownKey, JSON.stringify(this.shown));
    this.list.prepend(this.item(this.shown[0]));
    while (this.list.children.length > MAX_SHOWN) this.list.lastElementChild.remove();
    this.onEvent(event);
  }

  item(entry) {
    return h('li', { 'data-id': entry.id, 'data-kind': entry.kind }, entry.text, time(entry.occurredAt));
  }

  showStatus(state, detail) {
    const text = {
      connecting: 'Connecting…',
      live: 'Live',
      offline: `Connection lost; retrying in ${detail} s…`,
      error: `Error: ${detail && detail.code}: ${detail && detail.message}`,
    }[state];
    this.status.textContent = text;
    this.aside.dataset.state = state;
  }
}

function readJson(key, fallback) {
  try {
    return JSON.parse(sessionStorage.getItem(key)) || fallback;
  } catch {
    return fallback;
  }
}

/** Forget what the panel kept (on sign-out). */
export function forgetPanels() {
  for (const key of Object.keys(sessionStorage)) {
    if (key.startsWith('keyledger:cursor:') || key.startsWith('keyledger:shown:')) sessionStorage.removeItem(key);
  }
}
