// @presenced/client - the Node.js client of presenced (docs/protocol.md).
//
// Design (the same as libpresence, clients/c/src/client.c): callers append
// events to a queue; the queue goes out as one `batch` request when it holds
// batchMax events, when its oldest has waited batchDelayMs, or on flush().
// Each batch waits in `inflight` for its reply, which settles every event's
// promise (a `partial` reply by index). `seq` is stamped when a batch is
// encoded, so a batch sent again after a failover carries new numbers. A
// batch or sync part that gets no answer within requestTimeoutMs, or "no
// responders", fails the client over to the next node: its unanswered
// batches go back to the front of the queue and the full sync (in parts)
// goes to the new node before anything else, which moves the server there.
// A message on P.resync.<current node> asks for the same sync. Heartbeats
// are queued like events. Everything runs on the caller's event loop: no
// callback of the library runs inside a call of the caller.
import { connect as natsConnect } from 'nats';
import { Encoder, Decoder } from '@msgpack/msgpack';

const enc = new Encoder();
const dec = new Decoder({ useBigInt64: true }); // `ver` needs all 64 bits

const DEFAULTS = {
  subjectPrefix: 'presence',
  batchMax: 1000,
  batchDelayMs: 2,
  heartbeatMs: 1000,
  requestTimeoutMs: 2000,
  syncPartBytes: 512 * 1024,
};

/** An event or query refused by a node (code from docs/protocol.md section
 * 7) or by the client ("closed", "timeout", "bad_argument", "bad_reply"). */
export class PresenceError extends Error {
  constructor(code, message, extra) {
    super(message || code);
    this.name = 'PresenceError';
    this.code = code;
    if (extra) Object.assign(this, extra);
  }
}

// ---- MessagePack pieces (the body of an event is kept without its map
// header, so a batch adds `seq` without decoding it again) ----

function arrayHeader(n) {
  if (n < 16) return Uint8Array.of(0x90 | n);
  if (n < 0x10000) return Uint8Array.of(0xdc, n >> 8, n & 0xff);
  return Uint8Array.of(0xdd, n >>> 24, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff);
}

function mapHeader(n) {
  if (n < 16) return Uint8Array.of(0x80 | n);
  return Uint8Array.of(0xde, n >> 8, n & 0xff);
}

const K = Object.fromEntries(['type', 'batch', 'events', 'seq', 'sync', 'server', 'conns',
  'sync_id', 'part', 'parts'].map((k) => [k, enc.encode(k)]));

/** Encodes fields (at most 15 keys) as a map; returns its body and count. */
function eventBody(fields) {
  const keys = Object.keys(fields).filter((k) => fields[k] !== undefined);
  const obj = {};
  for (const k of keys) obj[k] = fields[k];
  const bytes = enc.encode(obj); // a fixmap: one header byte
  return { body: bytes.subarray(1), nkeys: keys.length };
}

function encodeBatch(evs, nextSeq) {
  const parts = [mapHeader(2), K.type, K.batch, K.events, arrayHeader(evs.length)];
  for (const e of evs) parts.push(mapHeader(e.nkeys + 1), e.body, K.seq, enc.encode(nextSeq()));
  return Buffer.concat(parts);
}

function encodeSync(server, entries, from, to, syncId, part, nparts) {
  const out = [mapHeader(syncId ? 6 : 3), K.type, K.sync, K.server, enc.encode(server), K.conns,
    arrayHeader(to - from)];
  for (let i = from; i < to; i++) out.push(entries[i]);
  if (syncId) out.push(K.sync_id, enc.encode(syncId), K.part, enc.encode(part), K.parts, enc.encode(nparts));
  return Buffer.concat(out);
}

function decodeMap(data) {
  let v;
  try {
    v = dec.decode(data);
  } catch {
    return null;
  }
  return v !== null && typeof v === 'object' && !Array.isArray(v) && !(v instanceof Uint8Array) ? v : null;
}

