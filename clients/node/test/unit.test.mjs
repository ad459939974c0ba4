// unit.test.mjs - the client's logic against a fake NATS connection (no
// cluster): batches with seq and partial replies, sync parts, failover
// ordering, and the watch's ver filter with notifications racing the get.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { encode, decode } from '@msgpack/msgpack';
import { createClient } from '../index.js';

/** A NATS connection that records requests and answers with `answer`. */
function fakeNc(answer) {
  const nc = {
    subs: [], sent: [],
    subscribe(subject, { callback }) {
      const s = { subject, callback, closed: false, unsubscribe() { s.closed = true; } };
      nc.subs.push(s);
      return s;
    },
    deliver(subject, obj) {
      for (const s of nc.subs) if (!s.closed && s.subject === subject) s.callback(null, { subject, data: encode(obj, { useBigInt64: true }) });
    },
    async flush() {},
    async request(subject, data, opts) {
      const msg = decode(data);
      nc.sent.push({ subject, msg, size: data.length });
      const r = await answer(subject, msg, opts);
      return { data: encode(r, { useBigInt64: true }) };
    },
    async drain() {},
    async close() {},
  };
  return nc;
}

const OK = { ok: true };
const fail = (code) => Object.assign(new Error(code), { code });

test('a batch carries growing seq; a partial reply settles each event by index', async () => {
  const nc = fakeNc((subj, m) => (m.type === 'batch' ? { ok: false, error: 'partial', message: '1 of 3',
    failed: [{ i: 2, error: 'unknown_conn', message: 'no such conn' }] } : OK));
  const pc = await createClient({ nc, nodes: ['n1'], serverId: 's1', heartbeatMs: 600000 });
  await pc.flush(); // the first sync and heartbeat
  const ps = [pc.connect('c1', 'u1', 'web'), pc.activity('c1'), pc.activity('zz')];
  const rs = await Promise.allSettled(ps);
  assert.deepEqual(rs.map((r) => r.status), ['fulfilled', 'fulfilled', 'rejected']);
  assert.equal(rs[2].reason.code, 'unknown_conn');
  assert.equal(rs[2].reason.message, 'no such conn');
  const batches = nc.sent.filter((x) => x.msg.type === 'batch');
  const seqs = batches.flatMap((b) => b.msg.events.map((e) => e.seq));
  assert.deepEqual(seqs, seqs.map((_, i) => i + 1), 'seq 1, 2, 3, ...');
  assert.ok(batches.at(-1).msg.events.every((e) => e.server === 's1'));
  assert.equal(nc.sent[0].msg.type, 'sync', 'the sync first');
  assert.equal(nc.sent[0].subject, 'presence.events.n1');
  await pc.close({ shutdown: true });
  assert.equal(nc.sent.at(-1).msg.type, 'shutdown');
  await assert.rejects(pc.activity('c1'), { code: 'closed' });
});

test('a long list goes in parts under syncPartBytes, one sync_id, parts in order', async () => {
  const nc = fakeNc(() => OK);
  const conns = Array.from({ length: 3000 }, (_, i) => ({ conn: `c${i}`, user: `u${i}`, device: 'web' }));
  const pc = await createClient({ nc, nodes: ['n1'], serverId: 's2', listConns: () => conns, syncPartBytes: 10000 });
  await pc.flush();
  const parts = nc.sent.filter((x) => x.msg.type === 'sync');
  assert.ok(parts.length > 5, `${parts.length} parts`);
  assert.ok(parts.every((p) => p.size <= 10000 + 200), 'each part under the limit');
  assert.ok(parts.every((p, i) => p.msg.part === i + 1 && p.msg.parts === parts.length && p.msg.sync_id === parts[0].msg.sync_id));
  assert.deepEqual(parts.flatMap((p) => p.msg.conns.map((e) => e.conn)), conns.map((e) => e.conn));
  assert.equal(pc.stats().syncParts, parts.length);
  await pc.close({ shutdown: false });
});

test('no responders fails over: the sync goes to the next node before the events', async () => {
  const nc = fakeNc((subj) => { if (subj.endsWith('.n1')) throw fail('503'); return OK; });
  const errors = [];
  const pc = await createClient({ nc, nodes: ['n1', 'n2'], serverId: 's3', listConns: () => [{ conn: 'c1', user: 'u', device: 'web' }],
    onError: (e) => errors.push(e) });
  const r = await pc.activity('c1');
  assert.deepEqual(r, { duplicate: false });
  assert.equal(pc.currentNode(), 1);
  assert.equal(pc.stats().failovers, 1);
  const toN2 = nc.sent.filter((x) => x.subject === 'presence.events.n2').map((x) => x.msg.type);
  assert.equal(toN2[0], 'sync');
  assert.ok(toN2.includes('batch'));
  assert.ok(nc.subs.some((s) => s.subject === 'presence.resync.n2' && !s.closed), 'listens for n2 resyncs');
  assert.ok(nc.subs.every((s) => s.subject !== 'presence.resync.n1' || s.closed));
  assert.deepEqual(errors, [], 'no responders is not an error to report');
  await pc.close({ shutdown: false });
});

