// Types of @presenced/client (written by hand; test/types.test.mjs checks
// them with `tsc --noEmit` and that every declared value is exported).
import type { ConnectionOptions, NatsConnection } from 'nats';

/** One live connection of the socket server, as listed for a sync. */
export interface ConnEntry {
  conn: string;
  user: string;
  device: string;
}

export interface ClientOptions {
  /** NATS URL(s); default "nats://127.0.0.1:4222". Ignored when `nc` is given. */
  servers?: string | string[];
  /** More options for nats.js connect() (credentials, TLS, ...). */
  natsOptions?: ConnectionOptions;
  /** An existing NATS connection to use (the client then never closes it). */
  nc?: NatsConnection;
  /** Node ids, in failover order: events go to nodes[0] first. Leave out
   * both nodes and serverId for a client that only watches and queries. */
  nodes?: string[];
  /** This socket server's id, stable across its restarts. */
  serverId?: string;
  /** PRESENCE_SUBJECT_PREFIX of the cluster; default "presence". */
  subjectPrefix?: string;
  /** Lists the server's live connections, for every sync (at start, on a
   * resync request, after a failover). Called once per sync. */
  listConns?: () => Iterable<ConnEntry> | Promise<Iterable<ConnEntry>>;
  /** Errors no caller waits for: a refused heartbeat, a sync part refused
   * or `partial` (err.failed lists the refused conns), listConns throwing. */
  onError?: (err: Error) => void;
  /** Events in one batch; default 1000 (the node's PRESENCE_MAX_BATCH). */
  batchMax?: number;
  /** How long the oldest queued event waits for others; default 2 ms. */
  batchDelayMs?: number;
  /** Heartbeat period; default 1000 ms (keep it well below PRESENCE_SERVER_TIMEOUT_MS). */
  heartbeatMs?: number;
  /** No answer within this fails over to the next node; default 2000 ms. */
  requestTimeoutMs?: number;
  /** Largest sync part (and batch) in bytes; default 512 KiB. */
  syncPartBytes?: number;
}

/** The result of an applied event. */
export interface EventResult {
  /** The node had applied this event already (same seq). */
  duplicate: boolean;
}

/** A user's public state, from a `get` answer or a notification. */
export interface PresenceState {
  user: string;
  /** offline, online, away or busy (invisible only in a get with viewer = the user). */
  status: string;
  text: string;
  emoji: string;
  /** ms since the epoch; 0 = never. */
  expiresAt: number;
  lastSeen: number;
  /** Orders a user's states the same way on every node (64 bits). */
  ver: bigint;
  /** True for the state from the watch's first `get`. */
  initial: boolean;
  /** Freshness of a `get` answer (docs/protocol.md section 4): the time
   * (ms since the epoch) up to which the answering node was caught up with
   * its peers; 0 in a change, or from a node that does not say. */
  asOf: number;
  /** Part of this state comes from a node not heard from lately: show
   * "last known" rather than a sure status. */
  stale: boolean;
}

export interface UserEntry extends PresenceState {
  /** Live devices of the user. */
  devices: number;
}

export interface DeviceEntry {
  conn: string;
  server: string;
  node: string;
  device: string;
  state: string;
  connectedAt: number;
  lastActive: number;
}

export interface ClientStats {
  batchesSent: number;
  eventsSent: number;
  syncsDone: number;
  syncParts: number;
  failovers: number;
}

export interface SyncFailure {
  conn: string;
  error: string;
  message: string;
}

/** A refusal: `code` is the node's error code (docs/protocol.md section 7)
 * or one of the client's: closed, timeout, bad_argument, bad_reply. */
export class PresenceError extends Error {
  constructor(code: string, message?: string, extra?: object);
  code: string;
  /** For a sync part answered `partial`. */
  failed?: SyncFailure[];
}

export class Watch {
  private constructor();
  readonly users: string[];
  /** No onState call after this returns. */
  stop(): void;
}

export class PresenceClient {
  private constructor();
  readonly nc: NatsConnection;
  readonly nodes: string[];
  /** null for a client that only watches and queries. */
  readonly serverId: string | null;
  readonly prefix: string;
  connect(conn: string, user: string, device: string, meta?: Record<string, unknown>): Promise<EventResult>;
  disconnect(conn: string): Promise<EventResult>;
  activity(conn: string): Promise<EventResult>;
  idle(conn: string): Promise<EventResult>;
  status(user: string, status: 'auto' | 'away' | 'busy' | 'invisible' | (string & {})): Promise<EventResult>;
  custom(user: string, text: string, opts?: { emoji?: string; expiresAt?: number }): Promise<EventResult>;
  flush(timeoutMs?: number): Promise<void>;
  resync(): void;
  currentNode(): number;
  stats(): ClientStats;
  close(opts?: { shutdown?: boolean; timeoutMs?: number }): Promise<void>;
  get(users: string[], opts?: { viewer?: string; node?: string }): Promise<UserEntry[]>;
  devices(user: string, opts?: { node?: string }): Promise<DeviceEntry[]>;
  watch(users: string[], onState: (state: PresenceState) => void): Promise<Watch>;
}

export function createClient(opts: ClientOptions): Promise<PresenceClient>;