/** Reads a reply to an event: {ok, duplicate, error, message, failed}. */
function parseReply(data) {
  const r = decodeMap(data);
  if (!r || typeof r.ok !== 'boolean') return null;
  const failed = Array.isArray(r.failed) ? r.failed.filter((f) => f && typeof f === 'object') : [];
  return {
    ok: r.ok, duplicate: r.duplicate === true,
    error: typeof r.error === 'string' ? r.error : 'error',
    message: typeof r.message === 'string' ? r.message : '',
    failed,
  };
}

const num = (v) => (typeof v === 'bigint' ? Number(v) : typeof v === 'number' ? v : 0);
const str = (v) => (typeof v === 'string' ? v : '');

/** A state (notification or `get` entry) in the client's shape; asOf is
 * the reply's freshness for a get entry, 0 for a notification. */
function toState(m, initial, asOf = 0) {
  return {
    user: str(m.user), status: str(m.status), text: str(m.text), emoji: str(m.emoji),
    expiresAt: num(m.expires_at), lastSeen: num(m.last_seen),
    ver: typeof m.ver === 'bigint' ? m.ver : BigInt(Math.max(0, Math.trunc(num(m.ver)))),
    initial, asOf, stale: m.stale === true,
  };
}

const isId = (s) => typeof s === 'string' && s.length > 0;
// An id that goes into a subject (node, subject prefix, watched user): the
// protocol's rule (docs/protocol.md, Identifiers), so that it can never be
// a NATS wildcard or an empty token.
const SUBJECT_ID = /^[A-Za-z0-9_:@=+-](?:[A-Za-z0-9._:@=+-]*[A-Za-z0-9_:@=+-])?$/;
const isSubjectId = (s) => typeof s === 'string' && Buffer.byteLength(s) <= 128 && SUBJECT_ID.test(s) && !s.includes('..');
const badArg = (what) => Promise.reject(new PresenceError('bad_argument', what));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function isNoAnswer(err) {
  const code = err && err.code;
  return code === 'TIMEOUT' || code === '503' || code === 'CONNECTION_CLOSED' ||
    code === 'CONNECTION_DRAINING' || code === 'DISCONNECT';
}

/**
 * Connects to NATS and starts a client: it subscribes to
 * `<prefix>.resync.*` and sends the full sync to nodes[0].
 */
export async function createClient(opts = {}) {
  const watcher = opts.nodes === undefined && opts.serverId === undefined;
  if (!watcher) { // a socket server; without both, a client that only watches and queries
    if (!Array.isArray(opts.nodes) || opts.nodes.length === 0 || !opts.nodes.every(isSubjectId))
      throw new PresenceError('bad_argument', 'nodes: at least one node id (1-128 of A-Z a-z 0-9 . _ : @ = + -) is required');
    if (!isId(opts.serverId)) throw new PresenceError('bad_argument', 'serverId is required');
  }
  if (opts.listConns !== undefined && typeof opts.listConns !== 'function')
    throw new PresenceError('bad_argument', 'listConns must be a function');
  if (opts.subjectPrefix !== undefined && !isSubjectId(opts.subjectPrefix))
    throw new PresenceError('bad_argument', 'subjectPrefix must be an id (1-128 of A-Z a-z 0-9 . _ : @ = + -)');
  for (const k of ['batchMax', 'batchDelayMs', 'heartbeatMs', 'requestTimeoutMs', 'syncPartBytes'])
    if (opts[k] !== undefined && !(Number.isInteger(opts[k]) && opts[k] > 0))
      throw new PresenceError('bad_argument', `${k} must be a positive integer`);
  const own = !opts.nc;
  const nc = opts.nc ?? await natsConnect({
    servers: opts.servers ?? 'nats://127.0.0.1:4222', maxReconnectAttempts: -1, ...opts.natsOptions,
  });
  const c = new PresenceClient(nc, own, opts);
  try {
    await c._start();
  } catch (e) {
    if (own) await nc.close().catch(() => {});
    throw e;
  }
  return c;
}

