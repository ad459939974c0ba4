#!/usr/bin/env python3
"""repro_redis_wedge.py - a regression test (ctest redis_wedge) for a stall
of a node's snapshots after Redis restarts, found by the chaos test (seed 12
at 60 s). Fixed in node/persist.c: an AUTH or a snapshot write left
unanswered is given up after a deadline (redis_expired), and the node
reconnects.

One node (snapshot every 100 ms) against three nats-servers and a Redis
that is SIGKILLed and restarted 40 times at random moments; afterwards
snapshots must resume (presenced_snapshot_age_seconds under 1 s within 40 s).
Observed before the fix: the node logs "Redis ... is back", and then writes no snapshot
ever again, with presenced_snapshot_failures_total still 0; at SIGTERM the
stuck write's callbacks finally run ("snapshot write failed: no reply").
Cause: hiredis 0.14's libuv adapter returns without a word when
uv_poll reports an error (status != 0, e.g. POLLERR after the dead Redis
reset the connection), and libuv has stopped the poll handle by then: the
commands in flight never complete, so the node stays in SNAP_WRITING.

    tests/chaos/repro_redis_wedge.py [--bin-dir build] [--seed 1]
Exit 0 if snapshots resumed, 1 if they stalled."""
import argparse
import os
import random
import re
import shutil
import signal
import sys
import tempfile
import time
import urllib.request

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster import Cluster, wait_for  # noqa: E402


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", default=os.path.join(here, "..", "..", "build"))
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    d = tempfile.mkdtemp(prefix="pd-wedge-")
    c = Cluster(d, args.bin_dir, os.path.join(args.bin_dir, "presenced"),
                {"PRESENCE_SNAPSHOT_INTERVAL_MS": "100", "PRESENCE_SYNC_INTERVAL_MS": "200"})
    rng = random.Random(args.seed)

    def metric(name):
        url = "http://127.0.0.1:%d/metrics" % c.metrics_ports[0]
        text = urllib.request.urlopen(url, timeout=2).read().decode()
        m = re.search(r"^%s (\S+)" % name, text, re.M)
        return float(m.group(1)) if m else -1  # no sample: no snapshot yet

    ok = False
    try:
        for i in range(3):
            c.nats_start(i)
        wait_for(c.jetstream_ready, 30)
        c.redis_start()
        off = c.node_start("n1")
        if not wait_for(lambda: c.node_ready("n1", off), 30):
            print("the node did not start; logs in", d)
            return 1
        for _ in range(40):
            c.redis.kill(signal.SIGKILL)
            time.sleep(rng.uniform(0, 0.3))
            c.redis_start()
            time.sleep(rng.uniform(0.0, 1.2))
        ok = wait_for(lambda: 0 <= metric("presenced_snapshot_age_seconds") < 1, 40, step=0.5)
        print("snapshots %s: age %.3f s, written %d, failed %d" % (
            "resumed" if ok else "STALLED", metric("presenced_snapshot_age_seconds"),
            metric("presenced_snapshots_total"), metric("presenced_snapshot_failures_total")))
    finally:
        c.stop_all()
    if ok:
        shutil.rmtree(d, ignore_errors=True)
        return 0
    print("logs in", d)
    return 1


if __name__ == "__main__":
    sys.exit(main())
