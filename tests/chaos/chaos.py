#!/usr/bin/env python3
"""chaos.py - the chaos test of presenced (`make chaos`; a short run is the
ctest entry `chaos_short` of `make test`).

Starts, on free loopback ports under a temp dir, three clustered
nats-servers with JetStream, a redis-server, three presenced nodes and
presence-sim (steady load across six socket servers attached to the three
nodes), then for the load's duration injects random faults from a seeded
RNG (faults.py: SIGKILL + restart of a node, SIGSTOP + SIGCONT of a node,
restart of a nats-server, restart of Redis; and network partitions when
it can run the cluster in network namespaces, as root with `ip netns`:
each nats-server + node pair then has a namespace of its own, see
cluster.py and tests/partition/netns.py). A few seconds before the load
ends it stops injecting and lets every fault recover; then it stops the
load, waits for the cluster to converge (polling, with a deadline),
compares every node's view with the oracle (compare.py), and runs
`presencectl cluster --diff`: every node must give the same answers (ver
included), with partitions as without (`--strict-diff`, which made that
count with partitions, is still accepted and changes nothing).

A watcher per nats-server follows P.user.> through the run, and each
user's last notification must equal what `get` says at the end, but for
the class docs/failure-modes.md does not promise, counted apart (watch.py:
what it found, what is fixed and what is left); --no-watch leaves the
watchers out (the 20 s chaos_short of make test does: a class that is
not covered yet must not fail a landing).

Prints a table and one JSON line: events sent, faults by kind (and why
partitions did not run, where they did not), users lost, ghosts, divergent
nodes, time to converge and what the watchers heard. Namespaces, links
and processes are removed at the end, also on failure, Ctrl-C or SIGTERM.
Exit 0 only if lost, ghosts and divergent nodes are all 0, the nodes'
answers agree, every watcher still connected last heard what get says
(the class not promised aside) and every node exits cleanly on SIGTERM
at the end; 1 otherwise (the logs are kept and their tails shown), 2 bad
usage, 3 the cluster could not be set up.

Python 3 standard library only."""
import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "partition"))

import compare  # noqa: E402
import pdwire  # noqa: E402
import watch  # noqa: E402
from cluster import Cluster, ClusterError, wait_for  # noqa: E402
from faults import Injector, wait_all_up  # noqa: E402
import netns  # noqa: E402  (tests/partition/netns.py)

# Node settings: short timers so that a minute holds many faults. The
# socket-server timeout outlasts the comparison: presence-sim's servers
# fall silent when it stops, and must not time out meanwhile.
SYNC_MS = 200
NODE_TIMEOUT_MS = 2000
OFFLINE_DELAY_MS = 3000
SETTINGS = {
    "PRESENCE_SYNC_INTERVAL_MS": str(SYNC_MS),
    "PRESENCE_NODE_TIMEOUT_MS": str(NODE_TIMEOUT_MS),
    "PRESENCE_OFFLINE_DELAY_MS": str(OFFLINE_DELAY_MS),
    "PRESENCE_SERVER_TIMEOUT_MS": "90000",
    "PRESENCE_SNAPSHOT_INTERVAL_MS": "1000",
    "PRESENCE_STREAM_REPLICAS": "3",
}
SANITIZER = re.compile(rb"ERROR: (Address|Leak|Thread)Sanitizer|runtime error:|WARNING: ThreadSanitizer")


