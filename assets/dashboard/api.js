// The public GraphQL API over HTTP: the dashboard uses nothing else.

const TOKEN_KEY = 'keyledger:token';

/** The session token, kept for this tab only. */
export const session = {
  get token() { return sessionStorage.getItem(TOKEN_KEY); },
  set token(value) {
    if (value) sessionStorage.setItem(TOKEN_KEY, value);
    else sessionStorage.removeItem(TOKEN_KEY);
  },
};

/** A GraphQL error: `code` is `extensions.code`, `field` names the input at fault. */
export class ApiError extends Error {
  constructor(message, code, field) {
    super(message);
    this.code = code;
    this.field = field;
  }
}

/** Hooks the app sets: called when the server says the token is no good. */
export const hooks = { unauthenticated: () => {} };

/** Run a query or mutation; resolves to `data`, rejects with an ApiError. */
export async function gql(query, variables = {}) {
  const headers = {
    'content-type': 'application/json',
    accept: 'application/graphql-response+json, application/json',
  };
  const token = session.token;
  if (token) headers.authorization = `Bearer ${token}`;
  let response;
  try {
    response = await fetch('/graphql', { method: 'POST', headers, body: JSON.stringify({ query, variables }) });
  } catch {
    throw new ApiError('The server cannot be reached; try again.', 'NETWORK');
  }
  let body;
  try {
    body = await response.json();
  } catch {
    throw new ApiError(`Unexpected answer (HTTP ${response.status}).`, 'INTERNAL');
  }
  if (body.errors && body.errors.length) {
    const first = body.errors[0];
    const ext = first.extensions || {};
    const error = new ApiError(first.message, ext.code || 'INTERNAL', ext.field);
    if (error.code === 'UNAUTHENTICATED' && token) hooks.unauthenticated();
    throw error;
  }
  return body.data;
}

/** The nodes of a Relay connection. */
export const nodes = (connection) => (connection ? connection.edges.map((e) => e.node) : []);

/**
 * One subscription over `GET /graphql/ws` (graphql-transport-ws), kept
 * alive: reconnects with capped, jittered back-off after any loss, asking
 * `variables()` afresh each time (so it resumes from the last event seen).
 * A ping every 15 s that gets no pong within 10 s counts as a loss (a
 * half-open connection otherwise looks alive forever).
 */
export class LiveSubscription {
  constructor({ query, variables, onData, onStatus = () => {}, onUnauthenticated = () => {} }) {
    Object.assign(this, { query, variables, onData, onStatus, onUnauthenticated });
    this.attempt = 0;
    this.stopped = false;
    this.socket = null;
    this.timers = {};
    this.reconnectNow = () => { if (!this.socket) this.connect(); };
  }

  start() {
    window.addEventListener('online', this.reconnectNow);
    this.connect();
  }

  stop() {
    this.stopped = true;
    window.removeEventListener('online', this.reconnectNow);
    this.clearTimers();
    if (this.socket) this.socket.close(1000, 'bye');
    this.socket = null;
  }

  clearTimers() {
    for (const timer of Object.values(this.timers)) clearTimeout(timer);
    this.timers = {};
  }

  connect() {
    if (this.stopped) return;
    this.clearTimers();
    const url = new URL('/graphql/ws', window.location.href);
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    this.onStatus('connecting');
    const socket = new WebSocket(url, 'graphql-transport-ws');
    this.socket = socket;
    const send = (message) => socket.readyState === WebSocket.OPEN && socket.send(JSON.stringify(message));
    socket.addEventListener('open', () => {
      send({ type: 'connection_init', payload: { authorization: `Bearer ${session.token}` } });
    });
    socket.addEventListener('message', (message) => {
      let msg;
      try { msg = JSON.parse(message.data); } catch { socket.close(4400, 'invalid message'); return; }
      clearTimeout(this.timers.pong);
      switch (msg.type) {
        case 'connection_ack':
          this.attempt = 0;
          send({ id: 'live', type: 'subscribe', payload: { query: this.query, variables: this.variables() } });
          this.onStatus('live');
          this.keepAlive(send, socket);
          break;
        case 'ping':
          send({ type: 'pong' });
          break;
        case 'next': {
          const errors = msg.payload.errors;
          if (errors && errors.length) {
            this.failed(socket, errors[0]);
          } else {
            this.onData(msg.payload.data);
          }
          break;
        }
        case 'error':
          this.failed(socket, msg.payload[0] || {});
          break;
        case 'complete':
          socket.close(1000, 'complete');
          break;
        default:
          break;
      }
    });
    socket.addEventListener('close', (event) => {
      if (this.socket !== socket) return;
      this.socket = null;
      this.clearTimers();
      if (this.stopped) return;
      if (event.code === 4401 || event.code === 4403) {
        this.stopped = true;
        this.onUnauthenticated();
        return;
      }
      this.retry();
    });
  }

  keepAlive(send, socket) {
    this.timers.ping = setTimeout(() => {
      send({ type: 'ping' });
      this.timers.pong = setTimeout(() => socket.close(4000, 'no pong'), 10000);
      this.keepAlive(send, socket);
    }, 15000);
  }

  failed(socket, error) {
    const code = error.extensions && error.extensions.code;
    if (code === 'UNAUTHENTICATED') {
      this.stopped = true;
      this.onUnauthenticated();
    }
    this.onStatus('error', new ApiError(error.message || 'subscription failed', code || 'INTERNAL'));
    socket.close(1000, 'error');
  }

  retry() {
    const delay = Math.min(30000, 500 * 2 ** this.attempt) * (0.5 + Math.random() / 2);
    this.attempt += 1;
    this.onStatus('offline', Math.round(delay / 1000));
    this.timers.retry = setTimeout(() => this.connect(), delay);
  }
}
