// dash_e2e.mjs - presence-dash in headless Chromium, end to end (issue 18).
//
// Starts a nats-server, a redis-server, three presenced nodes, a small
// presence-sim load and presence-dash, all on free loopback ports, then
// drives the page in Chromium (Debian's /usr/bin/chromium through
// playwright-core): three node cards; a user connected with presencectl
// shows in the feed within 1 s; the user lookup (typed, Enter) shows the
// device; a killed node's card turns down within the node timeout; the
// page fits a phone-width window. Saves a screenshot.
//
//   node dash_e2e.mjs BUILD_DIR REPO_ROOT SCREENSHOT.png
// Waits poll for states with deadlines; nothing sleeps a fixed time.
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, openSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const [build, root, shot] = process.argv.slice(2);
if (!build || !root || !shot) {
  console.error('usage: dash_e2e.mjs BUILD_DIR REPO_ROOT SCREENSHOT.png');
  process.exit(2);
}
const SYNC_MS = 500, NODE_TIMEOUT_MS = 2000;
const work = mkdtempSync(join(tmpdir(), 'dash-e2e-'));
const procs = [];
const t0 = Date.now();
const log = (...a) => console.log(`[${((Date.now() - t0) / 1000).toFixed(1)}s]`, ...a);

function start(name, cmd, args, env = {}) {
  const out = openSync(join(work, name + '.log'), 'a');
  const p = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', out] });
  p.name = name;
  p.exited = new Promise((res) => p.on('exit', (code, sig) => res({ code, sig })));
  procs.push(p);
  return p;
}

