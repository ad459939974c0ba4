// cluster.mjs - a real cluster for the tests: one nats-server with
// JetStream and presenced nodes, on free loopback ports outside the
// ephemeral range (tests/freeport.py). The node binary is PD_PRESENCED_BIN
// (make test-tsan) or PD_BUILD_DIR/presenced. No Redis: the nodes run
// without snapshots (as it_libpresence does). Waits poll with deadlines.
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, openSync, readFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import net from 'node:net';

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

export function presencedBin() {
  if (process.env.PD_PRESENCED_BIN) return process.env.PD_PRESENCED_BIN;
  const build = process.env.PD_BUILD_DIR ?? join(ROOT, 'build-asan');
  return join(build, 'presenced');
}

export function freePorts(n) {
  return execFileSync('python3', [join(ROOT, 'tests', 'freeport.py'), String(n)])
    .toString().trim().split(/\s+/).map(Number);
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls fn every 50 ms until it returns a truthy value; throws after ms. */
export async function until(what, fn, ms) {
  const end = Date.now() + ms;
  let last;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}${last ? ` (last error: ${last.message})` : ''}`);
    await sleep(50);
  }
}

function listening(port) {
  return new Promise((res) => {
    const s = net.connect(port, '127.0.0.1');
    s.on('connect', () => { s.destroy(); res(true); });
    s.on('error', () => res(false));
  });
}

export class Cluster {
  constructor(env = {}) {
    this.work = mkdtempSync(join(tmpdir(), 'pd-node-test-'));
    this.procs = new Map();
    this.env = env;
  }

  _spawn(name, cmd, args, env = {}) {
    const out = openSync(join(this.work, name + '.log'), 'a');
    const p = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ['ignore', out, out] });
    p.exited = new Promise((res) => p.on('exit', (code, sig) => res({ code, sig })));
    this.procs.set(name, p);
    return p;
  }

  /** Starts nats-server and the nodes, and waits until every node sees
   * every node alive. */
  async start(nodeIds = ['n1', 'n2', 'n3']) {
    const bin = presencedBin();
    if (!existsSync(bin)) throw new Error(`no presenced at ${bin} (set PD_BUILD_DIR or PD_PRESENCED_BIN)`);
    const [port] = freePorts(1);
    this.url = `nats://127.0.0.1:${port}`;
    this._spawn('nats', 'nats-server', ['-a', '127.0.0.1', '-p', String(port), '-js', '-sd', join(this.work, 'js')]);
    await until('nats-server', () => listening(port), 20000);
    this.nodeEnv = {
      PRESENCE_NATS_URL: this.url, PRESENCE_REDIS_URL: 'redis://127.0.0.1:1',
      PRESENCE_SYNC_INTERVAL_MS: '250', PRESENCE_NODE_TIMEOUT_MS: '5000',
      PRESENCE_OFFLINE_DELAY_MS: '300', PRESENCE_SERVER_TIMEOUT_MS: '5000',
      PRESENCE_LOG_LEVEL: 'info', ...this.env,
    };
    this.nodeIds = nodeIds;
    for (const id of nodeIds) this._spawn(id, bin, [], { ...this.nodeEnv, PRESENCE_NODE_ID: id });
    return this;
  }

  /** Waits until each node answers `cluster` on its own subject with every
   * node alive (the cluster is formed; announcers are chosen). */
  async ready(client, ms = 60000) {
    for (const id of this.nodeIds)
      await until(`${id} sees ${this.nodeIds.length} nodes alive`, async () => {
        const r = await client._query('cluster', {}, id);
        return Array.isArray(r.nodes) && r.nodes.filter((n) => n.alive).length === this.nodeIds.length;
      }, ms);
  }

  kill(name, sig = 'SIGKILL') {
    const p = this.procs.get(name);
    p.kill(sig);
    return p.exited;
  }

  tails(lines = 30) {
    let s = '';
    for (const name of this.procs.keys()) {
      try {
        const t = readFileSync(join(this.work, name + '.log'), 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
        s += `== ${name}.log\n${t}\n`;
      } catch { /* none */ }
    }
    return s;
  }

  /** Stops everything (SIGTERM, then SIGKILL after 10 s) and removes the
   * work directory unless keep. Fails if a node died of a sanitizer report. */
  async stop({ keep = false } = {}) {
    const waits = [];
    for (const [, p] of this.procs) {
      if (p.exitCode !== null || p.signalCode !== null) continue;
      p.kill('SIGTERM');
      waits.push(Promise.race([p.exited, sleep(10000).then(() => p.kill('SIGKILL'))]));
    }
    await Promise.all(waits);
    let report = '';
    for (const id of this.nodeIds ?? []) {
      try {
        const log = readFileSync(join(this.work, id + '.log'), 'utf8');
        if (/ERROR: (Address|Leak|Thread|Undefined)Sanitizer|WARNING: ThreadSanitizer|runtime error:/.test(log))
          report += `${id}: sanitizer report in its log\n`;
      } catch { /* none */ }
    }
    if (report) keep = true;
    if (keep) console.error(`logs kept in ${this.work}\n${this.tails()}`);
    else rmSync(this.work, { recursive: true, force: true });
    return report;
  }
}
