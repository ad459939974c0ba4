#!/usr/bin/env python3
"""partition.py - presence across real network partitions (netns.py).

Three sides, each a network namespace with one clustered nats-server
(JetStream on) and one presenced connected only to it; Redis and the test
in the test's own namespace, reachable from every side. The test plays the
socket servers (events through each side's own nats-server) and one
watcher per side (P.user.> on that side's server). Scenarios:

  minority   side 0 cut for 5 s, events on both sides, then healed
  threeway   every side cut from the others, events on each, then healed
  flap       side 0's bridge port blocked and unblocked every 350 ms for
             6 s (a 700 ms period, shorter than the 750 ms node timeout), no
             events; with PRESENCE_SUSPICION_MS 12000 it must announce
             nobody offline and give no user more than 2 notifications
             (--suspicion-ms 0 measures the detector without suspicion)

After the heal each checks, within node timeout + offline delay + one sync
interval (and a margin for this shared machine), that:
  - every side's `get` of every user gives the truth (online for a user
    with an open connection, offline otherwise) and `devices` lists each
    open connection exactly once;
  - every watcher's last notification for every user (the newest by ts,
    as the contract tells watchers to keep) equals the truth;
  - no answer is `stale` and every `as_of` is recent (the sides hear each
    other again).
It reports the offline notifications the split caused for users who stayed
connected (and for flap, the notifications per user), and fails on a
wrong end state. Exit 77 (skipped) where namespaces cannot be made.

    tests/partition/partition.py --bin-dir build [--scenario minority,threeway,flap]
"""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "chaos"))
sys.path.insert(0, os.path.join(HERE, ".."))
import netns  # noqa: E402
from cluster import Proc, wait_for  # noqa: E402
from freeport import free_ports  # noqa: E402
from pdwire import Nats, WireError, mp_pack, mp_unpack  # noqa: E402

SYNC_MS, NODE_TIMEOUT_MS, OFFLINE_DELAY_MS = 250, 750, 1000
# The flap scenario's PRESENCE_SUSPICION_MS. Heartbeats cross a flapping
# link late or not at all: TCP backs off its retransmissions across the
# down windows, and when it gives up (tcp_retries2) the NATS route is
# rebuilt, which the flapping delays too. Silences of 1 to 8 s were seen
# here (the flapping lasts 6 s), so the bound asserted is the one the
# suspicion gives by construction: a flapping period shorter than node
# timeout + suspicion announces nobody offline. The splits keep the node's
# default (2 sync intervals: down after 1.25 s of silence).
FLAP_SUSPICION_MS = 12000
NODES = ("n1", "n2", "n3")
PREFIX = "presence"


class Fail(Exception):
    pass


class Side:
    """The test's connection to one side: requests and its watcher."""

    def __init__(self, i, url):
        self.i, self.url = i, url
        self.nc = Nats([url])
        self.last = {}        # user -> last notified public status
        self.count = {}       # user -> notifications
        self.offline = {}     # user -> offline notifications
        self.ts = {}          # user -> newest ts seen
        self.stale = 0        # notifications older than one seen before
        self.nc.subscribe(PREFIX + ".user.>", self.on_note)
        self.nc.flush()

    def on_note(self, subject, data):
        try:
            v = mp_unpack(data)
        except WireError:
            return
        u = v.get("user")
        self.count[u] = self.count.get(u, 0) + 1
        # As the contract tells watchers: ts only grows for a user, so one
        # older than the newest seen is stale (a route delivering late).
        ts = v.get("ts") or 0
        if ts < self.ts.get(u, 0):
            self.stale += 1
            return
        self.ts[u] = ts
        self.last[u] = v.get("status")
        if v.get("status") == "offline":
            self.offline[u] = self.offline.get(u, 0) + 1

    def request(self, subject, msg, timeout=2.0):
        data = self.nc.request(subject, mp_pack(msg), timeout)
        return None if data is None else mp_unpack(data)

    def poll(self, secs=0.0):
        self.nc.poll(secs)