export class PresenceClient {
  /** Use createClient(). */
  constructor(nc, ownNc, opts) {
    const o = { ...DEFAULTS, ...Object.fromEntries(Object.entries(opts).filter(([, v]) => v !== undefined)) };
    this.nc = nc;
    this._ownNc = ownNc;
    this.prefix = o.subjectPrefix;
    this.nodes = o.nodes ? [...o.nodes] : [];
    this.serverId = o.serverId ?? null;
    this._cur = 0;
    this._list = o.listConns;
    this._onError = typeof o.onError === 'function' ? o.onError : () => {};
    this._batchMax = o.batchMax;
    this._delayMs = o.batchDelayMs;
    this._hbMs = o.heartbeatMs;
    this._timeoutMs = o.requestTimeoutMs;
    this._partBytes = o.syncPartBytes;
    this._q = [];
    this._inflight = new Set();
    this._nextBatch = 0;
    this._seq = 0;
    this._syncNo = 0;
    this._restarts = 0;
    this._needSync = this.nodes.length > 0;
    this._syncing = false;
    this._stopped = false;
    this._closing = null;
    this._flushNow = false;
    this._waiters = [];
    this._timer = null;
    this._hbTimer = null;
    this._hbDue = 0;
    this._watches = new Set();
    this._stats = { batchesSent: 0, eventsSent: 0, syncsDone: 0, syncParts: 0, failovers: 0 };
  }

  async _start() {
    if (this.nodes.length) {
      this._subscribeResync();
      this._hbTimer = setInterval(() => {
        if (Date.now() >= this._hbDue) {
          this._queueHeartbeat();
          this._pump();
        }
      }, Math.max(1, Math.floor(this._hbMs / 2)));
    this._hbTimer.unref(); // the NATS connection is what keeps a process alive
    }
    await this.nc.flush();
    this._pump();
  }

  /** Subscribes to <prefix>.resync.<current node> only (a socket server's
   * NATS user may read its own node's subject alone, deploy/nats-accounts.conf). */
  _subscribeResync() {
    if (this._resyncSub) this._resyncSub.unsubscribe();
    const node = this.nodes[this._cur];
    this._resyncSub = this.nc.subscribe(`${this.prefix}.resync.${node}`, {
      callback: (err) => {
        if (err || this._stopped || this.nodes[this._cur] !== node) return;
        this._needSync = true;
        this._pump();
      },
    });
  }

  // ---- events ----

  /** A socket opened: an active device `device` of `user` on connection `conn`. */
  connect(conn, user, device, meta) {
    if (!isId(conn) || !isId(user) || !isId(device)) return badArg('conn, user and device must be non-empty strings');
    if (meta !== undefined && meta !== null && (typeof meta !== 'object' || Array.isArray(meta)))
      return badArg('meta must be an object');
    return this._event({ type: 'connect', server: this.serverId, conn, user, device, meta: meta ?? undefined });
  }

  /** The socket closed. */
  disconnect(conn) { return this._connEvent('disconnect', conn); }

  /** The user did something on this connection (throttle: one every few seconds is enough). */
  activity(conn) { return this._connEvent('activity', conn); }

  /** The app on this connection went to the background. */
  idle(conn) { return this._connEvent('idle', conn); }

  /** The user's chosen status: auto, away, busy or invisible. */
  status(user, status) {
    if (!isId(user) || !isId(status)) return badArg('user and status must be non-empty strings');
    return this._event({ type: 'status', server: this.serverId, user, status });
  }

  /** The user's custom status; text "" clears it. */
  custom(user, text, { emoji, expiresAt } = {}) {
    if (!isId(user) || typeof text !== 'string') return badArg('user must be a non-empty string, text a string');
    if (expiresAt !== undefined && !(Number.isInteger(expiresAt) && expiresAt >= 0)) return badArg('expiresAt must be an integer >= 0');
    return this._event({
      type: 'custom', server: this.serverId, user, text,
      emoji: emoji ? emoji : undefined, expires_at: expiresAt ? expiresAt : undefined,
    });
  }

  _connEvent(type, conn) {
    if (!isId(conn)) return badArg('conn must be a non-empty string');
    return this._event({ type, server: this.serverId, conn });
  }

