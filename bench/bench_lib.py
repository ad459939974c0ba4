#!/usr/bin/env python3
"""bench_lib.py - the small helpers of bench/bench.sh (ports, counters, log
parsing) and its report: the Markdown tables on stdout, latest.json and the
gnuplot PNGs. Standard library only; one subcommand per call."""
import glob
import json
import os
import platform
import re
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import datetime, timezone


def cmd_ports(path):
    d = json.load(open(path))
    print(d["nats"][0], d.get("monitoring", [""])[0])


def cmd_free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    print(s.getsockname()[1])
    s.close()


def cmd_field(name, line):
    print(json.loads(line)[name])


def cmd_devices0(line):
    nodes = json.loads(line).get("nodes") or [{}]
    print(nodes[0].get("devices", 0))


def cmd_users0(line):
    nodes = json.loads(line).get("nodes") or [{}]
    print(nodes[0].get("users", -1))


def cmd_churn(start, per_round, retention, rounds_csv):
    """The churn record: rounds_csv is 'peak:after:held,...' in KiB, KiB, users."""
    rounds = [tuple(int(x) for x in r.split(":")) for r in rounds_csv.split(",") if r]
    print(json.dumps({"kind": "churn", "nodes": 1, "rounds": len(rounds),
                      "users_per_round": int(per_round), "users": int(per_round) * len(rounds),
                      "retention_ms": int(retention), "rss_start_kb": int(start),
                      "rss_round_kb": [r[0] for r in rounds], "rss_after_kb": [r[1] for r in rounds],
                      "users_held": [r[2] for r in rounds]}))


def cmd_now_ms():
    print(int(time.time() * 1000))


def cmd_redis_out(port):
    out = subprocess.run(["redis-cli", "-p", port, "INFO", "stats"], capture_output=True,
                         text=True).stdout
    m = re.search(r"total_net_output_bytes:(\d+)", out)
    print(m.group(1) if m else 0)


def cmd_snapshot_after(port, key, since):
    """Exits 0 once the snapshot in Redis was taken after `since` (ms): its
    body's taken_at (schemas/snapshot.md), read from its first bytes."""
    head = subprocess.run(["redis-cli", "-p", port, "--raw", "GETRANGE", key, "0", "400"],
                          capture_output=True).stdout
    i = head.find(b"\xa8taken_at")
    if i < 0 or len(head) < i + 18 or head[i + 9] != 0xcf:
        sys.exit(1)
    sys.exit(0 if int.from_bytes(head[i + 10:i + 18], "big") > int(since) else 1)


def monitor(mon, path):
    """A nats-server monitoring page as JSON, {} if it cannot be read."""
    try:
        with urllib.request.urlopen(mon + path, timeout=5) as r:
            return json.load(r)
    except OSError:
        return {}


def cmd_nats_published(mon, node):
    """Bytes the open connections of presenced node `node` sent to the
    server (its deltas, heartbeats, replies: /connz in_bytes)."""
    name = "presenced:" + node
    print(sum(c.get("in_bytes", 0) for c in monitor(mon, "/connz?limit=1024").get("connections", [])
              if c.get("name", "") == name or c.get("name", "").startswith(name + ":")))


def cmd_stream_bytes(mon):
    """Bytes the stream PRESENCE_DELTAS holds (/jsz): what nodes published
    as deltas since, as long as nothing aged out."""
    jsz = monitor(mon, "/jsz?streams=true")
    print(sum(st.get("state", {}).get("bytes", 0)
              for acc in jsz.get("account_details") or []
              for st in acc.get("stream_detail") or [] if st.get("name") == "PRESENCE_DELTAS"))


def cmd_nats_out(mon, but=None):
    """Bytes the server sent (/varz out_bytes); but: less what it sent to
    the connections of that name (bench.sh's notification counter, which
    is not part of the traffic measured)."""
    out = monitor(mon, "/varz").get("out_bytes", 0)
    if but:
        # state=all: closed connections too (the server keeps the last
        # ones), should the counter have ended before this is read
        out -= sum(c.get("out_bytes", 0) for c in
                   monitor(mon, "/connz?state=all&limit=1024").get("connections", [])
                   if c.get("name", "") == but)
    print(out)


