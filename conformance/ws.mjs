// A graphql-ws client (the npm package third-party frontends use) against a
// live Rapport. Environment:
//   RAPPORT_WS_URL        ws://host:port/graphql
//   RAPPORT_TOKEN         an access token of the workspace's agency
//   RAPPORT_OTHER_TOKEN   an access token of another agency
//   RAPPORT_WORKSPACE_ID  the workspace to watch
//   RAPPORT_WEBHOOK_URL   a GENERIC channel's webhook URL in that workspace
//   RAPPORT_WEBHOOK_SECRET its signing secret
//   RAPPORT_REDIS_URL     the server's Redis, and RAPPORT_LIVE_CHANNELS the
//                         pub/sub channels its subscriptions listen on
//                         (comma-separated): the webhook is sent once the
//                         server holds them, not after a guessed pause
// Checks: without a token and with another agency's token the subscription
// is refused; with the JWT in connection_init, a signed webhook delivery
// arrives as a conversationUpdated event and then as an slaAlerts warning.
import { createClient } from 'graphql-ws';
import WebSocket from 'ws';
import { createHmac } from 'node:crypto';
import { connect } from 'node:net';

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set`);
  return v;
};
const url = env('RAPPORT_WS_URL');
const workspaceId = env('RAPPORT_WORKSPACE_ID');

const CONVERSATIONS = `subscription($w: ID!) { conversationUpdated(workspaceId: $w) { workspaceId conversationId event } }`;
const ALERTS = `subscription($w: ID!) { slaAlerts(workspaceId: $w) { kind target conversationId } }`;

function client(token) {
  return createClient({
    url,
    webSocketImpl: WebSocket,
    lazy: true,
    retryAttempts: 0,
    connectionParams: token ? { Authorization: `Bearer ${token}` } : {},
  });
}

// Resolves with the first event, rejects with the first error or on timeout.
function first(c, query, ms) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no event within ${ms} ms`)), ms);
    const stop = c.subscribe(
      { query, variables: { w: workspaceId } },
      {
        next: (v) => {
          clearTimeout(timer);
          stop();
          if (v.errors) reject(Object.assign(new Error('refused'), { errors: v.errors }));
          else resolve(v.data);
        },
        error: (e) => {
          clearTimeout(timer);
          reject(e);
        },
        complete: () => {},
      },
    );
  });
}

async function refused(token, what) {
  const c = client(token);
  try {
    await first(c, CONVERSATIONS, 10000);
    throw new Error(`${what}: an event arrived`);
  } catch (e) {
    if (e.message.startsWith(what)) throw e;
    const code = e.errors?.[0]?.extensions?.code ?? e.code ?? e.message;
    console.log(`refused ${what}: ${JSON.stringify(code)}`);
    return code;
  } finally {
    await c.dispose();
  }
}

// Subscriber counts of the channels, asked of Redis in its inline
// protocol (PUBSUB NUMSUB answers channel, count pairs); an error reply,
// a closed connection or 5 s of silence rejects.
function subscriberCounts(channels) {
  const { hostname, port, username, password } = new URL(env('RAPPORT_REDIS_URL'));
  return new Promise((resolve, reject) => {
    const sock = connect(Number(port || 6379), hostname || '127.0.0.1');
    let reply = '';
    let done = false;
    const finish = (f, v) => {
      if (done) return;
      done = true;
      sock.destroy();
      f(v);
    };
    sock.setTimeout(5000, () => finish(reject, new Error('Redis did not answer PUBSUB NUMSUB')));
    sock.on('connect', () => {
      const auth = password
        ? `AUTH ${[username, password].filter(Boolean).map(decodeURIComponent).join(' ')}\r\n`
        : '';
      sock.write(`${auth}PUBSUB NUMSUB ${channels.join(' ')}\r\n`);
    });
    sock.on('data', (d) => {
      reply += d;
      const error = reply.match(/^-(.*)\r$/m);
      if (error) return finish(reject, new Error(`Redis: ${error[1]}`));
      const counts = [...reply.matchAll(/^:(\d+)\r$/gm)].map((m) => Number(m[1]));
      if (counts.length === channels.length) finish(resolve, counts);
    });
    sock.on('error', (e) => finish(reject, e));
    sock.on('close', () => finish(reject, new Error('Redis closed the connection')));
  });
}

async function subscribed(ms) {
  const channels = env('RAPPORT_LIVE_CHANNELS').split(',');
  const deadline = Date.now() + ms;
  for (;;) {
    const counts = await subscriberCounts(channels);
    if (counts.every((n) => n > 0)) return;
    if (Date.now() > deadline) throw new Error(`subscriptions not live within ${ms} ms: ${counts}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function deliverWebhook() {
  const body = JSON.stringify({
    events: [
      {
        id: `ws-${Date.now()}`,
        text: 'The app charged me twice and nobody answers, really unhappy',
        published_at: new Date().toISOString(),
        author: { id: 'ws-client-author', handle: 'ws_client_author', followers: 1200 },
      },
    ],
  });
  const t = Math.floor(Date.now() / 1000);
  const sig = createHmac('sha256', env('RAPPORT_WEBHOOK_SECRET')).update(`${t}.${body}`).digest('hex');
  const r = await fetch(env('RAPPORT_WEBHOOK_URL'), {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-rapport-signature': `t=${t},v1=${sig}` },
    body,
  });
  if (r.status !== 200) throw new Error(`webhook answered ${r.status}: ${await r.text()}`);
}

const anonymous = await refused(undefined, 'without a token');
const other = await refused(env('RAPPORT_OTHER_TOKEN'), "with another agency's token");
if (anonymous !== 'UNAUTHENTICATED') throw new Error(`expected UNAUTHENTICATED, got ${anonymous}`);
if (other !== 'NOT_FOUND') throw new Error(`expected NOT_FOUND, got ${other}`);

const c = client(env('RAPPORT_TOKEN'));
const conversation = first(c, CONVERSATIONS, 20000);
const alert = first(c, ALERTS, 30000);
// Both subscriptions are live before the webhook is sent.
await subscribed(20000);
await deliverWebhook();
const got = await conversation;
console.log(`conversationUpdated: ${JSON.stringify(got.conversationUpdated)}`);
if (got.conversationUpdated.workspaceId !== workspaceId) throw new Error('wrong workspace');
const sla = await alert;
console.log(`slaAlerts: ${JSON.stringify(sla.slaAlerts)}`);
if (sla.slaAlerts.kind !== 'SLA_WARNING') throw new Error(`expected SLA_WARNING, got ${sla.slaAlerts.kind}`);
if (sla.slaAlerts.conversationId !== got.conversationUpdated.conversationId) throw new Error('alert for another conversation');
await c.dispose();
console.log('graphql-ws: ok');
