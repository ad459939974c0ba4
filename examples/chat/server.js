// server.js - an example chat server on @presenced/client (issue 12).
//
// A plain `ws` WebSocket server: each browser tab that connects is a device
// of its user (connect), closing it disconnects, a message from it is
// activity (throttled to one every 5 s per tab). The page (public/) asks
// to watch its friends; the server runs a race-free watch per tab and
// forwards each state. Messages typed in a tab go to every tab.
//
//   node examples/chat/server.js          (or: make example-chat, against make up)
//
// Settings (environment):
//   CHAT_ADDR                  HOST:PORT to serve on (127.0.0.1:8090)
//   PRESENCE_NATS_URL          NATS URL(s), comma-separated (nats://127.0.0.1:4222)
//   PRESENCE_NATS_USER, PRESENCE_NATS_PASSWORD
//                              the socket server's NATS user (make up: sockets-n1)
//   CHAT_NODES                 presence nodes, failover order (n1)
//   CHAT_SERVER_ID             this socket server's id (chat-<port>)
//   CHAT_WATCH_NKEY_SEED_FILE  a watcher's NKey seed: watches and queries go
//                              through a second connection with it (make up's
//                              socket-server users may not send queries)
//   PRESENCE_SUBJECT_PREFIX    (presence)
import http from 'node:http';
import { readFileSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { WebSocketServer } from 'ws';
import { nkeyAuthenticator } from 'nats';
import { createClient } from '@presenced/client';

const here = dirname(fileURLToPath(import.meta.url));
const env = process.env;
const [host, port] = (env.CHAT_ADDR ?? '127.0.0.1:8090').split(':');
const servers = (env.PRESENCE_NATS_URL ?? 'nats://127.0.0.1:4222').split(',');
const nodes = (env.CHAT_NODES ?? 'n1').split(',').filter(Boolean);
const serverId = env.CHAT_SERVER_ID ?? `chat-${port}`;
const subjectPrefix = env.PRESENCE_SUBJECT_PREFIX ?? 'presence';
const ID = /^[A-Za-z0-9._:@=+-]{1,128}$/; // the protocol's ids (docs/protocol.md)
const ACTIVITY_EVERY_MS = 5000;

const log = (...a) => console.log(new Date().toISOString(), ...a);

const sockets = new Map(); // conn -> { ws, user, device, watch, lastActivity }
let nextConn = 0;

const natsOptions = env.PRESENCE_NATS_USER
  ? { user: env.PRESENCE_NATS_USER, pass: env.PRESENCE_NATS_PASSWORD ?? '' } : {};
const pc = await createClient({
  servers, natsOptions, nodes, serverId, subjectPrefix,
  // Every sync (at start, on a resync request, after a failover) lists
  // the tabs open now.
  listConns: () => [...sockets].map(([conn, s]) => ({ conn, user: s.user, device: s.device })),
  onError: (e) => log('presence:', e.code ?? '', e.message),
});
const watcher = env.CHAT_WATCH_NKEY_SEED_FILE
  ? await createClient({
    servers, subjectPrefix,
    natsOptions: { authenticator: nkeyAuthenticator(new TextEncoder().encode(readFileSync(env.CHAT_WATCH_NKEY_SEED_FILE, 'utf8').trim())) },
  })
  : pc;

const send = (ws, msg) => { if (ws.readyState === ws.OPEN) ws.send(JSON.stringify(msg)); };
const report = (ws, what) => (e) => send(ws, { type: 'error', message: `${what}: ${e.code ?? ''} ${e.message}` });

const page = readFileSync(join(here, 'public', 'index.html'));
const httpServer = http.createServer((req, res) => {
  if (req.method === 'GET' && (req.url === '/' || req.url === '/index.html')) {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
    res.end(page);
  } else {
    res.writeHead(404, { 'content-type': 'text/plain' });
    res.end('not found\n');
  }
});

const wss = new WebSocketServer({ server: httpServer, path: '/ws', maxPayload: 64 * 1024 });
wss.on('connection', (ws, req) => {
  const q = new URL(req.url, 'http://x').searchParams;
  const user = q.get('user') ?? '';
  const device = (q.get('device') || 'web').slice(0, 32);
  if (!ID.test(user) || !ID.test(device)) {
    send(ws, { type: 'error', message: 'user (and device) must be 1-128 of A-Z a-z 0-9 . _ : @ = + -' });
    ws.close(1008, 'bad user');
    return;
  }
  const conn = `${serverId}.${++nextConn}`;
  const s = { ws, user, device, watch: null, watchGen: 0, lastActivity: Date.now() };
  sockets.set(conn, s);
  pc.connect(conn, user, device).then(
    () => send(ws, { type: 'hello', user, conn }),
    report(ws, 'connect'));

  ws.on('message', async (data) => {
    let m;
    try {
      m = JSON.parse(data.toString());
    } catch {
      return send(ws, { type: 'error', message: 'not JSON' });
    }
    const now = Date.now();
    if (m?.type !== 'idle' && now - s.lastActivity >= ACTIVITY_EVERY_MS) { // throttled: a device stays active for minutes
      s.lastActivity = now;
      pc.activity(conn).catch(report(ws, 'activity'));
    }
    switch (m && m.type) {
    case 'watch': {
      const users = Array.isArray(m.users) ? m.users.filter((u) => typeof u === 'string' && ID.test(u)).slice(0, 1000) : [];
      const gen = ++s.watchGen; // the latest request wins
      if (s.watch) s.watch.stop();
      s.watch = null;
      if (!users.length) return;
      try {
        const w = await watcher.watch(users, (st) => send(ws, {
          type: 'presence', user: st.user, status: st.status, text: st.text, emoji: st.emoji,
          lastSeen: st.lastSeen, initial: st.initial,
        }));
        if (sockets.get(conn) === s && gen === s.watchGen) s.watch = w;
        else w.stop(); // the tab closed, or asked again, meanwhile
      } catch (e) {
        report(ws, 'watch')(e);
      }
      return;
    }
    case 'status':
      return pc.status(user, String(m.status)).catch(report(ws, 'status'));
    case 'custom':
      return pc.custom(user, String(m.text ?? ''), { emoji: m.emoji ? String(m.emoji) : undefined }).catch(report(ws, 'custom'));
    case 'idle':
      return pc.idle(conn).catch(report(ws, 'idle'));
    case 'say': {
      const text = String(m.text ?? '').slice(0, 1000);
      for (const o of sockets.values()) send(o.ws, { type: 'said', user, text });
      return;
    }
    default:
      return send(ws, { type: 'error', message: `unknown message type ${m && m.type}` });
    }
  });

  ws.on('close', () => {
    sockets.delete(conn);
    if (s.watch) s.watch.stop();
    pc.disconnect(conn).catch((e) => log('disconnect', conn, e.code, e.message));
  });
});

httpServer.listen(Number(port), host, () => {
  log(`chat: serving http://${host}:${httpServer.address().port}/ as socket server ${serverId} on node(s) ${nodes.join(',')}`);
});

let stopping = false;
async function stop(sig) {
  if (stopping) return;
  stopping = true;
  log(`chat: ${sig}: stopping`);
  for (const c of wss.clients) c.terminate();
  wss.close();
  httpServer.close();
  await pc.close({ shutdown: true }); // the node ends this server's connections at once
  if (watcher !== pc) await watcher.close();
  process.exit(0);
}
process.on('SIGINT', () => stop('SIGINT'));
process.on('SIGTERM', () => stop('SIGTERM'));