class Run:
    def __init__(self, args, topo=None):
        self.args = args
        self.t0 = time.monotonic()
        self.dir = tempfile.mkdtemp(prefix="pd-chaos-")
        self.timeline = open(os.path.join(self.dir, "chaos.log"), "w")
        self.c = Cluster(self.dir, args.bin_dir, args.presenced, SETTINGS, topo)
        self.problems = []
        self.watchers = []
        self.heard_bad = []
        self.heard_lost = []
        self.heard_bad_ts = []

    def log(self, text):
        line = "%8.2f %s" % (time.monotonic() - self.t0, text)
        self.timeline.write(line + "\n")
        self.timeline.flush()
        if self.args.verbose:
            print(line, file=sys.stderr)

    def nats(self):
        """A fresh NATS connection to any server that runs."""
        urls = [u for i, u in enumerate(self.c.urls) if self.c.nats[i].running()]
        return pdwire.Nats(urls or self.c.urls)

    def resync_all(self):
        nc = self.nats()
        try:
            for nid in self.c.NODES:
                nc.publish("presence.resync.%s" % nid, pdwire.mp_pack({}))
            nc.flush()
        finally:
            nc.close()
        self.log("driver: published P.resync.<node> for every node")
        return True

    def all_alive(self, seconds):
        def ok():
            try:
                nc = self.nats()
            except pdwire.WireError:
                return False
            try:
                for _ in range(compare.ASKS):
                    st = compare.cluster_state(nc)
                    alive = {e["node"] for e in (st or {}).get("nodes", []) if e.get("alive")}
                    if not set(self.c.NODES) <= alive:
                        return False
                return True
            except (OSError, pdwire.WireError):
                return False
            finally:
                nc.close()
        return wait_for(ok, seconds, step=0.2)

    # -- phases --
    def setup(self):
        for i in range(3):
            self.c.nats_start(i)
        if not wait_for(self.c.jetstream_ready, 30, step=0.2):
            raise ClusterError("JetStream has no meta leader after 30 s")
        self.c.redis_start()
        offs = {nid: self.c.node_start(nid) for nid in self.c.NODES}
        for nid, off in offs.items():
            if not wait_for(lambda: self.c.node_ready(nid, off) or not self.c.nodes[nid].running(),
                            60, step=0.1) or not self.c.nodes[nid].running():
                raise ClusterError("node %s did not start" % nid)
        if not self.all_alive(30):
            raise ClusterError("the nodes do not see each other")
        a = self.args
        self.watchers = watch.start(self.c, ["u%d" % i for i in range(a.users)]) \
            if a.watch else []
        self.c.sim_start(6, a.rate, a.seed,
                         ["--users", str(a.users), "--heartbeat-ms", "500", "--drain", "2",
                          "--json", "--dump-users", "--quiet"])
        nc = self.nats()
        try:
            ok = wait_for(lambda: (compare.cluster_state(nc) or {}).get("nodes", [{}])[0]
                          .get("devices", 0) > 0, 15, step=0.1)
        finally:
            nc.close()
        if not ok:
            raise ClusterError("no load from presence-sim")
        self.log("setup done: load running")

    def chaos(self, inj, rng):
        a = self.args
        load_start = time.monotonic()
        warmup = min(3.0, a.duration * 0.1)
        heal = max(6.0, a.duration * 0.15)
        stop_at = load_start + a.duration - heal
        next_fault = load_start + warmup
        while time.monotonic() < stop_at:
            now = time.monotonic()
            if now >= next_fault and inj.inject_random(now):
                next_fault = now + rng.uniform(0.8, 3.0)
            inj.step(now)
            if self.c.sim_exited() is not None:
                raise ClusterError("presence-sim exited during the load (code %s)"
                                   % self.c.sim_exited())
            time.sleep(0.05)
        self.log("no more faults; recovering the active ones")
        inj.drain(40)
        if not wait_all_up(self.c, 10):
            raise ClusterError("not every process runs after the faults")
        if not self.all_alive(40):
            raise ClusterError("the nodes do not all see each other after the faults")
        self.log("every node alive")
        end = load_start + a.duration
        while time.monotonic() < end:
            time.sleep(0.05)

    def stop_load(self):
        self.t_load_end = time.monotonic()
        code, summary = self.c.sim_stop(30)
        self.sim_drain = time.monotonic() - self.t_load_end
        self.log("load stopped: presence-sim exit %s" % code)
        if summary is None:
            raise ClusterError("no JSON summary from presence-sim (exit %s)" % code)
        oracle = {"u%d" % i: 0 for i in range(self.args.users)}
        oracle.update(summary.get("user_devices", {}))
        return summary, oracle

    def converge(self, oracle, total):
        """Seconds from the end of the load (presence-sim's last events,
        then up to 2 s of drain) to a converged cluster (None if it did not
        within --converge-timeout), and the last mismatches."""
        t_stop = self.t_load_end
        deadline = time.monotonic() + self.args.converge_timeout
        users = sorted(oracle)
        why, bad = "not asked", []
        while time.monotonic() < deadline:
            attempt = time.monotonic()
            try:
                nc = self.nats()
                try:
                    ok, why = compare.cluster_converged(nc, self.c.NODES, total)
                    if ok:
                        bad = []
                        for _ in range(compare.ASKS):
                            bad = compare.query_mismatches(compare.query_view(nc, users),
                                                           oracle, False)
                            if bad:
                                why = "query: %d users differ, e.g. %s" % (len(bad), bad[:3])
                                break
                        if not bad:
                            # Converged by the start of the attempt that passed.
                            return attempt - t_stop, []
                finally:
                    nc.close()
            except (OSError, pdwire.WireError) as e:
                why = str(e)
            time.sleep(0.2)
        self.problems.append("not converged after %.0f s: %s" % (self.args.converge_timeout, why))
        try:
            nc = self.nats()
            try:
                bad = compare.query_mismatches(compare.query_view(nc, users), oracle, False)
            finally:
                nc.close()
        except (OSError, pdwire.WireError) as e:
            self.problems.append("final query pass: %s" % e)
        return None, bad

    def check_status(self, oracle):
        """Offline exactly where the oracle has no device, once the offline
        delay of the last departures has passed: polled until then, plus 5 s."""
        users, bad = sorted(oracle), []

        def ok():
            nonlocal bad
            try:
                nc = self.nats()
                try:
                    for _ in range(compare.ASKS):
                        bad = compare.query_mismatches(compare.query_view(nc, users), oracle,
                                                       True)
                        if bad:
                            return False
                    return True
                finally:
                    nc.close()
            except (OSError, pdwire.WireError) as e:
                bad = [("(query)", "error", str(e), None)]
                return False
        if not wait_for(ok, OFFLINE_DELAY_MS / 1000.0 + 5, step=0.2):
            self.problems.append("statuses differ from the oracle after the offline delay")
        return bad

    def check_heard(self, oracle, inj):
        """--watch: every watcher's last notification of every user is what
        a get says now (polled for a few seconds: the last ones may still
        be on their way). A state lost with a killed node (the class
        docs/failure-modes.md does not promise, watch.not_promised) is
        counted apart and fails nothing."""
        if not self.watchers:
            return
        bad = watch.check(self.watchers, self.nats, sorted(oracle), 10)
        # the wall time (ms) of each kill, to compare with notifications' ts
        wall = time.time() * 1000 - time.monotonic() * 1000
        kills = [wall + t * 1000 for t, line in inj.timeline if line.startswith("inject node_kill")]
        self.heard_lost, self.heard_bad = watch.not_promised(self.watchers, self.nats, bad, kills)
        self.heard_bad_ts = watch.mismatches_by_ts(self.watchers, self.nats, sorted(oracle))
        for u in sorted({b[1] for b in self.heard_lost})[:5]:
            self.log("not promised: %s heard at a ver no node holds now, published before a "
                     "node was killed: %s" % (u, watch.history(self.watchers, u)))
        if self.heard_bad:
            self.problems.append("watchers last heard something else than get says for %d "
                                 "users, e.g. %s" % (len({b[1] for b in self.heard_bad}),
                                                     self.heard_bad[:4]))
            nc = None
            try:
                nc = self.nats()
            except (OSError, pdwire.WireError):
                pass
            for u in sorted({b[1] for b in self.heard_bad})[:5]:
                self.log("heard of %s (at, ver, ts, status): %s; get now: %s"
                         % (u, watch.history(self.watchers, u),
                            watch.get_entry(nc, u) if nc else "-"))
            if nc:
                nc.close()

    def check_nodes(self, oracle, after_ms):
        """{node: mismatches} from each node's snapshot taken after after_ms."""
        out = {}
        for nid in self.c.NODES:
            body = compare.snapshot_after(self.c.redis_port, nid, after_ms, 15)
            if body is None:
                # Not a divergence, but a failure: its view cannot be read.
                self.problems.append("no snapshot of %s in Redis written after convergence "
                                     "(snapshots stalled?)" % nid)
                continue
            out[nid] = compare.node_mismatches(pdwire.snapshot_user_devices(body), oracle)
        return out

    def check_diff(self, seconds=10):
        """`presencectl cluster --diff` must say the nodes agree (exit 0),
        ver included, with partitions or without; polled for a few seconds
        (a last change may still be on its way). Its last output goes into
        the report otherwise, and the run fails."""
        ctl = os.path.join(self.args.bin_dir, "presencectl")
        out = ""

        def same():
            nonlocal out
            try:
                p = subprocess.run([ctl, "--server", ",".join(self.c.urls), "--timeout", "3s",
                                    "cluster", "--diff"], capture_output=True, text=True,
                                   timeout=60)
            except (OSError, subprocess.TimeoutExpired) as e:
                out = str(e)
                return False
            out = (p.stdout + p.stderr).strip()
            return p.returncode == 0
        if wait_for(same, seconds, step=1.0):
            self.diff = "no difference"
            self.log("presencectl cluster --diff: " + (out.splitlines() or [""])[-1])
            return
        lines = out.splitlines()
        text = "presencectl cluster --diff: the nodes differ:\n    " + "\n    ".join(
            lines[:40] + (["..."] if len(lines) > 40 else []))
        self.diff = "differ"
        self.problems.append(text)

    def finish(self):
        for w in self.watchers:
            w.stop()
        codes = self.c.stop_all()
        for nid, code in codes.items():
            if code != 0:
                self.problems.append("%s exited with %s on SIGTERM" % (nid, code))
        for name in list(self.c.NODES):
            with open(os.path.join(self.dir, name + ".log"), "rb") as f:
                if SANITIZER.search(f.read()):
                    self.problems.append("sanitizer report in %s.log" % name)


