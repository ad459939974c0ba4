// unit.test.mjs - the client's logic over a real nats-server (no presenced):
// the test plays the node. A responder connection subscribes to the node's
// subjects, records every request it gets (`sent`) and answers with the
// case's `answer`; it publishes the notifications and resync requests the
// case needs; it withholds an answer where a case needs a node that hangs.
// Covered: batches with seq and partial replies, sync parts, failover
// ordering (on "no responders" and on no answer), resyncs heard from the
// current node only, a sync started again, the watch's ver filter with
// notifications racing the get, a lagging node's as_of, a throwing
// listConns, ids that would make wildcards.
import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { connect } from 'nats';
import { encode, decode } from '@msgpack/msgpack';
import { createClient } from '../index.js';
import { freePorts, until, sleep } from './cluster.mjs';

let nats;   // the nats-server of this file
let url;    // its client URL
let monUrl; // its monitoring URL (connz lists each connection's subscriptions)
const open = []; // responders and clients a case left open (a failed case)

before(async () => {
  const [port, mport] = freePorts(2);
  url = `nats://127.0.0.1:${port}`;
  monUrl = `http://127.0.0.1:${mport}`;
  nats = spawn('nats-server', ['-a', '127.0.0.1', '-p', String(port), '-m', String(mport)],
    { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  nats.stderr.on('data', (d) => { log = (log + d).slice(-4000); });
  nats.exited = new Promise((res) => nats.on('exit', res));
  try {
    await until('nats-server', async () => (await fetch(`${monUrl}/healthz`)).ok, 20000);
  } catch (e) {
    throw new Error(`${e.message}\n${log}`);
  }
});

after(async () => {
  nats.kill('SIGTERM');
  let t;
  await Promise.race([nats.exited, new Promise((res) => { t = setTimeout(() => { nats.kill('SIGKILL'); res(); }, 10000); })]);
  clearTimeout(t);
});

afterEach(async () => {
  for (const x of open.splice(0)) await x.close({ shutdown: false }).catch(() => {});
});

/** Starts the client under test on the file's nats-server, named `name`
 * so that connz can find it. Its request timeout is long unless a case is
 * about it: on a loaded machine a slow answer must not fail it over. */
let clients = 0;
async function client(opts, name = `pc${++clients}`) {
  const pc = await createClient({ servers: url, natsOptions: { name }, requestTimeoutMs: 20000, ...opts });
  open.push(pc);
  return pc;
}

/** The node: subscribes to `subjects` and answers each request with
 * answer(subject, msg) (may be async; WITHHOLD sends no reply). */
const WITHHOLD = Symbol('withhold');
async function responder(answer, subjects = ['presence.events.>', 'presence.query.>']) {
  const nc = await connect({ servers: url, name: 'node' });
  const node = {
    nc, sent: [],
    deliver(subject, obj) { nc.publish(subject, encode(obj, { useBigInt64: true })); },
    close: () => nc.close(),
  };
  for (const s of subjects)
    nc.subscribe(s, {
      callback: (err, m) => {
        if (err) return;
        const msg = decode(m.data);
        node.sent.push({ subject: m.subject, msg, size: m.data.length });
        Promise.resolve().then(() => answer(m.subject, msg)).then((r) => {
          if (r !== WITHHOLD) m.respond(encode(r, { useBigInt64: true }));
        }, (e) => console.error('answer threw', e));
      },
    });
  await nc.flush(); // subscribed before the client sends anything
  open.push(node);
  return node;
}

/** The subjects the connection named `name` is subscribed to, as the
 * nats-server sees them. */
async function serverSubs(name) {
  const r = await (await fetch(`${monUrl}/connz?subs=1&limit=1024`)).json();
  const conns = (r.connections ?? []).filter((c) => c.name === name);
  assert.equal(conns.length, 1, `one connection named ${name}`);
  return conns[0].subscriptions_list ?? [];
}

const OK = { ok: true };

test('a batch carries growing seq; a partial reply settles each event by index', async () => {
  const node = await responder((subj, m) => (m.type === 'batch' ? { ok: false, error: 'partial', message: '1 of 3',
    failed: [{ i: 2, error: 'unknown_conn', message: 'no such conn' }] } : OK));
  const pc = await client({ nodes: ['n1'], serverId: 's1', heartbeatMs: 600000 });
  await pc.flush(); // the first sync and heartbeat
  const ps = [pc.connect('c1', 'u1', 'web'), pc.activity('c1'), pc.activity('zz')];
  const rs = await Promise.allSettled(ps);
  assert.deepEqual(rs.map((r) => r.status), ['fulfilled', 'fulfilled', 'rejected']);
  assert.equal(rs[2].reason.code, 'unknown_conn');
  assert.equal(rs[2].reason.message, 'no such conn');
  const batches = node.sent.filter((x) => x.msg.type === 'batch');
  assert.ok(batches.length >= 2, 'the heartbeat, then the events');
  assert.deepEqual(batches.at(-1).msg.events.map((e) => e.type), ['connect', 'activity', 'activity']);
  const seqs = batches.flatMap((b) => b.msg.events.map((e) => e.seq));
  assert.deepEqual(seqs, seqs.map((_, i) => i + 1), 'seq 1, 2, 3, ...');
  assert.ok(batches.at(-1).msg.events.every((e) => e.server === 's1'));
  assert.equal(node.sent[0].msg.type, 'sync', 'the sync first');
  assert.equal(node.sent[0].subject, 'presence.events.n1');
  await pc.close({ shutdown: true });
  assert.equal(node.sent.at(-1).msg.type, 'shutdown');
  assert.equal(node.sent.at(-1).subject, 'presence.events.n1');
  await assert.rejects(pc.activity('c1'), { code: 'closed' });
});

test('a long list goes in parts under syncPartBytes, one sync_id, parts in order', async () => {
  const node = await responder(() => OK);
  const conns = Array.from({ length: 3000 }, (_, i) => ({ conn: `c${i}`, user: `u${i}`, device: 'web' }));
  const pc = await client({ nodes: ['n1'], serverId: 's2', listConns: () => conns, syncPartBytes: 10000 });
  await pc.flush(10000);
  const parts = node.sent.filter((x) => x.msg.type === 'sync');
  assert.ok(parts.length > 5, `${parts.length} parts`);
  assert.ok(parts.every((p) => p.size <= 10000 + 200), 'each part under the limit');
  assert.ok(parts.every((p, i) => p.msg.part === i + 1 && p.msg.parts === parts.length && p.msg.sync_id === parts[0].msg.sync_id));
  assert.deepEqual(parts.flatMap((p) => p.msg.conns.map((e) => e.conn)), conns.map((e) => e.conn));
  assert.equal(pc.stats().syncParts, parts.length);
  await pc.close({ shutdown: false });
});

test('no responders fails over: the sync goes to the next node before the events', async () => {
  // Nobody subscribes to presence.events.n1: nats-server answers "no responders".
  const node = await responder(() => OK, ['presence.events.n2']);
  const errors = [];
  const pc = await client({ nodes: ['n1', 'n2'], serverId: 's3', listConns: () => [{ conn: 'c1', user: 'u', device: 'web' }],
    onError: (e) => errors.push(e) }, 'failover');
  const r = await pc.activity('c1');
  assert.deepEqual(r, { duplicate: false });
  assert.equal(pc.currentNode(), 1);
  assert.equal(pc.stats().failovers, 1);
  const toN2 = node.sent.filter((x) => x.subject === 'presence.events.n2').map((x) => x.msg.type);
  assert.equal(toN2[0], 'sync');
  assert.ok(toN2.includes('batch'));
  assert.deepEqual(errors, [], 'no responders is not an error to report');
  await pc.flush(10000);
  const subs = await serverSubs('failover');
  assert.ok(subs.includes('presence.resync.n2'), `listens for n2 resyncs (${subs})`);
  assert.ok(!subs.includes('presence.resync.n1'), `no longer for n1's (${subs})`);
  // A resync request for n1, then one for n2 (delivered in that order, both
  // before the reply to the sync they cause): only the second is obeyed.
  const syncs = () => node.sent.filter((x) => x.msg.type === 'sync').length;
  const before = syncs();
  node.nc.publish('presence.resync.n1');
  node.nc.publish('presence.resync.n2');
  await until('the sync asked for by presence.resync.n2', () => syncs() > before, 20000);
  await pc.flush(10000);
  assert.equal(syncs(), before + 1, 'one sync: presence.resync.n1 is not heard');
  assert.equal(node.sent.filter((x) => x.msg.type === 'sync').at(-1).subject, 'presence.events.n2');
  await pc.close({ shutdown: false });
});

test('watch: notifications racing the get are judged by ver, none older, none twice', async () => {
  const st = (ver, status) => ({ user: 'bob', status, text: '', emoji: '', expires_at: 0, last_seen: 0, ts: 1, ver });
  const big = 2n ** 60n; // above 2^53: compared exactly
  // Notifications published before the get's reply reach the client first
  // (one publisher, one subscriber connection: NATS keeps the order).
  const node = await responder((subj) => {
    if (subj !== 'presence.query.get') return OK;
    node.deliver('presence.user.bob', st(big + 5n, 'away'));   // older than the get: dropped
    node.deliver('presence.user.bob', st(big + 12n, 'busy'));  // newer: shown after the initial
    return { users: [{ ...st(big + 10n, 'online'), devices: 1 }] };
  });
  const pc = await client({});
  const seen = [];
  const w = await pc.watch(['bob'], (s) => seen.push(s));
  node.deliver('presence.user.bob', st(big + 11n, 'online')); // not newer than shown: dropped
  node.deliver('presence.user.bob', st(big + 12n, 'busy'));   // a repeat: dropped
  node.deliver('presence.user.carol', { ...st(big + 99n, 'online'), user: 'carol' }); // not watched
  node.deliver('presence.user.bob', st(big + 13n, 'offline')); // the last one: shown
  await until('ver 13 shown', () => seen.some((s) => s.ver === big + 13n), 20000);
  assert.deepEqual(seen.map((s) => [s.status, s.ver - big, s.initial]),
    [['online', 10n, true], ['busy', 12n, false], ['offline', 13n, false]]);
  w.stop();
  node.deliver('presence.user.bob', st(big + 20n, 'online'));
  // The get's reply comes after that notification (and the two the get
  // publishes): anything shown after stop would be shown by now.
  await pc.get(['bob']);
  assert.equal(seen.length, 3, 'nothing after stop');
  await pc.close();
});

test('listConns throwing is reported, is no failover, and the sync is tried again', async () => {
  const node = await responder(() => OK);
  const errors = [];
  let calls = 0;
  const pc = await client({ nodes: ['n1', 'n2'], serverId: 's4', onError: (e) => errors.push(e),
    listConns: () => { if (++calls === 1) throw new Error('db down'); return [{ conn: 'c1', user: 'u', device: 'web' }, { conn: '' }]; } });
  await pc.flush(10000);
  assert.equal(calls, 2);
  assert.equal(pc.currentNode(), 0, 'no failover');
  assert.equal(errors[0].message, 'db down');
  assert.equal(errors[1].code, 'bad_argument', 'the bad entry is reported');
  const sync = node.sent.find((x) => x.msg.type === 'sync');
  assert.equal(sync.subject, 'presence.events.n1');
  assert.deepEqual(sync.msg.conns, [{ conn: 'c1', user: 'u', device: 'web' }]);
  await pc.close({ shutdown: false });
});

test('a part refused as "no such sync under way" starts the sync again from part 1', async () => {
  let refused = 0;
  const node = await responder((subj, m) => {
    if (m.type === 'sync' && m.part === 2 && refused++ === 0)
      return { ok: false, error: 'bad_value', message: 'part: no such sync under way' };
    return OK;
  });
  const conns = Array.from({ length: 600 }, (_, i) => ({ conn: `c${i}`, user: `u${i}`, device: 'web' }));
  const errors = [];
  const pc = await client({ nodes: ['n1'], serverId: 's5', listConns: () => conns, syncPartBytes: 4096,
    onError: (e) => errors.push(e) });
  await pc.flush(10000);
  const parts = node.sent.filter((x) => x.msg.type === 'sync').map((x) => [x.msg.sync_id, x.msg.part]);
  const n = parts.at(-1)[1];
  assert.ok(n > 2, `${n} parts`);
  assert.deepEqual(parts.map((p) => p[1]), [1, 2, ...Array.from({ length: n }, (_, i) => i + 1)]);
  assert.notEqual(parts[0][0], parts.at(-1)[0], 'a new sync_id');
  assert.equal(pc.stats().syncsDone, 1);
  assert.equal(pc.stats().failovers, 0);
  assert.equal(errors.length, 1);
  assert.equal(errors[0].code, 'bad_value');
  await pc.close({ shutdown: false });
});

test('a node that does not answer a batch is failed over from; the batch goes to the next node', async () => {
  // The answer withheld on n1 (the node hangs): after requestTimeoutMs the
  // client moves to n2, sends the sync there, then the same events again.
  let hang = false;
  const node = await responder((subj, m) => (hang && subj === 'presence.events.n1' && m.type === 'batch' ? WITHHOLD : OK),
    ['presence.events.n1', 'presence.events.n2']);
  const pc = await client({ nodes: ['n1', 'n2'], serverId: 's7', heartbeatMs: 600000, requestTimeoutMs: 2000 });
  await pc.flush(10000);
  hang = true;
  const r = await pc.connect('c9', 'u9', 'web');
  assert.deepEqual(r, { duplicate: false });
  assert.equal(pc.currentNode(), 1);
  const conns = node.sent.filter((x) => x.msg.type === 'sync' || x.msg.events?.some((e) => e.conn === 'c9'));
  assert.deepEqual(conns.map((x) => [x.subject.split('.').at(-1), x.msg.type]),
    [['n1', 'sync'], ['n1', 'batch'], ['n2', 'sync'], ['n2', 'batch']]);
  const seqs = conns.filter((x) => x.msg.type === 'batch').map((x) => x.msg.events.find((e) => e.conn === 'c9').seq);
  assert.ok(seqs[1] > seqs[0], `sent again with a new seq (${seqs})`);
  await pc.close({ shutdown: false });
});

test('ids that would make a wildcard or an empty subject token are refused', async () => {
  const nc = await connect({ servers: url, name: 'given' });
  open.push({ close: () => nc.close() });
  // A client wrongly accepted is closed at once (a failing case must end).
  const refused = (opts) => assert.rejects(createClient(opts).then(async (pc) => {
    await pc.close({ shutdown: false });
    return pc;
  }), { code: 'bad_argument' }, JSON.stringify(opts.nodes ?? opts.subjectPrefix));
  for (const nodes of [['n*'], ['>'], ['a..b'], ['.n1'], ['']]) await refused({ nc, nodes, serverId: 's' });
  await refused({ nc, subjectPrefix: 'p.>' });
  await nc.flush();
  assert.deepEqual((await serverSubs('given')).filter((s) => s.startsWith('p.') || s.includes('resync')), [],
    'nothing subscribed for the refused clients');
  const pc = await client({}, 'watcher');
  for (const users of [['a*b'], ['x.>'], [], ['a b']])
    await assert.rejects(pc.watch(users, () => {}), { code: 'bad_argument' }, JSON.stringify(users));
  await pc.nc.flush();
  const subs = await serverSubs('watcher');
  assert.equal(subs.filter((s) => s.startsWith('presence.user.')).length, 0, `nothing subscribed (${subs})`);
  // The same call with a good id does subscribe: the check above can fail.
  const node = await responder(() => ({ users: [] }), ['presence.query.get']);
  const w = await pc.watch(['ok_id'], () => {});
  assert.ok((await serverSubs('watcher')).includes('presence.user.ok_id'));
  w.stop();
  assert.equal(node.sent.length, 1);
  await pc.close();
});

test('watch: a get answered by a lagging node (as_of before the subscription) is asked again', async () => {
  let gets = 0;
  const st = (ver, status) => ({ user: 'bob', status, text: '', emoji: '', expires_at: 0, last_seen: 0, ts: 1, ver, devices: 1 });
  await responder((subj) => {
    if (subj !== 'presence.query.get') return OK;
    gets++;
    if (gets === 1) return { users: [st(10, 'online')], as_of: 1 }; // behind: asked again
    return { users: [{ ...st(12, 'busy'), stale: true }], as_of: Date.now() + 1000 };
  });
  const pc = await client({});
  const seen = [];
  await pc.watch(['bob'], (s) => seen.push(s));
  assert.equal(gets, 2);
  assert.equal(seen.length, 1);
  assert.equal(seen[0].status, 'busy');
  assert.equal(seen[0].ver, 12n);
  assert.equal(seen[0].stale, true);
  assert.ok(seen[0].asOf > 1);
  await pc.close();
});