  _event(fields) {
    if (this._stopped || this._closing) return Promise.reject(new PresenceError('closed', 'the client is closed'));
    if (!this.nodes.length) return badArg('this client has no nodes: it only watches and queries');
    return new Promise((resolve, reject) => {
      this._enqueue({ ...eventBody(fields), resolve, reject });
    });
  }

  _enqueue(ev) {
    if (this._q.length === 0) this._qFirst = Date.now();
    this._q.push(ev);
    if (this._q.length >= this._batchMax) this._pump();
    else this._arm();
  }

  _queueHeartbeat() {
    this._hbDue = Date.now() + this._hbMs;
    this._enqueue({
      ...eventBody({ type: 'heartbeat', server: this.serverId }),
      resolve: () => {},
      reject: (e) => { if (e.code !== 'closed') this._onError(e); },
    });
  }

  _arm() {
    if (this._timer || this._stopped) return;
    const wait = Math.max(0, this._qFirst + this._delayMs - Date.now());
    this._timer = setTimeout(() => {
      this._timer = null;
      this._pump(true);
    }, wait);
    this._timer.unref();
  }

  /** Sends what is due; `due` when the oldest event has waited long enough. */
  _pump(due = false) {
    if (this._stopped) return;
    if (this._needSync && !this._syncing) this._runSync();
    if (this._syncing) return;
    while (this._q.length && (due || this._flushNow || this._q.length >= this._batchMax)) this._sendBatch();
    if (this._q.length) this._arm();
    this._checkDrained();
  }

  _sendBatch() {
    let n = 0;
    let bytes = 0;
    while (n < this._q.length && n < this._batchMax && bytes < this._partBytes) bytes += this._q[n++].body.length + 16;
    const evs = this._q.splice(0, n);
    if (this._q.length) this._qFirst = Date.now();
    const b = { id: ++this._nextBatch, node: this._cur, evs, abandoned: false };
    const payload = encodeBatch(evs, () => ++this._seq);
    this._inflight.add(b);
    this._stats.batchesSent++;
    this._stats.eventsSent += n;
    const subj = `${this.prefix}.events.${this.nodes[b.node]}`;
    let p;
    try {
      p = this.nc.request(subj, payload, { timeout: this._timeoutMs });
    } catch (e) {
      p = Promise.reject(e);
    }
    p.then((m) => this._onBatchReply(b, m.data), (e) => this._onBatchError(b, e));
  }

  _onBatchReply(b, data) {
    if (b.abandoned) return;
    this._inflight.delete(b);
    const r = parseReply(data);
    const byIndex = new Map();
    if (r && !r.ok && r.error === 'partial')
      for (const f of r.failed) if (f.i !== undefined) byIndex.set(num(f.i), f);
    b.evs.forEach((e, i) => {
      if (!r) e.reject(new PresenceError('bad_reply', "the node's reply could not be read"));
      else if (r.ok) e.resolve({ duplicate: r.duplicate });
      else if (r.error !== 'partial') e.reject(new PresenceError(r.error, r.message));
      else if (byIndex.has(i)) {
        const f = byIndex.get(i);
        e.reject(new PresenceError(str(f.error) || 'error', str(f.message)));
      } else e.resolve({ duplicate: false });
    });
    this._checkDrained();
  }

  _onBatchError(b, err) {
    if (b.abandoned) return;
    if (this._stopped) {
      this._inflight.delete(b);
      for (const e of b.evs) e.reject(new PresenceError('closed', 'the client was closed before the node answered'));
      return;
    }
    // No answer, or no node subscribed: the node is gone for this client.
    if (!isNoAnswer(err)) this._onError(err);
    this._failover();
    this._pump();
  }

  /** Moves to the next node: every unanswered batch goes back to the front
   * of the queue, oldest first, and a full sync to the new node comes first. */
  _failover() {
    const back = [...this._inflight].sort((a, b) => a.id - b.id);
    this._inflight.clear();
    const evs = [];
    for (const b of back) {
      b.abandoned = true;
      evs.push(...b.evs);
    }
    if (evs.length) {
      if (this._q.length === 0) this._qFirst = Date.now();
      this._q.unshift(...evs);
    }
    const before = this._cur;
    this._cur = (this._cur + 1) % this.nodes.length;
    if (this._cur !== before) this._subscribeResync();
    this._needSync = true;
    this._stats.failovers++;
  }