def cmd_merge_tp(label, rate, secs, rc, sim, conv):
    s = json.loads(sim)
    c = json.loads(conv) if conv.strip() else {"ok": False, "ms": None}
    rate, secs = float(rate), float(secs)
    achieved = s["load_events"] / secs
    errors = sum(s.get("errors", {}).values())
    ok_pace = rate == 0 or achieved >= 0.9 * rate
    passed = int(rc) == 0 and errors == 0 and s["unanswered"] == 0 and ok_pace and \
        c.get("ok") and c.get("ms", 1e9) <= 2000
    print(json.dumps({
        "into": label, "offered": rate, "achieved": round(achieved), "secs": secs,
        "sent": s["sent"], "ok": s["ok"], "errors": errors, "unanswered": s["unanswered"],
        "devices": s["devices"], "sim_exit": int(rc), "converged": bool(c.get("ok")),
        "lag_ms": c.get("ms"), "passed": bool(passed)}, separators=(",", ":")))


def cmd_merge_batch(out, conv):
    """The batch record: pd-bench batch-rate's line and converge's after it."""
    b = json.loads(out)
    c = json.loads(conv) if conv.strip() else {"ok": False, "ms": None}
    passed = bool(b.get("ok")) and b.get("not_ok", 1) == 0 and bool(c.get("ok")) and \
        (c.get("ms") if c.get("ms") is not None else 1e9) <= 2000
    print(json.dumps({"kind": "batch", "events": b.get("events"), "batch": b.get("batch"),
                      "nodes": b.get("nodes"), "not_ok": b.get("not_ok"), "secs": b.get("secs"),
                      "events_per_s": b.get("events_per_s"), "converged": bool(c.get("ok")),
                      "lag_ms": c.get("ms"), "passed": passed}, separators=(",", ":")))


def cmd_tp_passed(line):
    sys.exit(0 if json.loads(line)["passed"] else 1)


def log_time(line):
    ts = line.split(" ", 1)[0]
    return datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=timezone.utc).timestamp() * 1000


def cmd_recovery(logpath, t0, devices, kind, redis_bytes, nats_bytes, conv, oldlog,
                 published=None, stream=None, notes=None):
    t0 = float(t0)
    r = {"kind": kind, "devices": int(devices), "redis_bytes": int(redis_bytes),
         "nats_bytes": int(nats_bytes)}
    if published is not None:
        r["published_bytes"] = int(published)  # by the restarted node itself
    if stream is not None:
        r["stream_bytes"] = int(stream)  # deltas stored meanwhile: its own
    n = json.loads(notes) if notes else {}
    if "notifications" in n:
        # every node's, from before the stop until the windows it opened closed
        r["notifications"], r["notifications_dropped"] = n["notifications"], n.get("dropped", 0)
    t_sig = None
    for line in open(oldlog, errors="replace"):
        if "signal 15: stopping" in line:
            t_sig = log_time(line)
        elif "final snapshot" in line and t_sig is not None:
            r["final_snapshot_ms"] = round(log_time(line) - t_sig)
            r["final_snapshot"] = line.split(" ", 2)[2].strip()
    t_snap = t_replay = t_done = t_repub = None
    for line in open(logpath, errors="replace"):
        if "restored snapshot:" in line:
            t_snap = log_time(line)
            m = re.search(r"restored snapshot: (\d+) bytes, (\d+) devices.* in (\d+) ms", line)
            if m:
                r["snapshot_bytes"], r["snapshot_devices"], r["snapshot_apply_ms"] = \
                    int(m.group(1)), int(m.group(2)), int(m.group(3))
        elif "replaying PRESENCE_DELTAS" in line:
            t_replay = log_time(line)
        elif "republish done" in line:
            t_repub = log_time(line)
            m = re.search(r"republish done: our \w+ \((\d+) ops\)", line)
            if m:
                r["republished_ops"] = int(m.group(1))
        elif "restore done" in line:
            t_done = log_time(line)
            m = re.search(r"\((\d+) deltas replayed(?:, applied in (\d+) ms)?\)", line)
            if m:
                r["deltas_replayed"] = int(m.group(1))
                if m.group(2) is not None:
                    r["replay_apply_ms"] = int(m.group(2))
    if t_done is not None:
        # The replay runs while the snapshot applies (issue 15): what it adds
        # is from the later of the snapshot in and the replay's start.
        first = max([t for t in (t_replay, t_snap) if t is not None], default=t_done)
        r["total_ms"] = round(t_done - t0)
        r["snapshot_ms"] = round(t_snap - t0) if t_snap else 0
        r["replay_ms"] = round(t_done - first)
    if t_repub is not None:
        # the restored devices sent as the new life's, in slices after
        # "restore done" (the node answers meanwhile): peers have them all
        r["republished_ms"] = round(t_repub - t0)
    c = json.loads(conv) if conv.strip() else {}
    r["converged"] = bool(c.get("ok"))
    r["devices_after"] = (c.get("nodes") or [{}])[0].get("devices")
    print(json.dumps(r, separators=(",", ":")))


# ---- report ------------------------------------------------------------------------------