class World:
    def __init__(self, args, workdir, scenario):
        self.dir = workdir
        self.topo = netns.Topology(3)
        self.bin = args.bin_dir
        self.presenced = args.presenced or os.path.join(self.bin, "presenced")
        self.suspicion_ms = args.suspicion_ms
        if self.suspicion_ms is None and scenario == "flap":
            self.suspicion_ms = FLAP_SUSPICION_MS
        self.procs = []
        self.sides = []
        self.truth = {}       # (server, conn) -> user, open connections
        self.users = set()
        self.seq = {}

    # -- processes --
    def start(self):
        t = self.topo
        t.create()
        for i in range(3):
            store = os.path.join(self.dir, "js%d" % i)
            conf = os.path.join(self.dir, "nats%d.conf" % i)
            with open(conf, "w") as f:
                f.write(t.nats_conf(i, "s%d" % i, "part", store))
            p = Proc("nats%d" % i, t.argv(i, ["nats-server", "-c", conf]),
                     os.path.join(self.dir, "nats%d.log" % i))
            p.start()
            self.procs.append(p)
        rport = free_ports(1)[0]
        binds = ["127.0.0.1"] + [t.host_addr(i) for i in range(3)]
        redis = Proc("redis", ["redis-server", "--bind", " ".join(binds), "--port", str(rport),
                               "--dir", self.dir, "--save", "", "--appendonly", "no",
                               "--protected-mode", "no"], os.path.join(self.dir, "redis.log"))
        redis.start()
        self.procs.append(redis)
        for i in range(3):
            if not wait_for(lambda: self._connect(i), 15):
                raise Fail("side %d: nats-server does not answer (see %s/nats%d.log)"
                           % (i, self.dir, i))
        for i, nid in enumerate(NODES):
            env = dict(os.environ)
            env.update({"PRESENCE_NODE_ID": nid, "PRESENCE_NATS_URL": "nats://127.0.0.1:4222",
                        "PRESENCE_REDIS_URL": "redis://%s:%d" % (t.host_addr(i), rport),
                        "PRESENCE_SYNC_INTERVAL_MS": str(SYNC_MS),
                        "PRESENCE_NODE_TIMEOUT_MS": str(NODE_TIMEOUT_MS),
                        "PRESENCE_OFFLINE_DELAY_MS": str(OFFLINE_DELAY_MS),
                        "PRESENCE_SERVER_TIMEOUT_MS": "600000",
                        "PRESENCE_SNAPSHOT_INTERVAL_MS": "2000",
                        "PRESENCE_LOG_LEVEL": "debug"})
            if self.suspicion_ms is not None:
                env["PRESENCE_SUSPICION_MS"] = str(self.suspicion_ms)
            p = Proc(nid, t.argv(i, [self.presenced]), os.path.join(self.dir, nid + ".log"), env)
            p.start()
            self.procs.append(p)
        if not wait_for(self.all_alive_everywhere, 40, 0.2):
            raise Fail("the cluster did not form (logs in %s)" % self.dir)

    def _connect(self, i):
        if len(self.sides) > i:
            return True
        try:
            self.sides.append(Side(i, "nats://%s:4222" % self.topo.svc_addr(i)))
            return True
        except (OSError, WireError):
            return False

    def stop(self):
        for s in self.sides:
            s.nc.close()
        for p in reversed(self.procs):
            p.kill(signal.SIGKILL, wait=5)
        self.topo.destroy()

    # -- cluster view --
    def cluster(self, i):
        return self.sides[i].request(PREFIX + ".query.cluster", {}, 1.0)

    def all_alive_everywhere(self):
        for i in range(3):
            c = self.cluster(i)
            if not c or sum(1 for e in c.get("nodes", []) if e.get("alive")) != 3:
                return False
        return True

    # -- events (the test plays the socket servers: s<i> on side i) --
    def event(self, i, ev):
        server = "s%d" % i
        self.seq[server] = self.seq.get(server, 0) + 1
        ev = dict(ev, seq=self.seq[server])
        if "conn" in ev:
            ev["server"] = server
        r = self.sides[i].request("%s.events.%s" % (PREFIX, NODES[i]), ev, 3.0)
        if not r or not r.get("ok"):
            raise Fail("side %d: %r answered %r" % (i, ev, r))

    def connect(self, i, user):
        conn = "c-%s" % user
        self.event(i, {"type": "connect", "conn": conn, "user": user, "device": "web"})
        self.truth[("s%d" % i, conn)] = user
        self.users.add(user)

    def disconnect(self, i, user):
        conn = "c-%s" % user
        self.event(i, {"type": "disconnect", "conn": conn})
        del self.truth[("s%d" % i, conn)]

    def expected(self, user):
        return "online" if user in self.truth.values() else "offline"

    # -- checks --
    def wrong_answers(self):
        """What the sides' queries get wrong now ([] when all is right)."""
        wrong = []
        users = sorted(self.users)
        for i in range(3):
            for _ in range(3):   # the queue group may send each ask elsewhere
                r = self.sides[i].request(PREFIX + ".query.get", {"users": users}, 2.0)
                if not r:
                    wrong.append("side %d: no answer to get" % i)
                    continue
                for e in r.get("users", []):
                    if e.get("status") != self.expected(e.get("user")):
                        wrong.append("side %d: %s is %s" % (i, e.get("user"), e.get("status")))
                    if e.get("stale"):
                        wrong.append("side %d: %s is still stale" % (i, e.get("user")))
                wrong += self.wrong_as_of(i, "get", r)
            for u in users:
                r = self.sides[i].request(PREFIX + ".query.devices", {"user": u}, 2.0)
                got = sorted((d.get("server"), d.get("conn")) for d in (r or {}).get("devices", []))
                want = sorted(k for k, v in self.truth.items() if v == u)
                if got != want:
                    wrong.append("side %d: devices of %s %r, want %r" % (i, u, got, want))
                if r and r.get("stale"):
                    wrong.append("side %d: devices of %s still stale" % (i, u))
                wrong += self.wrong_as_of(i, "devices", r)
        return wrong

    @staticmethod
    def wrong_as_of(i, what, r):
        """A healed side is caught up with every peer: as_of (the nodes'
        clocks are this machine's) is at most a few sync intervals old."""
        if not r:
            return []
        lag = time.time() * 1000 - r.get("as_of", 0)
        if lag > 20 * SYNC_MS:
            return ["side %d: %s as_of is %.0f ms old" % (i, what, lag)]
        return []

    def wrong_notifications(self):
        wrong = []
        for s in self.sides:
            s.poll(0.05)
            for u in sorted(self.users):
                if s.last.get(u) != self.expected(u):
                    wrong.append("watcher %d: last for %s is %s, truth %s"
                                 % (s.i, u, s.last.get(u), self.expected(u)))
        return wrong

    def settle(self, what, secs):
        """Waits until answers and notifications are right; returns the
        seconds it took, or raises Fail with what is still wrong."""
        t0 = time.monotonic()
        left = []
        while time.monotonic() - t0 < secs:
            for s in self.sides:
                s.poll(0.05)
            left = self.wrong_answers() + self.wrong_notifications()
            if not left:
                return time.monotonic() - t0
            time.sleep(0.2)
        raise Fail("%s: not converged after %.0f s:\n  %s" % (what, secs, "\n  ".join(left[:20])))

    def wait_quiet(self, quiet_s, secs):
        """Polls until no watcher heard anything for quiet_s (what the
        start and the populating announced has landed), at most secs."""
        end = time.monotonic() + secs
        heard, since = None, time.monotonic()
        while time.monotonic() < end:
            self.watch(0.05)
            now_heard = sum(sum(s.count.values()) for s in self.sides)
            if now_heard != heard:
                heard, since = now_heard, time.monotonic()
            elif time.monotonic() - since >= quiet_s:
                return
        raise Fail("notifications still arriving after %.0f s" % secs)

    def watch(self, secs):
        end = time.monotonic() + secs
        while time.monotonic() < end:
            for s in self.sides:
                s.poll(0.02)

    def log_count(self, needle):
        """Lines of the nodes' logs that contain needle."""
        n = 0
        for nid in NODES:
            try:
                with open(os.path.join(self.dir, nid + ".log"), errors="replace") as f:
                    n += sum(1 for line in f if needle in line)
            except OSError:
                pass
        return n

    def detector(self):
        """What the failure detector did: peers declared down (each node
        counts its own), suspicions cleared by a heartbeat in time."""
        return {"downs": self.log_count(" is down (silent)"),
                "suspicions_cleared": self.log_count("no longer suspected")}

    def false_offline(self):
        """Offline notifications, per watcher, for users connected all along."""
        steady = [u for u in self.users if u.startswith("steady")]
        return {s.i: sum(s.offline.get(u, 0) for u in steady) for s in self.sides}