  // ---- sync ----

  async _runSync() {
    this._syncing = true;
    this._needSync = false;
    const node = this._cur;
    let ok = false;
    try {
      ok = await this._doSync(node);
      if (ok === 'restart') { // the node lost the sync under way: part 1 again
        this._syncing = false;
        this._needSync = true;
        this._pump();
        return;
      }
    } catch (e) {
      if (e && e.listing) { // the caller's listConns failed: not the node's fault
        this._onError(e.cause);
        this._syncing = false;
        this._needSync = true;
        await sleep(1000);
        this._pump();
        return;
      }
      ok = false;
    }
    this._syncing = false;
    if (this._stopped) {
      this._checkDrained();
      return;
    }
    if (ok) {
      if (Date.now() >= this._hbDue) this._queueHeartbeat(); // the first heartbeat follows the sync
    } else {
      if (this._cur === node) this._failover();
      this._needSync = true;
      await sleep(100); // a node that says "no responders" at once
    }
    this._pump(true);
  }

  async _listEntries() {
    const entries = [];
    let bad = 0;
    try {
      const list = this._list ? (await this._list()) ?? [] : [];
      for (const x of list) {
        if (!x || !isId(x.conn) || !isId(x.user) || !isId(x.device)) {
          bad++;
          continue;
        }
        entries.push(enc.encode({ conn: x.conn, user: x.user, device: x.device }));
      }
    } catch (e) { // the caller's listConns failed (or returned no iterable)
      throw Object.assign(new Error('listConns failed'), { listing: true, cause: e });
    }
    if (bad) this._onError(new PresenceError('bad_argument', `listConns: ${bad} entries without conn, user and device were left out`));
    return entries;
  }

  /** The full sync to nodes[node], in parts of at most syncPartBytes; true
   * when every part was answered (a refusal is an answer: sending it again
   * would not help, and is reported through onError). */
  async _doSync(node) {
    const entries = await this._listEntries();
    const cuts = [];
    let from = 0;
    while (from < entries.length || cuts.length === 0) {
      let to = from;
      let size = 0;
      while (to < entries.length && (to === from || size + entries[to].length < this._partBytes)) size += entries[to++].length;
      cuts.push([from, to]);
      from = to;
    }
    const syncId = cuts.length > 1 ? `nj-${Date.now().toString(16)}-${++this._syncNo}` : null;
    const subj = `${this.prefix}.events.${this.nodes[node]}`;
    for (let p = 0; p < cuts.length; p++) {
      if (this._stopped) return false;
      const payload = encodeSync(this.serverId, entries, cuts[p][0], cuts[p][1], syncId, p + 1, cuts.length);
      let m;
      try {
        m = await this.nc.request(subj, payload, { timeout: this._timeoutMs });
      } catch (e) {
        if (!isNoAnswer(e)) this._onError(e);
        return false;
      }
      this._stats.syncParts++;
      const r = parseReply(m.data);
      if (r && !r.ok && r.error === 'bad_value' && p > 0 && this._restarts < 3) {
        // "no such sync under way": the node restarted, or the parts took
        // longer than PRESENCE_SYNC_PARTS_TIMEOUT_MS; start again from part
        // 1 (docs/integrating.md), at most three times in a row.
        this._restarts++;
        this._onError(new PresenceError(r.error, `sync part ${p + 1}/${cuts.length} refused, starting the sync again: ${r.message}`));
        return 'restart';
      }
      if (r && !r.ok) {
        const failed = r.failed.map((f) => ({ conn: str(f.conn), error: str(f.error), message: str(f.message) }));
        this._onError(new PresenceError(r.error, `sync part ${p + 1}/${cuts.length}: ${r.message}`, { failed }));
      }
    }
    this._stats.syncsDone++;
    this._restarts = 0;
    return true;
  }