def machine():
    cpu = "?"
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break

    def version(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True).stdout.strip().split("\n")[0]
        except OSError:
            return "?"
    mem = 0
    for line in open("/proc/meminfo"):
        if line.startswith("MemTotal"):
            mem = int(line.split()[1]) // 1024
    return {"nproc": os.cpu_count(), "cpu": cpu, "mem_mib": mem, "kernel": platform.release(),
            "nats_server": version(["nats-server", "--version"]),
            "redis_server": version(["redis-server", "--version"])}


def fmt_us(v):
    if v is None:
        return "-"
    return f"{v / 1000:.2f} ms" if v >= 10000 else f"{v:.0f} µs"


def ratio(a, b):
    return a / b if a is not None and b else None


def verdict(ok):
    return "—" if ok is None else ("**met**" if ok else "**missed**")


def rate_label(r):
    return f"{r / 1000:g}k/s"


def find(rows, **kw):
    for r in rows:
        if all(r.get(k) == v for k, v in kw.items()):
            return r
    return None


def build(raw, mode, command):
    rows = [json.loads(l) for l in open(raw) if l.strip()]
    res = {"mode": mode, "command": command, "machine": machine(),
           "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
           "baselines": [], "latency": [], "throughput": [], "memory": [], "recovery": [],
           "rates": [], "load": [], "churn": [], "targets": [], "flood": [],
           "stub_latency": [], "stub_throughput": [], "batch": []}
    for r in rows:
        ph = r.pop("phase")
        if ph == "baseline" and r["kind"] == "nats_lat":
            res["baselines"].append(r)
        elif ph == "baseline":
            res["rates"].append(r)
        elif ph == "latency":
            res["latency"].append(r)
        elif ph == "throughput":
            res["throughput"].append(r)
        elif ph == "memory":
            res["memory"].append(r)
        elif ph == "recovery":
            res["recovery"].append(r)
        elif ph == "churn":
            res["churn"].append(r)
        elif ph == "load":
            res["load"].append(r)
        elif ph == "flood":
            res["flood"].append(r)
        elif ph == "stub":
            res["stub_latency"].append(r)
        elif ph == "stub_tp":
            res["stub_throughput"].append(r)
        elif ph == "batch":
            res["batch"].append(r)
        elif ph == "machine":
            res["machine"].update(r)
    return res


def targets(res):
    t = []
    base, lat = res["baselines"], res["latency"]
    for rate in (1000, 10000):
        relay = find(base, mode="relay", asap=True, rate=rate)
        pd = find(lat, rate=rate)
        for q, lim in (("p50_us", 1.5), ("p99_us", 2.0)):
            a = pd["applied_all"][q] if pd and pd["applied_all"]["n"] else None
            b = relay["all"][q] if relay else None
            rt = ratio(a, b)
            t.append({"measure": f"sync {q[:-3]} to every node at {rate_label(rate)}",
                      "value": fmt_us(a), "baseline": f"relay {fmt_us(b)}",
                      "ratio": None if rt is None else round(rt, 2), "target": f"≤ {lim}×",
                      "met": None if rt is None else rt <= lim})
    best = max([r["msgs_per_s"] for r in res["rates"]] or [0])
    for into in ("cluster", "node"):
        ok = [r for r in res["throughput"] if r["into"] == into and r["passed"]]
        v = max([r["achieved"] for r in ok], default=None)
        rt = ratio(v, best)
        t.append({"measure": f"throughput, events into {'every node' if into == 'cluster' else 'one node'}",
                  "value": "none passed" if v is None else f"{v:,} ev/s",
                  "baseline": f"one hop {best:,.0f} msg/s",
                  "ratio": None if rt is None else round(rt, 3),
                  "target": "≥ 0.5×" if into == "cluster" else "(per node)",
                  "met": (rt is not None and rt >= 0.5) if into == "cluster" else None})
    t += stub_targets(res)
    for b in res.get("batch", []):
        v = b.get("events_per_s")
        t.append({"measure": "batched events into every node (batches of "
                             f"{b.get('batch')}, every node converged)",
                  "value": "none" if v is None else f"{v:,.0f} ev/s"
                  + ("" if b["passed"] else " (not converged or not ok)"),
                  "baseline": "", "ratio": None, "target": "≥ 500,000 ev/s",
                  "met": bool(b["passed"]) and v is not None and v >= 500000})
    mem = memory_costs(res)
    if mem:
        big = mem[-1]
        t.append({"measure": f"memory per device at {big['devices']:,} devices",
                  "value": f"{big['per_device_all']:.0f} B (3/user, all in)",
                  "baseline": f"device {big['device_b']:.0f} B + user {big['user_b']:.0f} B",
                  "ratio": None, "target": "≤ 150 B", "met": big["per_device_all"] <= 150})
    rec = [r for r in res["recovery"] if r["kind"] == "snapshot" and "total_ms" in r]
    if rec:
        big = max(rec, key=lambda r: r["devices"])
        t.append({"measure": f"recovery of {big['devices']:,} devices (snapshot + replay)",
                  "value": f"{big['total_ms']} ms", "baseline": "",
                  "ratio": None, "target": "< 1000 ms", "met": big["total_ms"] < 1000})
    ct = [r for r in res["recovery"] if r["kind"] == "cluster-term" and r.get("republished_ops")]
    ck = [r for r in res["recovery"] if r["kind"] == "cluster-kill" and "republished_ops" in r]
    if ct and ck:
        kr = ck[-1]["republished_ops"] / ct[-1]["republished_ops"]
        t.append({"measure": f"restart of one of 3 nodes, {ck[-1]['devices']:,} devices: ops it "
                             "sends again when the peers keep its devices (killed) / when they "
                             "do not (clean stop)",
                  "value": f"{ck[-1]['republished_ops']:,} ops",
                  "baseline": f"{ct[-1]['republished_ops']:,} ops", "ratio": round(kr, 4),
                  "target": "no republish (≤ 0.1×)",
                  "met": kr <= 0.1 and ck[-1]["converged"]})
    for r in ct[-1:] + ck[-1:]:
        if "notifications" not in r:
            continue
        users = r["devices"] // 3
        how = "clean stop" if r["kind"] == "cluster-term" else "killed"
        t.append({"measure": f"notifications for a restart of one of 3 nodes ({how}), "
                             f"{r['devices']:,} devices, no status changed",
                  "value": f"{r['notifications']:,}" + (
                      f" ({r['notifications_dropped']:,} dropped)"
                      if r.get("notifications_dropped") else ""),
                  "baseline": f"{users:,} users", "ratio": round(r["notifications"] / users, 3),
                  "target": "(report)", "met": None})
    return t