test('watch: notifications racing the get are judged by ver, none older, none twice', async () => {
  let nc;
  const st = (ver, status) => ({ user: 'bob', status, text: '', emoji: '', expires_at: 0, last_seen: 0, ts: 1, ver });
  const big = 2n ** 60n; // above 2^53: compared exactly
  nc = fakeNc((subj) => {
    if (subj !== 'presence.query.get') return OK;
    nc.deliver('presence.user.bob', st(big + 5n, 'away'));   // older than the get: dropped
    nc.deliver('presence.user.bob', st(big + 12n, 'busy'));  // newer: shown after the initial
    return { users: [{ ...st(big + 10n, 'online'), devices: 1 }] };
  });
  const pc = await createClient({ nc });
  const seen = [];
  const w = await pc.watch(['bob'], (s) => seen.push(s));
  nc.deliver('presence.user.bob', st(big + 11n, 'online')); // not newer than shown: dropped
  nc.deliver('presence.user.bob', st(big + 12n, 'busy'));   // a repeat: dropped
  nc.deliver('presence.user.bob', st(big + 13n, 'offline'));
  nc.deliver('presence.user.carol', { ...st(big + 99n, 'online'), user: 'carol' }); // not watched
  assert.deepEqual(seen.map((s) => [s.status, s.ver - big, s.initial]),
    [['online', 10n, true], ['busy', 12n, false], ['offline', 13n, false]]);
  w.stop();
  nc.deliver('presence.user.bob', st(big + 20n, 'online'));
  assert.equal(seen.length, 3, 'nothing after stop');
  await pc.close();
});

test('listConns throwing is reported, is no failover, and the sync is tried again', async () => {
  const nc = fakeNc(() => OK);
  const errors = [];
  let calls = 0;
  const pc = await createClient({ nc, nodes: ['n1', 'n2'], serverId: 's4', onError: (e) => errors.push(e),
    listConns: () => { if (++calls === 1) throw new Error('db down'); return [{ conn: 'c1', user: 'u', device: 'web' }, { conn: '' }]; } });
  await pc.flush(10000);
  assert.equal(calls, 2);
  assert.equal(pc.currentNode(), 0, 'no failover');
  assert.equal(errors[0].message, 'db down');
  assert.equal(errors[1].code, 'bad_argument', 'the bad entry is reported');
  const sync = nc.sent.find((x) => x.msg.type === 'sync');
  assert.deepEqual(sync.msg.conns, [{ conn: 'c1', user: 'u', device: 'web' }]);
  await pc.close({ shutdown: false });
});

test('a part refused as "no such sync under way" starts the sync again from part 1', async () => {
  let refused = 0;
  const nc = fakeNc((subj, m) => {
    if (m.type === 'sync' && m.part === 2 && refused++ === 0)
      return { ok: false, error: 'bad_value', message: 'part: no such sync under way' };
    return OK;
  });
  const conns = Array.from({ length: 600 }, (_, i) => ({ conn: `c${i}`, user: `u${i}`, device: 'web' }));
  const errors = [];
  const pc = await createClient({ nc, nodes: ['n1'], serverId: 's5', listConns: () => conns, syncPartBytes: 4096,
    onError: (e) => errors.push(e) });
  await pc.flush(10000);
  const parts = nc.sent.filter((x) => x.msg.type === 'sync').map((x) => [x.msg.sync_id, x.msg.part]);
  const n = parts.at(-1)[1];
  assert.deepEqual(parts.map((p) => p[1]), [1, 2, ...Array.from({ length: n }, (_, i) => i + 1)]);
  assert.notEqual(parts[0][0], parts.at(-1)[0], 'a new sync_id');
  assert.equal(pc.stats().syncsDone, 1);
  assert.equal(pc.stats().failovers, 0);
  assert.equal(errors.length, 1);
  assert.equal(errors[0].code, 'bad_value');
  await pc.close({ shutdown: false });
});

test('ids that would make a wildcard or an empty subject token are refused', async () => {
  const nc = fakeNc(() => OK);
  for (const nodes of [['n*'], ['>'], ['a..b'], ['.n1'], ['']])
    await assert.rejects(createClient({ nc, nodes, serverId: 's' }), { code: 'bad_argument' }, JSON.stringify(nodes));
  await assert.rejects(createClient({ nc, subjectPrefix: 'p.>' }), { code: 'bad_argument' });
  const pc = await createClient({ nc });
  for (const users of [['a*b'], ['x.>'], [], ['a b']])
    await assert.rejects(pc.watch(users, () => {}), { code: 'bad_argument' }, JSON.stringify(users));
  assert.equal(nc.subs.filter((s) => s.subject.startsWith('presence.user.')).length, 0, 'nothing subscribed');
  await pc.close();
});

test('watch: a get answered by a lagging node (as_of before the subscription) is asked again', async () => {
  let gets = 0;
  const st = (ver, status) => ({ user: 'bob', status, text: '', emoji: '', expires_at: 0, last_seen: 0, ts: 1, ver, devices: 1 });
  const nc = fakeNc((subj) => {
    if (subj !== 'presence.query.get') return OK;
    gets++;
    if (gets === 1) return { users: [st(10, 'online')], as_of: 1 }; // behind: asked again
    return { users: [{ ...st(12, 'busy'), stale: true }], as_of: Date.now() + 1000 };
  });
  const pc = await createClient({ nc });
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