  // ---- waiting, closing ----

  _drained() {
    return this._q.length === 0 && this._inflight.size === 0 && !this._needSync && !this._syncing;
  }

  _checkDrained() {
    if (!this._drained()) return;
    this._flushNow = false;
    const w = this._waiters;
    this._waiters = [];
    for (const x of w) x.resolve();
  }

  /** Sends what is queued now and waits until every event is answered
   * (and a pending sync is done). Rejects with "timeout" after timeoutMs. */
  flush(timeoutMs = 5000) {
    if (this._stopped) return Promise.reject(new PresenceError('closed', 'the client is closed'));
    if (this._drained()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const w = { resolve: () => { clearTimeout(t); resolve(); }, reject };
      const t = setTimeout(() => {
        this._waiters = this._waiters.filter((x) => x !== w);
        reject(new PresenceError('timeout', `flush: not everything was answered within ${timeoutMs} ms`));
      }, timeoutMs);
      this._waiters.push(w);
      this._flushNow = true;
      this._pump(true);
    });
  }

  /** Sends a full sync now (as on a resync request). */
  resync() {
    if (this._stopped || !this.nodes.length) return;
    this._needSync = true;
    this._pump();
  }

  /** The index in `nodes` that events go to now. */
  currentNode() { return this._cur; }

  /** Batches and events sent, syncs and parts answered, failovers. */
  stats() { return { ...this._stats }; }

  /**
   * Flushes (up to timeoutMs), sends `shutdown` if asked (the node ends
   * every connection of this server at once), and stops. Events not sent or
   * not answered by then reject with "closed".
   */
  close({ shutdown = true, timeoutMs = 2000 } = {}) {
    if (!this._closing) this._closing = this._close(shutdown, timeoutMs);
    return this._closing;
  }

  async _close(shutdown, timeoutMs) {
    await this.flush(timeoutMs).catch(() => {});
    if (shutdown && this.nodes.length) {
      const subj = `${this.prefix}.events.${this.nodes[this._cur]}`;
      await this.nc.request(subj, enc.encode({ type: 'shutdown', server: this.serverId }),
        { timeout: this._timeoutMs }).catch(() => {});
    }
    this._stopped = true;
    clearInterval(this._hbTimer);
    clearTimeout(this._timer);
    for (const w of [...this._watches]) w.stop();
    const closed = (what) => new PresenceError('closed', `the client was closed before ${what}`);
    for (const e of this._q.splice(0)) e.reject(closed('the event was sent'));
    for (const b of this._inflight) for (const e of b.evs) e.reject(closed('the node answered'));
    this._inflight.clear();
    for (const w of this._waiters.splice(0)) w.reject(closed('everything was answered'));
    if (this._resyncSub) this._resyncSub.unsubscribe();
    if (this._ownNc) await this.nc.drain().catch(() => {});
  }

  // ---- queries and watching ----

  async _query(kind, req, node) {
    const subj = `${this.prefix}.query.${kind}${node ? '.' + node : ''}`;
    const m = await this.nc.request(subj, enc.encode(req), { timeout: this._timeoutMs });
    const r = decodeMap(m.data);
    if (!r) throw new PresenceError('bad_reply', `${kind}: the reply could not be read`);
    if (r.ok === false) throw new PresenceError(str(r.error) || 'error', str(r.message));
    return r;
  }

  /** `get` of up to 1000 users: one state per user, in order, with its
   * number of live `devices`. viewer = the user gives that user's own view
   * (invisible shows); node asks that node only. */
  async get(users, { viewer, node } = {}) {
    return (await this._get(users, viewer, node)).entries;
  }

  /** The get reply: its entries and its `as_of` (-1 when the node does not say). */
  async _get(users, viewer, node) {
    if (!Array.isArray(users) || !users.every(isId)) throw new PresenceError('bad_argument', 'users must be an array of ids');
    const r = await this._query('get', viewer ? { users, viewer } : { users }, node);
    if (!Array.isArray(r.users)) throw new PresenceError('bad_reply', 'get: no users in the reply');
    const asOf = r.as_of === undefined ? -1 : num(r.as_of);
    return {
      asOf,
      entries: r.users.filter((m) => m && typeof m === 'object')
        .map((m) => ({ ...toState(m, true, Math.max(0, asOf)), devices: num(m.devices) })),
    };
  }

  /** `devices` of one user: its live connections, sorted by server then conn. */
  async devices(user, { node } = {}) {
    if (!isId(user)) throw new PresenceError('bad_argument', 'user must be an id');
    const r = await this._query('devices', { user }, node);
    return (Array.isArray(r.devices) ? r.devices : []).map((d) => ({
      conn: str(d.conn), server: str(d.server), node: str(d.node), device: str(d.device),
      state: str(d.state), connectedAt: num(d.connected_at), lastActive: num(d.last_active),
    }));
  }

  /**
   * Watches 1..1000 users without a race: subscribes to <prefix>.user.<u>,
   * flushes, asks `get`, calls onState with each answer (initial: true),
   * then with each notification whose `ver` is above the one shown for that
   * user. Resolves once the initial states were reported.
   */
  async watch(users, onState) {
    if (typeof onState !== 'function') throw new PresenceError('bad_argument', 'onState must be a function');
    if (!Array.isArray(users) || users.length === 0 || users.length > 1000 ||
        !users.every(isSubjectId))
      throw new PresenceError('bad_argument', 'users must be 1..1000 ids (1-128 of A-Z a-z 0-9 . _ : @ = + -)');
    if (this._stopped || this._closing) throw new PresenceError('closed', 'the client is closed');
    const w = new Watch(this, [...new Set(users)], onState);
    await w._start();
    return w;
  }
}