def best_passed(rows, into):
    return max([r["achieved"] for r in rows if r["into"] == into and r["passed"]], default=None)


def stub_targets(res):
    """presenced against the same-pattern stub (issue 15): the best passed
    throughput step of each (same ladder, same driver), and the sync
    latency to every node at each paced rate both ran."""
    t = []
    stp, slat = res.get("stub_throughput", []), res.get("stub_latency", [])
    if not stp and not slat:
        return t
    for into in ("cluster", "node"):
        v = best_passed(res["throughput"], into)
        b = best_passed(stp, into)
        rt = ratio(v, b)
        t.append({"measure": f"throughput vs the stub, events into "
                             f"{'every node' if into == 'cluster' else 'one node'}",
                  "value": ("not run" if not res["throughput"] else "none passed")
                  if v is None else f"{v:,} ev/s",
                  "baseline": ("stub: not run" if not stp else "stub: none passed")
                  if b is None else f"stub {b:,} ev/s",
                  "ratio": None if rt is None else round(rt, 3),
                  "target": "≥ 0.7×" if into == "cluster" else "(per node)",
                  "met": (rt >= 0.7 if rt is not None else None) if into == "cluster" else None})
    for rate in sorted({r["rate"] for r in slat}):
        pd, st = find(res["latency"], rate=rate), find(slat, rate=rate)
        for q in ("p50_us", "p99_us"):
            a = pd["applied_all"][q] if pd and pd["applied_all"]["n"] else None
            b = st["applied_all"][q] if st and st["applied_all"]["n"] else None
            rt = ratio(a, b)
            t.append({"measure": f"sync {q[:-3]} to every node at {rate_label(rate)} vs the stub",
                      "value": fmt_us(a), "baseline": f"stub {fmt_us(b)}",
                      "ratio": None if rt is None else round(rt, 2), "target": "(report)",
                      "met": None})
    return t


def memory_costs(res):
    """Per size: device and user cost solved from the 1 and 3 devices per
    user runs of one node: rss = a * devices + b * users."""
    out = []
    single = [m for m in res["memory"] if m["nodes"] == 1]
    for d in sorted({m["devices"] for m in single}):
        m1 = next((m for m in single if m["devices"] == d and m["users"] == d), None)
        m3 = next((m for m in single if m["devices"] == d and m["users"] < d), None)
        if not m1 or not m3:
            continue
        r1 = (m1["rss_after_kb"] - m1["rss_before_kb"]) * 1024
        r3 = (m3["rss_after_kb"] - m3["rss_before_kb"]) * 1024
        b = (r1 - r3) / (m1["users"] - m3["users"])
        a = (r1 - b * m1["users"]) / d
        out.append({"devices": d, "rss_1_per_user": r1, "rss_3_per_user": r3,
                    "device_b": a, "user_b": b, "per_device_all": r3 / d,
                    "per_device_1": r1 / d})
    return out


