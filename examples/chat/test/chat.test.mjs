// chat.test.mjs - the example chat server (server.js) against a real
// cluster (nats-server, nodes n1 n2), scripted through two WebSocket
// clients: alice connects; bob, watching alice, sees her online; alice's
// tab closes; bob sees her offline after the offline delay (300 ms here).
// Waits poll with deadlines.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import WebSocket from 'ws';
import { createClient } from '@presenced/client';
import { Cluster, until, freePorts } from '../../../clients/node/test/cluster.mjs';

const here = dirname(fileURLToPath(import.meta.url));
let cl;
let q;
let chat;
let url;
let failed = false;
let chatLog = '';

before(async () => {
  cl = await new Cluster().start(['n1', 'n2']);
  q = await createClient({ servers: cl.url });
  await cl.ready(q);
  const [port] = freePorts(1);
  chat = spawn(process.execPath, [join(here, '..', 'server.js')], {
    env: { ...process.env, CHAT_ADDR: `127.0.0.1:${port}`, PRESENCE_NATS_URL: cl.url, CHAT_NODES: 'n1,n2', CHAT_SERVER_ID: 'chat-test' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  chat.stdout.on('data', (d) => { chatLog += d; });
  chat.stderr.on('data', (d) => { chatLog += d; });
  chat.exited = new Promise((r) => chat.on('exit', (code, sig) => r({ code, sig })));
  url = await until('the chat server serving', () => chatLog.match(/serving (http:\/\/\S+)/)?.[1], 30000);
});

after(async () => {
  if (chat && chat.exitCode === null) {
    chat.kill('SIGTERM');
    await chat.exited;
  }
  if (q) await q.close().catch(() => {});
  if (failed) console.error(`chat server log:\n${chatLog}`);
  const report = await cl.stop({ keep: failed });
  assert.equal(report, '', report);
});

/** A WebSocket client that keeps every JSON message it got. */
async function tab(user) {
  const ws = new WebSocket(`${url.replace('http', 'ws')}ws?user=${user}&device=web`);
  ws.got = [];
  ws.on('message', (d) => ws.got.push(JSON.parse(d.toString())));
  ws.closed = new Promise((r) => ws.on('close', r));
  await new Promise((res, rej) => { ws.once('open', res); ws.once('error', rej); });
  await until(`${user}'s hello`, () => ws.got.some((m) => m.type === 'hello'), 15000);
  return ws;
}

test('the page is served', async () => {
  try {
    const res = await fetch(url);
    assert.equal(res.status, 200);
    assert.match(await res.text(), /presenced chat example/);
    assert.equal((await fetch(url + 'nope')).status, 404);
  } catch (e) { failed = true; throw e; }
});

test('bob watching alice sees her online, then offline once her tab closes', async () => {
  try {
    const alice = await tab('alice');
    await until('alice has one device on every node', async () => {
      for (const node of ['n1', 'n2']) if ((await q.get(['alice'], { node }))[0].devices !== 1) return false;
      return true;
    }, 15000);
    const bob = await tab('bob');
    // Asked twice at once: the later list wins (a tab that changed its mind).
    bob.send(JSON.stringify({ type: 'watch', users: ['carol'] }));
    bob.send(JSON.stringify({ type: 'watch', users: ['alice'] }));
    await until('bob sees alice online', () =>
      bob.got.filter((m) => m.type === 'presence' && m.user === 'alice').at(-1)?.status === 'online', 15000);
    // A bad user is refused with a message and a close.
    const bad = new WebSocket(`${url.replace('http', 'ws')}ws?user=a*b`);
    const code = await new Promise((r) => bad.on('close', (c) => r(c)));
    assert.equal(code, 1008);
    alice.close();
    await alice.closed;
    await until('bob sees alice offline', () =>
      bob.got.filter((m) => m.type === 'presence' && m.user === 'alice').at(-1)?.status === 'offline', 15000);
    const states = bob.got.filter((m) => m.type === 'presence' && m.user === 'alice');
    assert.ok(states[0].initial, 'the first state is the initial one');
    assert.ok(bob.got.every((m) => m.type !== 'error'), JSON.stringify(bob.got));
    assert.equal((await q.get(['alice']))[0].devices, 0);
    bob.close();
    await bob.closed;
    await until('bob gone too', async () => (await q.get(['bob']))[0].status === 'offline', 15000);
  } catch (e) { failed = true; throw e; }
});
