// usage.ts - compiled (never run) by types.test.mjs with `tsc --noEmit
// --strict`: every declared call used as the README shows it.
import { createClient, PresenceClient, PresenceError, Watch } from '../../index.js';
import type { ClientOptions, ConnEntry, EventResult, PresenceState, UserEntry, DeviceEntry, ClientStats } from '../../index.js';

async function main(): Promise<void> {
  const socks = new Map<string, ConnEntry>();
  const opts: ClientOptions = {
    servers: ['nats://127.0.0.1:4222'], nodes: ['n1', 'n2'], serverId: 'ws-1',
    listConns: () => socks.values(), onError: (e: Error) => console.warn(e.message),
    batchMax: 1000, batchDelayMs: 2, heartbeatMs: 1000, requestTimeoutMs: 2000, syncPartBytes: 512 * 1024,
  };
  const pc: PresenceClient = await createClient(opts);
  const r: EventResult = await pc.connect('c-42', 'alice', 'web', { agent: 'firefox' });
  const dup: boolean = r.duplicate;
  await pc.activity('c-42');
  await pc.idle('c-42');
  await pc.status('alice', 'busy');
  await pc.custom('alice', 'On holiday', { emoji: '🌴', expiresAt: 0 });
  await pc.disconnect('c-42').catch((e: unknown) => {
    if (e instanceof PresenceError && e.code === 'unknown_conn') return;
    throw e;
  });
  await pc.flush(5000);
  pc.resync();
  const i: number = pc.currentNode();
  const st: ClientStats = pc.stats();
  const users: UserEntry[] = await pc.get(['alice'], { viewer: 'alice', node: 'n1' });
  const devs: DeviceEntry[] = await pc.devices('alice');
  const w: Watch = await pc.watch(['bob', 'carol'], (s: PresenceState) => {
    const v: bigint = s.ver;
    console.log(s.user, s.status, s.text, s.emoji, s.expiresAt, s.lastSeen, v, s.initial, s.asOf, s.stale);
  });
  console.log(dup, i, st.batchesSent, st.eventsSent, st.syncsDone, st.syncParts, st.failovers,
    users[0].devices, devs[0]?.node, w.users.length, pc.serverId, pc.nodes, pc.prefix, pc.nc.getServer());
  w.stop();
  await pc.close({ shutdown: true, timeoutMs: 2000 });
  const err = new PresenceError('closed', 'x');
  console.log(err.code, err.failed?.[0]?.conn);
}
void main;