def markdown(res):
    L = []
    m = res["machine"]
    L.append(f"Machine: {m['nproc']} cores, {m['cpu']}, {m['mem_mib'] // 1024} GiB, "
             f"Linux {m['kernel']}; {m['nats_server']}; {m['redis_server'].split(' sha')[0]}.")
    loads = ", ".join(f"{k[8:]} {v}" for k, v in m.items() if k.startswith("loadavg_"))
    L.append(f"Command: `{res['command']}` ({res['mode']} run, {res['date']}). Load average "
             f"(1, 5, 15 min) when each phase began: {loads}.")
    L.append("")
    L.append("| measure | value | baseline | ratio | target | verdict |")
    L.append("| --- | --- | --- | --- | --- | --- |")
    for t in res["targets"]:
        r = "" if t["ratio"] is None else f"{t['ratio']}×"
        L.append(f"| {t['measure']} | {t['value']} | {t['baseline']} | {r} | {t['target']} | "
                 f"{verdict(t['met'])} |")
    L.append("")
    size = res["baselines"][0]["size"] if res["baselines"] else "?"
    L.append(f"Latency, paced, {size}-byte messages (a traced `status` event); relay: publisher "
             f"→ relay process → {res['baselines'][-1]['subs'] if res['baselines'] else '?'} "
             "subscribers, time to the last one.")
    L.append("")
    L.append("| path | rate | p50 | p99 | p99.9 | max | samples | lost |")
    L.append("| --- | --- | --- | --- | --- | --- | --- | --- |")
    rates = sorted({b["rate"] for b in res["baselines"]} | {p["rate"] for p in res["latency"]})
    for rate in rates:
        for asap in (True, False):
            for mode, name in (("onehop", "NATS one hop"), ("relay", "NATS relay")):
                b = find(res["baselines"], mode=mode, asap=asap, rate=rate)
                if b:
                    s = b["all"]
                    L.append(f"| {name}, SendAsap {'on' if asap else 'off'} | {rate_label(rate)} | "
                             f"{fmt_us(s['p50_us'])} | {fmt_us(s['p99_us'])} | "
                             f"{fmt_us(s['p999_us'])} | {fmt_us(s['max_us'])} | {s['n']} | "
                             f"{b['lost']} |")
        p = find(res["latency"], rate=rate)
        relay = find(res["baselines"], mode="relay", asap=True, rate=rate)
        if p:
            for key, name, lost in (("applied_all", "presenced, every node applied", "lost_trace"),
                                    ("applied_origin", "presenced, receiving node applied", None),
                                    ("notify", "presenced, watcher notified", "lost_notify")):
                s = p[key]
                x = ""
                if relay and s["n"]:
                    x = (f" ({ratio(s['p50_us'], relay['all']['p50_us']):.1f}× relay / "
                         f"{ratio(s['p99_us'], relay['all']['p99_us']):.1f}×)")
                L.append(f"| {name}{x} | {rate_label(rate)} | {fmt_us(s['p50_us'])} | "
                         f"{fmt_us(s['p99_us'])} | {fmt_us(s['p999_us'])} | "
                         f"{fmt_us(s['max_us'])} | {s['n']} | {p[lost] if lost else ''} |")
    L.append("")
    L.append("| unpaced one hop | messages/s |")
    L.append("| --- | --- |")
    for r in res["rates"]:
        L.append(f"| SendAsap {'on' if r['asap'] else 'off'}, {r['size']} B | "
                 f"{r['msgs_per_s']:,.0f} |")
    L.append("")
    L.append("Throughput (presence-sim mix; a step passes when every event is answered ok, the "
             "pace is held and every node converges within 2 s):")
    L.append("")
    L.append("| events into | offered/s | achieved/s | errors | converged | lag | passed |")
    L.append("| --- | --- | --- | --- | --- | --- | --- |")
    for r in res["throughput"]:
        off = "full speed" if r["offered"] == 0 else f"{r['offered']:,.0f}"
        lag = "-" if r["lag_ms"] is None else f"{r['lag_ms']:.0f} ms"
        L.append(f"| {'n1' if r['into'] == 'node' else 'every node'} | {off} | "
                 f"{r['achieved']:,} | {r['errors'] + r['unanswered']} | "
                 f"{'yes' if r['converged'] else 'no'} | {lag} | "
                 f"{'yes' if r['passed'] else 'no'} |")
    L.append("")
    stub_markdown(res, L)
    for f in res.get("flood", []):
        L.append(f"Event replies during a query flood ({f['flood_rate']:.0f} gets/s of 1000 "
                 f"users, {f['queries_sent']:,} sent; goal: p99 within 3x of alone):")
        L.append("")
        L.append("| events | p50 | p99 | max | samples | timeouts |")
        L.append("| --- | --- | --- | --- | --- | --- |")
        for k in ("alone", "flood"):
            s = f[k]
            L.append(f"| {k} | {fmt_us(s['p50_us'])} | {fmt_us(s['p99_us'])} | "
                     f"{fmt_us(s['max_us'])} | {s['n']} | {f['timeouts_' + k]} |")
        L.append(f"| ratio flood/alone | {f['p50_ratio']:.2f}x | {f['p99_ratio']:.2f}x | | | "
                 f"{verdict(f['p99_ratio'] <= 3)} |")
        L.append("")
    L.append("| memory | devices | users | RSS before | RSS after | bytes/device (all in) |")
    L.append("| --- | --- | --- | --- | --- | --- |")
    for r in res["memory"]:
        per = (r["rss_after_kb"] - r["rss_before_kb"]) * 1024 / r["devices"]
        L.append(f"| {r['node']} of {r['nodes']} | {r['devices']:,} | {r['users']:,} | "
                 f"{r['rss_before_kb'] / 1024:.1f} MiB | {r['rss_after_kb'] / 1024:.1f} MiB | "
                 f"{per:.0f} |")
    for c in memory_costs(res):
        L.append(f"| solved at {c['devices']:,} | | | | | device {c['device_b']:.0f} B, "
                 f"user {c['user_b']:.0f} B |")
    for r in res.get("churn", []):
        L.append("")
        L.append(f"Churn on one node: {r['rounds']} rounds of {r['users_per_round']:,} new "
                 f"users each connecting and leaving ({r['users']:,} in all; "
                 f"`PRESENCE_USER_RETENTION_MS`={r['retention_ms']}). RSS right after each "
                 f"round and after its retention:")
        L.append("")
        L.append("| round | users seen so far | RSS after the round | RSS after the retention | "
                 "users held |")
        L.append("| --- | --- | --- | --- | --- |")
        for k, (peak, after, held) in enumerate(zip(r["rss_round_kb"], r["rss_after_kb"],
                                                    r["users_held"])):
            L.append(f"| {k + 1} | {(k + 1) * r['users_per_round']:,} | {peak / 1024:.1f} MiB | "
                     f"{after / 1024:.1f} MiB | {held:,} |")
        L.append(f"| start | 0 | {r['rss_start_kb'] / 1024:.1f} MiB | | |")
    L.append("")
    L.append("Recovery of one node: stopped (SIGTERM: final snapshot; or SIGKILL and the "
             "snapshot deleted: stream only), restarted; times from its exec and its log; "
             "\"replay\": what the replay adds after the snapshot is in (it runs while the "
             "snapshot applies), and the time spent applying its deltas. "
             "\"One of 3\": n1 of a loaded cluster, stopped cleanly, then killed after a "
             "snapshot; \"republished\" is when its devices (clean stop) or its registers "
             "(killed: the peers kept its devices) were out; NATS bytes: all the server sent "
             "until every node held every device (the replay of the stream included); "
             "published by it: what its connections sent the server meanwhile (its "
             "notifications at the start included); deltas stored: what the stream "
             "PRESENCE_DELTAS grew by meanwhile (every node's: registers passed on to a new "
             "life included); ops sent again: its restart's dump, devices and registers "
             "(clean stop) or registers alone (killed).")
    L.append("")
    L.append("| restart | devices | back in | snapshot load | replay | republished | snapshot | "
             "deltas replayed | Redis bytes | NATS bytes | published by it | deltas stored | "
             "ops sent again | state back | final snapshot write |")
    L.append("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | "
             "--- | --- |")
    kinds = {"snapshot": "snapshot + stream", "stream": "stream only",
             "cluster-term": "one of 3, clean stop (peers dropped its devices)",
             "cluster-kill": "one of 3, killed (peers kept its devices)"}
    for r in res["recovery"]:
        fs = f"{r['final_snapshot_ms']} ms" if "final_snapshot_ms" in r else "-"
        L.append(f"| {kinds.get(r['kind'], r['kind'])} | "
                 f"{r['devices']:,} | {r.get('total_ms', '-')} ms | {r.get('snapshot_ms', '-')} ms "
                 f"(apply {r.get('snapshot_apply_ms', '-')} ms) | {r.get('replay_ms', '-')} ms "
                 f"(apply {r.get('replay_apply_ms', '-')} ms) | "
                 f"{r.get('republished_ms', '-')} ms | {r.get('snapshot_bytes', 0):,} B | {r.get('deltas_replayed', '-')} | "
                 f"{r['redis_bytes']:,} | {r['nats_bytes']:,} | "
                 f"{format(r['published_bytes'], ',') if 'published_bytes' in r else '-'} | "
                 f"{format(r['stream_bytes'], ',') if 'stream_bytes' in r else '-'} | "
                 f"{format(r['republished_ops'], ',') if 'republished_ops' in r else '-'} | "
                 f"{'yes' if r['converged'] else 'no'} | {fs} |")
    return "\n".join(L) + "\n"