async function until(what, fn, ms) {
  const end = Date.now() + ms;
  for (;;) {
    try { const v = await fn(); if (v) return v; } catch { /* not yet */ }
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function check(cond, msg) {
  if (!cond) throw new Error('check failed: ' + msg);
  log('ok:', msg);
}

async function main() {
  const [natsPort, redisPort, dashPort] = execFileSync('python3', [join(root, 'tests/freeport.py'), '3'])
    .toString().trim().split(/\s+/).map(Number);
  const natsUrl = `nats://127.0.0.1:${natsPort}`;
  start('nats', 'nats-server', ['-a', '127.0.0.1', '-p', String(natsPort), '-js', '-sd', join(work, 'js')]);
  start('redis', 'redis-server', ['--bind', '127.0.0.1', '--port', String(redisPort), '--save', '',
    '--appendonly', 'no', '--dir', work]);
  await until('nats-server', () => execFileSync('bash', ['-c', `echo > /dev/tcp/127.0.0.1/${natsPort}`]) !== null, 10000);
  const common = {
    PRESENCE_NATS_URL: natsUrl, PRESENCE_REDIS_URL: `redis://127.0.0.1:${redisPort}`,
    PRESENCE_SYNC_INTERVAL_MS: String(SYNC_MS), PRESENCE_NODE_TIMEOUT_MS: String(NODE_TIMEOUT_MS),
    PRESENCE_SNAPSHOT_INTERVAL_MS: '2000', PRESENCE_OFFLINE_DELAY_MS: '1000',
  };
  const nodes = {};
  for (const id of ['n1', 'n2', 'n3'])
    nodes[id] = start(id, join(build, 'presenced'), [], { ...common, PRESENCE_NODE_ID: id });
  const dash = start('dash', join(build, 'presence-dash'), [],
    { ...common, PRESENCE_DASH_ADDR: `127.0.0.1:${dashPort}`, PRESENCE_DASH_WEB: join(root, 'dash/web') });
  const url = await new Promise((res, rej) => {
    let buf = '';
    dash.stdout.on('data', (d) => {
      buf += d;
      const m = buf.match(/serving (http:\/\/\S+)/);
      if (m) res(m[1]);
    });
    dash.exited.then(() => rej(new Error('presence-dash exited at start: see ' + work)));
  });
  log('presence-dash at', url);
  await until('3 nodes alive and ready', async () => {
    const s = await (await fetch(url + 'api/state')).json();
    return s.nodes && s.nodes.filter((n) => n.state === 'up').length === 3;
  }, 60000);
  start('sim', join(build, 'presence-sim'), ['--nats', natsUrl, '--nodes', 'n1,n2', '--servers', '2',
    '--users', '40', '--rate', '20', '--duration', '120', '--quiet']);

  const context = await chromium.launchPersistentContext(join(work, 'chromium-profile'), {
    executablePath: '/usr/bin/chromium', headless: true, viewport: { width: 1280, height: 800 },
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  try {
    const page = context.pages()[0] || await context.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(e.message));
    page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
    await page.goto(url);
    // A locator wait, not waitForFunction: the page's Content-Security-Policy
    // forbids eval, which Playwright's function waits need once they poll.
    await page.locator('#nodes .card[data-state="up"]').nth(2).waitFor({ timeout: 20000 });
    check(await page.locator('#nodes .card').count() === 3, 'three node cards, all up');
    check((await page.locator('#conn').getAttribute('data-conn')) === 'live', 'the stream is live');

    // A user connects through n1: the feed shows it within 1 s. The page
    // itself notes when the entry appears (Playwright's waits poll coarsely).
    await page.evaluate(() => {
      new MutationObserver((_, obs) => {
        if (document.querySelector('#feed li[data-user="alice-e2e"][data-status="online"]')) {
          window.aliceSeenAt = Date.now();
          obs.disconnect();
        }
      }).observe(document.querySelector('#feed'), { childList: true });
    });
    execFileSync(join(build, 'presencectl'), ['--server', natsUrl, '--node', 'n1', '--as', 'ws-e2e',
      'connect', 'c-e2e', 'alice-e2e', 'web']);
    const sent = Date.now();
    await page.locator('#feed li[data-user="alice-e2e"][data-status="online"]').waitFor({ timeout: 5000 });
    const latency = (await page.evaluate(() => window.aliceSeenAt)) - sent;
    check(latency <= 1000, `notification in the feed ${latency} ms after presencectl connect returned (<= 1000)`);

    // The feed filter: a prefix that matches nothing hides it, clearing shows it.
    await page.fill('#filter-user', 'alice-');
    check(await page.locator('#feed li[data-user="alice-e2e"]').isVisible(), 'the filter by prefix keeps alice-e2e');
    await page.selectOption('#filter-status', 'offline');
    check(!(await page.locator('#feed li[data-user="alice-e2e"]').isVisible()), 'the status filter hides online');
    await page.selectOption('#filter-status', '');
    await page.fill('#filter-user', '');

    // The lookup, by keyboard: type the id, press Enter.
    await page.focus('#lookup-user');
    await page.keyboard.type('alice-e2e');
    await page.keyboard.press('Enter');
    const asked = Date.now();
    const row = page.locator('#lookup-result tr.device[data-conn="c-e2e"]');
    await row.waitFor({ timeout: 10000 });
    log(`lookup answered in ${Date.now() - asked} ms`);
    const text = await row.innerText();
    check(text.includes('ws-e2e') && text.includes('n1') && text.includes('active'),
      `the lookup shows the device: ${text.replace(/\s+/g, ' ')}`);
    check((await page.locator('#lookup-result [data-view="public view"]').innerText()).includes('online'),
      'the public view says online');
    // Every node is asked too: they agree once the connect has replicated
    // (asked again, by the button, until then).
    await until('the three nodes to agree on alice-e2e', async () => {
      if ((await page.locator('#agreement').getAttribute('data-agree')) === 'true') return true;
      await page.click('#lookup button');
      await page.locator('#lookup-result tr.device').waitFor({ timeout: 10000 });
      return false;
    }, 15000);
    check((await page.locator('#agreement').innerText()).startsWith('all 3 nodes agree'),
      `the lookup says: ${await page.locator('#agreement').innerText()}`);

    // The socket servers: presencectl's (no heartbeats) and the simulator's.
    const srv = page.locator('#servers tr[data-server="ws-e2e"]');
    await srv.waitFor({ timeout: 10000 });
    const cells = await srv.locator('td').allInnerTexts();
    check(cells[0] === 'n1' && cells[1] === 'yes' && cells[2] === '1',
      `the server list shows ws-e2e on n1, alive, 1 connection: ${cells.join(' | ')}`);
    check(await page.locator('#servers tr[data-alive="true"]').count() >= 3,
      'and the simulator\'s two servers');

    // Kill n3: its card turns down within the node timeout of its last
    // heartbeat (presence-dash sends a frame the moment a node times out),
    // so within the timeout of the kill; 2 s of slack for a loaded machine.
    // The page notes the moment (Playwright's waits poll coarsely).
    await until('n3 has written a snapshot', async () =>
      !(await page.locator('#nodes .card[data-node="n3"]').innerText()).includes('none yet'), 15000);
    await page.evaluate(() => {
      new MutationObserver((_, obs) => {
        if (document.querySelector('#nodes .card[data-node="n3"][data-state="down"]')) {
          window.n3DownAt = Date.now();
          obs.disconnect();
        }
      }).observe(document.querySelector('#nodes'), { childList: true, subtree: true });
    });
    nodes.n3.kill('SIGKILL');
    const killed = Date.now();
    await page.locator('#nodes .card[data-node="n3"][data-state="down"]').waitFor({ timeout: NODE_TIMEOUT_MS + 15000 });
    const down = (await page.evaluate(() => window.n3DownAt)) - killed;
    check(down <= NODE_TIMEOUT_MS + 2000, `n3's card is down ${down} ms after the kill (timeout ${NODE_TIMEOUT_MS} ms)`);
    const age = await page.locator('#nodes .card[data-node="n3"] dd.hb').innerText();
    check(parseFloat(age) * (age.includes(' ms') ? 1 : 1000) >= NODE_TIMEOUT_MS,
      `down only once its heartbeat is older than the timeout (${age})`);
    check((await page.locator('#nodes .card:not([data-state="down"])').count()) === 2,
      'n1 and n2 stay alive');

    // Charts have data by now (events/s of the simulated load).
    await until('an events/s chart with samples', () => page.evaluate(() =>
      [...document.querySelectorAll('.chart polyline')].some((p) => p.getAttribute('points').split(' ').length > 2)), 10000);
    await page.screenshot({ path: shot, fullPage: false });
    log('screenshot', shot);

    // Phone width: nothing wider than the window.
    await page.setViewportSize({ width: 390, height: 800 });
    const wide = await page.evaluate(() => document.documentElement.scrollWidth);
    check(wide <= 391, `phone width: the page is ${wide} px wide in a 390 px window`);
    // Keyboard: the skip link comes first; Tab goes from the lookup's field to its button.
    check(await page.evaluate(() =>
      document.querySelector('a[href], button, input, select').className === 'skip'),
      'the first focusable element is the skip link');
    await page.focus('#lookup-user');
    await page.keyboard.press('Tab');
    check(await page.evaluate(() => document.activeElement.textContent === 'Look up'),
      'Tab moves from the user field to the Look up button');
    check(errors.length === 0, `no script errors (${errors.join('; ')})`);
  } finally {
    await context.close();
  }
  dash.kill('SIGTERM');
  const st = await dash.exited;
  check(st.code === 0, `presence-dash stops cleanly on SIGTERM (exit ${st.code}, signal ${st.sig})`);
}

let failed = false;
try {
  await main();
  log('PASS');
} catch (e) {
  failed = true;
  console.error('FAIL:', e.message, '\nlogs in', work);
} finally {
  for (const p of procs) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
  await Promise.all(procs.map((p) => p.exited));
  if (!failed) rmSync(work, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