# Users named steady-* stay connected through the whole scenario.
def populate(w, per_side=4):
    for i in range(3):
        for k in range(per_side):
            w.connect(i, "steady-%d-%d" % (i, k))
        for k in range(2):
            w.connect(i, "leaver-%d-%d" % (i, k))
    w.settle("before the split", 20)
    for s in w.sides:
        s.offline.clear()


HEAL_BUDGET_S = (NODE_TIMEOUT_MS + OFFLINE_DELAY_MS + SYNC_MS) / 1000 + 15


def minority(w):
    populate(w)
    w.topo.cut(0)
    t0 = time.monotonic()
    # Events on both sides while split.
    w.connect(0, "joiner-0")
    w.disconnect(0, "leaver-0-0")
    w.connect(1, "joiner-1")
    w.disconnect(1, "leaver-1-0")
    w.watch(max(0.0, 5.0 - (time.monotonic() - t0)))
    w.topo.heal(0)
    took = w.settle("minority split healed", HEAL_BUDGET_S)
    return {"converged_s": round(took, 2), "false_offline": w.false_offline()}


def threeway(w):
    populate(w)
    w.topo.cut_all()
    t0 = time.monotonic()
    for i in range(3):
        w.connect(i, "joiner-%d" % i)
        w.disconnect(i, "leaver-%d-0" % i)
    w.watch(max(0.0, 5.0 - (time.monotonic() - t0)))
    w.topo.heal_all()
    took = w.settle("three-way split healed", HEAL_BUDGET_S)
    return {"converged_s": round(took, 2), "false_offline": w.false_offline()}