def stub_markdown(res, L):
    """The same-pattern stub's own figures (bench/README.md, "Same-pattern
    baseline")."""
    slat, stp = res.get("stub_latency", []), res.get("stub_throughput", [])
    if not slat and not stp:
        return
    L.append("Same-pattern stub (stub nodes doing a node's NATS work per event, no model; "
             "same drivers and pacing):")
    L.append("")
    L.append("| stub | rate | p50 | p99 | p99.9 | max | samples | lost |")
    L.append("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for p in slat:
        for key, name, lost in (("applied_all", "every stub got it", "lost_trace"),
                                ("notify", "watcher notified", "lost_notify")):
            s = p[key]
            L.append(f"| {name} | {rate_label(p['rate'])} | {fmt_us(s['p50_us'])} | "
                     f"{fmt_us(s['p99_us'])} | {fmt_us(s['p999_us'])} | {fmt_us(s['max_us'])} | "
                     f"{s['n']} | {p[lost]} |")
    L.append("")
    L.append("| stub: events into | offered/s | achieved/s | errors | deltas all in | lag | passed |")
    L.append("| --- | --- | --- | --- | --- | --- | --- |")
    for r in stp:
        off = "full speed" if r["offered"] == 0 else f"{r['offered']:,.0f}"
        lag = "-" if r["lag_ms"] is None else f"{r['lag_ms']:.0f} ms"
        L.append(f"| {'s1' if r['into'] == 'node' else 'every stub'} | {off} | "
                 f"{r['achieved']:,} | {r['errors'] + r['unanswered']} | "
                 f"{'yes' if r['converged'] else 'no'} | {lag} | "
                 f"{'yes' if r['passed'] else 'no'} |")
    L.append("")


def plots(res, out):
    try:
        subprocess.run(["gnuplot", "--version"], capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        print("bench_lib: gnuplot not found: no plots (scripts/deps.sh installs it)",
              file=sys.stderr)
        return
    work = os.path.join(out, ".plot")
    os.makedirs(work, exist_ok=True)
    series = [("NATS one hop (asap on)", lambda r: find(res["baselines"], mode="onehop", asap=True, rate=r), "all"),
              ("NATS relay (asap on)", lambda r: find(res["baselines"], mode="relay", asap=True, rate=r), "all"),
              ("NATS relay (asap off)", lambda r: find(res["baselines"], mode="relay", asap=False, rate=r), "all"),
              ("presenced: every node applied", lambda r: find(res["latency"], rate=r), "applied_all"),
              ("presenced: watcher notified", lambda r: find(res["latency"], rate=r), "notify")]
    rates = sorted({b["rate"] for b in res["baselines"]})
    if not rates:
        print("bench_lib: no baselines in this run: no plots", file=sys.stderr)
        return
    files = []
    for i, (name, get, key) in enumerate(series):
        path = os.path.join(work, f"lat{i}.dat")
        with open(path, "w") as f:
            for r in rates:
                row = get(r)
                if row and row[key]["n"]:
                    s = row[key]
                    f.write(f"{r} {s['p50_us'] / 1000} {s['p99_us'] / 1000} {s['p999_us'] / 1000}\n")
        files.append((path, name))
    gp = [f'set terminal pngcairo size 1400,520 font ",10"',
          f'set output "{os.path.join(out, "latency.png")}"',
          'set multiplot layout 1,3 title "Latency by paced rate: presenced vs raw NATS (same run)"',
          'set logscale xy', 'set xlabel "messages or events / s"', 'set ylabel "ms"',
          'set format y "%g"', 'set format x "%g"',
          'set grid', 'set key top left font ",8"', f'set xrange [{min(rates) * 0.7}:{max(rates) * 1.4}]']
    for col, title in ((2, "p50"), (3, "p99"), (4, "p99.9")):
        gp.append(f'set title "{title}"')
        colors = ["#332288", "#117733", "#88ccee", "#cc3311", "#ee7733"]
        gp.append("plot " + ", ".join(
            f'"{p}" using 1:{col} with linespoints lw 2 pt 7 lc rgb "{colors[i]}" title "{n}"'
            for i, (p, n) in enumerate(files)))
    gp.append("unset multiplot")
    # Throughput: the ladder (offered vs achieved) and the raw one-hop rate.
    tp = os.path.join(work, "tp.dat")
    best = max([r["msgs_per_s"] for r in res["rates"]] or [0])
    with open(tp, "w") as f:
        for r in res["rates"]:
            f.write(f'"NATS one hop, asap {"on" if r["asap"] else "off"}" {r["msgs_per_s"]:.0f}\n')
        for into, name in (("node", "presenced into n1"), ("cluster", "presenced into every node")):
            ok = [r["achieved"] for r in res["throughput"] if r["into"] == into and r["passed"]]
            f.write(f'"{name}" {max(ok) if ok else 0}\n')
        nstub = 0
        for into, name in (("node", "stub into s1"), ("cluster", "stub into every stub")):
            b = best_passed(res.get("stub_throughput", []), into)
            if b is not None:
                f.write(f'"{name}" {b}\n')
                nstub += 1
    nbars = len(res["rates"]) + 2 + nstub
    gp += [f'set output "{os.path.join(out, "throughput.png")}"',
           'set terminal pngcairo size 1000,520 font ",10"',
           'unset logscale', 'set style fill solid 0.8 border -1', 'set boxwidth 0.6',
           'set ylabel "per second"', 'set xlabel ""', 'set grid ytics', 'set key top right',
           'set title "Highest sustained rate vs the raw NATS one-hop rate and the stub (same run)"',
           f'set xrange [-0.6:{nbars - 0.4}]', 'set yrange [0:*]', 'set format y "%.0s%c"',
           f'plot "{tp}" using 0:2:xtic(1) with boxes lc rgb "#4477aa" notitle, '
           f'{best * 0.5} with lines dt 2 lw 2 lc rgb "red" title "50% of the best one-hop rate"']
    script = os.path.join(work, "plots.gp")
    open(script, "w").write("\n".join(gp) + "\n")
    r = subprocess.run(["gnuplot", script], capture_output=True, text=True)
    if r.returncode != 0:
        print("bench_lib: gnuplot failed:\n" + r.stderr, file=sys.stderr)
    for p in glob.glob(os.path.join(work, "*")):
        os.remove(p)
    os.rmdir(work)


def cmd_render(latest, out):
    """Renders latest.json again (tables, plots) without measuring."""
    res = json.load(open(latest))
    finish(res, out)


def cmd_report(raw, out, mode, command):
    finish(build(raw, mode, command), out)


def finish(res, out):
    res["targets"] = targets(res)
    res["memory_solved"] = memory_costs(res)
    md = markdown(res)
    res["markdown"] = md
    with open(os.path.join(out, "latest.json"), "w") as f:
        json.dump(res, f, indent=1, ensure_ascii=False)
        f.write("\n")
    plots(res, out)
    sys.stdout.write(md)


def cmd_readme(latest, readme):
    """Puts the table of latest.json between the bench markers of bench/README.md."""
    md = json.load(open(latest))["markdown"]
    text = open(readme).read()
    begin, end = "<!-- bench:begin -->", "<!-- bench:end -->"
    if begin not in text or end not in text:
        print(f"bench_lib: no bench markers in {readme}: not updated", file=sys.stderr)
        return
    head, rest = text.split(begin, 1)
    tail = rest.split(end, 1)[1]
    open(readme, "w").write(head + begin + "\n" + md + end + tail)


def main():
    cmds = {"ports": cmd_ports, "free-port": cmd_free_port, "field": cmd_field,
            "now-ms": cmd_now_ms, "devices0": cmd_devices0, "users0": cmd_users0,
            "churn": cmd_churn, "redis-out": cmd_redis_out, "nats-out": cmd_nats_out,
            "nats-published": cmd_nats_published, "stream-bytes": cmd_stream_bytes,
            "merge-tp": cmd_merge_tp, "merge-batch": cmd_merge_batch, "tp-passed": cmd_tp_passed,
            "recovery": cmd_recovery, "snapshot-after": cmd_snapshot_after,
            "report": cmd_report, "render": cmd_render,
            "readme": cmd_readme}
    if len(sys.argv) < 2 or sys.argv[1] not in cmds:
        sys.exit("usage: bench_lib.py " + "|".join(cmds) + " ...")
    cmds[sys.argv[1]](*sys.argv[2:])


if __name__ == "__main__":
    main()