export class Watch {
  /** Use PresenceClient.watch(). */
  constructor(client, users, onState) {
    this._c = client;
    this.users = users;
    this._fn = onState;
    this._ver = new Map(users.map((u) => [u, -1n]));
    this._subs = [];
    this._held = [];
    this._ready = false;
    this._stopped = false;
  }

  async _start() {
    const c = this._c;
    try {
      for (const u of this.users)
        this._subs.push(c.nc.subscribe(`${c.prefix}.user.${u}`, { callback: (err, msg) => { if (!err) this._note(msg.data); } }));
      await c.nc.flush(); // the subscriptions are in place before the get
      // A node that lags the announcer could answer with a state older than
      // notifications sent before the subscriptions were in place, and the
      // states between would be missed: ask again until the answer's
      // as_of reaches that time, or take the last answer after the request
      // timeout (schemas/notifications.md#ver, as libpresence does).
      const since = Date.now();
      const giveUp = since + c._timeoutMs;
      let r;
      for (;;) {
        r = await c._get(this.users);
        if (r.asOf < 0 || r.asOf >= since || Date.now() >= giveUp || this._stopped) break;
        await sleep(20);
      }
      for (const e of r.entries) {
        const { devices, ...st } = e;
        void devices;
        this._report(st, true);
      }
      this._ready = true;
      const held = this._held;
      this._held = [];
      for (const d of held) this._note(d);
    } catch (e) {
      this.stop();
      throw e;
    }
    if (!this._stopped) c._watches.add(this);
  }

  _note(data) {
    if (this._stopped) return;
    if (!this._ready) {
      this._held.push(data);
      return;
    }
    const m = decodeMap(data);
    if (m && typeof m.user === 'string') this._report(toState(m, false), false);
  }

  _report(st, initial) {
    const shown = this._ver.get(st.user);
    if (shown === undefined || (!initial && st.ver <= shown)) return;
    this._ver.set(st.user, st.ver);
    try {
      this._fn(st);
    } catch (e) {
      this._c._onError(e);
    }
  }

  /** Stops the watch: no onState call after this returns. */
  stop() {
    if (this._stopped) return;
    this._stopped = true;
    for (const s of this._subs) s.unsubscribe();
    this._subs = [];
    this._c._watches.delete(this);
  }
}