def flap(w):
    populate(w)
    # What populating announced, and a repeat of it, has landed: the
    # flapping's repeats reach back one sync interval before a silence,
    # and only what changed from then on is counted against it.
    w.wait_quiet(4 * SYNC_MS / 1000, 20)
    counts0 = {s.i: dict(s.count) for s in w.sides}
    end = time.monotonic() + 6.0
    while time.monotonic() < end:
        w.topo.block(0)
        w.watch(0.35)
        w.topo.unblock(0)
        w.watch(0.35)
    took = w.settle("after the flapping", HEAL_BUDGET_S)
    per_user = {}
    for s in w.sides:
        for u, c in s.count.items():
            extra = c - counts0[s.i].get(u, 0)
            per_user[u] = max(per_user.get(u, 0), extra)
    out = {"converged_s": round(took, 2), "false_offline": w.false_offline(),
           "max_notifications_per_user": max(per_user.values() or [0]),
           "suspicion_ms": w.suspicion_ms}
    # The bound (docs/failure-modes.md, "Defined behaviour during a split"):
    # suspected peers heard again in time are never declared down, so a
    # flapping link announces nobody offline, and a user gets at most a
    # repeat or two (a heal's re-announce), never a flap.
    if w.suspicion_ms == FLAP_SUSPICION_MS:
        if any(out["false_offline"].values()):
            raise Fail("the flapping announced users offline: %r" % out)
        if out["max_notifications_per_user"] > 2:
            raise Fail("a user got %d notifications from the flapping: %r"
                       % (out["max_notifications_per_user"], out))
    return out


SCENARIOS = {"minority": minority, "threeway": threeway, "flap": flap}


def main():
    ap = argparse.ArgumentParser(description="presence across real network partitions")
    ap.add_argument("--bin-dir", required=True)
    ap.add_argument("--presenced", default=os.environ.get("PD_PRESENCED_BIN") or None)
    ap.add_argument("--scenario", default="minority,threeway,flap")
    ap.add_argument("--keep", action="store_true", help="keep the logs folder")
    ap.add_argument("--suspicion-ms", type=int, default=None,
                    help="PRESENCE_SUSPICION_MS of the nodes (default: theirs); 0 measures "
                         "the detector without suspicion")
    a = ap.parse_args()
    ok, why = netns.Topology.available()
    if not ok:
        print("partition: SKIPPED: %s" % why)
        return 77
    for tool in ("nats-server", "redis-server"):
        if shutil.which(tool) is None:
            print("partition: SKIPPED: %s is not installed" % tool)
            return 77
    netns.Topology.sweep()
    report, failed = {}, False
    for name in a.scenario.split(","):
        workdir = tempfile.mkdtemp(prefix="pd-part-%s-" % name)
        w = World(a, workdir, name)
        try:
            w.start()
            report[name] = SCENARIOS[name](w)
            report[name]["stale_dropped"] = {s.i: s.stale for s in w.sides}
            report[name].update(w.detector())
            print("partition %s: ok %s" % (name, json.dumps(report[name])), flush=True)
        except (Fail, WireError, OSError) as e:
            if not isinstance(e, Fail):
                import traceback
                traceback.print_exc()
            failed = True
            report[name] = {"error": str(e)}
            print("partition %s: FAILED: %s\n  (logs in %s)" % (name, e, workdir), flush=True)
        finally:
            w.stop()
        if not failed and not a.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(report))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