def tail(path, n):
    try:
        with open(path, "rb") as f:
            lines = f.read().decode(errors="replace").splitlines()
        return "\n".join("    " + x for x in lines[-n:])
    except OSError:
        return "    (no file)"


def report(run, summary, inj, conv, query_bad, status_bad, node_bad):
    lost = {u for u, k, _, _ in query_bad + status_bad if k == "lost"}
    ghosts = {u for u, k, _, _ in query_bad + status_bad if k == "ghost"}
    for bad in node_bad.values():
        lost |= {u for u, k, _, _ in bad if k == "lost"}
        ghosts |= {u for u, k, _, _ in bad if k == "ghost"}
    divergent = sorted(n for n, bad in node_bad.items() if bad)
    res = {
        "seed": run.args.seed, "duration_s": run.args.duration, "rate": run.args.rate,
        "events_sent": summary.get("sent", 0) if summary else 0,
        "events_unanswered": summary.get("unanswered", 0) if summary else 0,
        "oracle_devices": summary.get("devices", 0) if summary else 0,
        "faults": dict(inj.counts), "faults_total": sum(inj.counts.values()),
        "driver_resyncs": inj.driver_resyncs,
        "partitions": run.partitions,
        "users_lost": len(lost), "ghosts": len(ghosts), "divergent_nodes": len(divergent),
        "converge_s": None if conv is None else round(conv, 2),
        "sim_drain_s": round(getattr(run, "sim_drain", 0.0), 2),
        "problems": run.problems, "cluster_diff": getattr(run, "diff", "not run"),
    }
    ok = not lost and not ghosts and not divergent and conv is not None and not run.problems
    print("chaos: %d s of load at %d ev/s, seed %d, logs in %s"
          % (run.args.duration, run.args.rate, run.args.seed, run.dir))
    rows = [("events sent", res["events_sent"]),
            ("  unanswered (faults)", res["events_unanswered"]),
            ("oracle devices", res["oracle_devices"])]
    rows += [("faults: " + k, v) for k, v in inj.counts.items()]
    rows += [("partitions", run.partitions),
             ("cluster --diff", getattr(run, "diff", "not run"))]
    if run.watchers:
        w_ok = [w for w in run.watchers if not w.broken]
        res["watchers"] = {w.wname: {"notifications": w.count, "broken": w.broken,
                                     "rejoined": w.rejoins} for w in run.watchers}
        res["heard_wrong"] = len({b[1] for b in run.heard_bad})
        res["heard_lost_with_node"] = len({b[1] for b in run.heard_lost})
        res["heard_wrong_by_ts"] = len({b[1] for b in getattr(run, "heard_bad_ts", [])})
        rows += [("notifications heard", " ".join("%s:%d" % (w.wname, w.count)
                                                 for w in run.watchers)),
                 ("watchers checked", "%d of %d (%d joined again after their server "
                  "restarted: get, then notifications)"
                  % (len(w_ok), len(run.watchers), sum(w.rejoins > 0 for w in w_ok))),
                 ("last heard wrong (users)", res["heard_wrong"]),
                 ("  lost with a killed node", "%d (not promised: failure-modes.md)"
                  % res["heard_lost_with_node"]),
                 ("  keeping the newest ts", res["heard_wrong_by_ts"])]
    rows += [("resyncs asked by driver", inj.driver_resyncs),
             ("users lost", len(lost)), ("ghosts", len(ghosts)),
             ("divergent nodes", "%d %s" % (len(divergent), " ".join(divergent))),
             ("time to converge", "-" if conv is None else
              "%.2f s (of which %.2f s presence-sim's drain)" % (conv, res["sim_drain_s"]))]
    for k, v in rows:
        print("  %-26s %s" % (k, v))
    for nid, bad in node_bad.items():
        if bad:
            print("  %s differs on %d users, e.g. %s" % (nid, len(bad), bad[:5]))
    if query_bad or status_bad:
        print("  queries differ, e.g. %s" % (query_bad + status_bad)[:5])
    for p in run.problems:
        print("  problem: " + p)
    print("CHAOS_RESULT " + json.dumps(res, sort_keys=True))
    return ok


def make_topology(args):
    """(a created netns.Topology, "on ..."), or (None, why partitions do
    not run) where namespaces cannot be made or are not wanted."""
    if args.no_partitions:
        return None, "not run (--no-partitions)"
    ok, why = netns.Topology.available()
    if not ok:
        return None, "not run: %s" % why
    netns.Topology.sweep()
    topo = netns.Topology(3)
    try:
        topo.create()
    except (OSError, subprocess.CalledProcessError) as e:
        topo.destroy()
        return None, "not run: the namespaces could not be set up: %s" % e
    return topo, "on (each nats-server + node in a network namespace)"


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=int, default=60, help="seconds of load (default 60)")
    ap.add_argument("--seed", type=int, default=None,
                    help="RNG seed (default: $PD_SEED, else random; printed)")
    ap.add_argument("--rate", type=int, default=300, help="events per second (default 300)")
    ap.add_argument("--users", type=int, default=1000, help="simulated users (default 1000)")
    ap.add_argument("--keep", action="store_true", help="keep the logs dir even on success")
    ap.add_argument("--bin-dir", default=os.path.join(here, "..", "..", "build"),
                    help="where presenced and presence-sim are (default build/)")
    ap.add_argument("--converge-timeout", type=float, default=30.0,
                    help="seconds the cluster has to converge after the load (default 30)")
    ap.add_argument("--verbose", action="store_true", help="the timeline on stderr")
    ap.add_argument("--no-watch", dest="watch", action="store_false",
                    help="do not watch P.user.> on every server (by default each user's last "
                    "notification must be what get says at the end)")
    # Accepted for older command lines: watching is the default now.
    ap.add_argument("--watch", dest="watch", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--no-partitions", action="store_true",
                    help="no network namespaces and no partition faults, even as root")
    # Accepted for older command lines: the check is always strict now.
    ap.add_argument("--strict-diff", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--no-driver-resync", action="store_true",
                    help="do not publish P.resync.<node> after a nats-server restart (shows "
                    "what presence-sim's missing resync on its own reconnect costs)")
    args = ap.parse_args()
    if args.duration < 10:
        ap.error("--duration must be at least 10")
    if args.seed is None and os.environ.get("PD_SEED", "").isdigit():
        args.seed = int(os.environ["PD_SEED"])
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1, 1 << 31)
    # Like the integration tests, $PD_PRESENCED_BIN swaps the node binary.
    args.presenced = os.environ.get("PD_PRESENCED_BIN") or os.path.join(args.bin_dir, "presenced")
    for b in (args.presenced, os.path.join(args.bin_dir, "presence-sim")):
        if not os.access(b, os.X_OK):
            ap.error("no %s (build first, or give --bin-dir)" % b)
    # SIGTERM and SIGHUP end the run as Ctrl-C does: everything is removed.
    def interrupted(signum, frame):
        raise KeyboardInterrupt()
    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGHUP, interrupted)
    topo, partitions = make_topology(args)
    run = Run(args, topo)
    run.partitions = partitions
    rng = random.Random(args.seed)
    resync = (lambda: run.log("driver: resync not asked (--no-driver-resync)")) \
        if args.no_driver_resync else run.resync_all
    inj = Injector(run.c, rng, NODE_TIMEOUT_MS / 1000.0, run.log, resync,
                   partitions=topo is not None)
    summary, conv, query_bad, status_bad, node_bad = None, None, [], [], {}
    code = 1
    try:
        run.setup()
        run.chaos(inj, rng)
        summary, oracle = run.stop_load()
        conv, query_bad = run.converge(oracle, summary["devices"])
        if conv is not None:
            status_bad = run.check_status(oracle)
            run.check_heard(oracle, inj)
        node_bad = run.check_nodes(oracle, int(time.time() * 1000))
        if conv is not None:
            run.check_diff()
    except ClusterError as e:
        run.problems.append("setup/fault handling: %s" % e)
        code = 3
    except KeyboardInterrupt:
        run.problems.append("interrupted")
    finally:
        try:
            run.finish()
        finally:
            if topo is not None:
                topo.destroy()
    ok = report(run, summary, inj, conv, query_bad, status_bad, node_bad)
    if ok:
        if not args.keep:
            shutil.rmtree(run.dir, ignore_errors=True)
        return 0
    print("chaos: FAILED (seed %d); logs kept in %s" % (args.seed, run.dir))
    for name in ["chaos", "n1", "n2", "n3"] + run.c.sim_names() + ["nats1", "nats2", "nats3",
                                                                     "redis"]:
        print("--- tail of %s.log" % name)
        print(tail(os.path.join(run.dir, name + ".log"), 12))
    return code if code == 3 else 1


if __name__ == "__main__":
    sys.exit(main())
