#!/usr/bin/python3
"""dash_hostile.py - presence-dash against bad input, from NATS and HTTP.

Starts a nats-server, one presenced node and presence-dash on free loopback
ports (tests/freeport.py), then:

  * publishes garbage on the subjects presence-dash reads (P.hb.*, P.user.>):
    random bytes, truncated and deeply nested MessagePack, huge declared
    sizes, heartbeats of the wrong type; presence-dash keeps serving, shows
    only the real node, and logs the drops with a rate limit;
  * sends hostile HTTP: path traversal, odd methods, bad and missing user
    ids, a very long URL; each gets a clear 4xx and nothing changes;
  * stops it with SIGTERM: exit 0.

Usage: dash_hostile.py BUILD_DIR    Prints one line per check; exit 1 on a failure.
"""
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
procs = []


def start(args, env=None, **kw):
    p = subprocess.Popen(args, env={**os.environ, **(env or {})}, **kw)
    procs.append(p)
    return p


def until(what, fn, secs):
    end = time.monotonic() + secs
    while True:
        try:
            v = fn()
            if v:
                return v
        except (OSError, ValueError, KeyError, TypeError):
            pass  # not up yet, or no nodes frame yet
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {secs} s waiting for {what}")
        time.sleep(0.05)


def http(url, method="GET"):
    req = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)
    print("ok:", msg)


def garbage(rng):
    """MessagePack-ish payloads that no decoder should accept."""
    out = [b"", b"\xc1", b"\x80", b"\x81\xa1v\x01", b"\x8a", b"\xdd\xff\xff\xff\xff",
           b"\xdf\xff\xff\xff\xff", b"\x91" * 5000 + b"\xc0", b"\xdb\xff\xff\xff\xf0abc",
           b"\x85\xa1v\x01\xa4node\xa2n9\xa3inc\xd3\xff\xff\xff\xff\xff\xff\xff\xff"
           b"\xa3seq\x01\xa2vc\x90",                     # negative incarnation
           b"\x84\xa1v\x01\xa4node\xa4b..d\xa3inc\x01\xa3seq\x01",  # bad id, no vc
           b"\x87\xa4user\xa1u\xa6status\xa9invisible\xa4text\xa0\xa5emoji\xa0"
           b"\xaaexpires_at\x00\xa9last_seen\x00\xa2ts\x01"]  # status never published
    out += [bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 300))) for _ in range(300)]
    return out


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    build = Path(sys.argv[1]).resolve()
    work = Path(tempfile.mkdtemp(prefix="dash-hostile-"))
    nats_port, dash_port = subprocess.check_output(
        [sys.executable, str(ROOT / "tests/freeport.py"), "2"], text=True).split()
    nats_url = f"nats://127.0.0.1:{nats_port}"
    base = f"http://127.0.0.1:{dash_port}"
    failed = False
    try:
        start(["nats-server", "-a", "127.0.0.1", "-p", nats_port],
              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        until("nats-server", lambda: socket.create_connection(("127.0.0.1", int(nats_port)), 1), 10)
        env = {"PRESENCE_NATS_URL": nats_url, "PRESENCE_SYNC_INTERVAL_MS": "300",
               "PRESENCE_REDIS_URL": "redis://127.0.0.1:1"}
        start([str(build / "presenced")], {**env, "PRESENCE_NODE_ID": "n1"},
              stdout=open(work / "n1.log", "w"), stderr=subprocess.STDOUT)
        errlog = open(work / "dash.err", "w")
        dash = start([str(build / "presence-dash")],
                     {**env, "PRESENCE_DASH_ADDR": f"127.0.0.1:{dash_port}"},
                     stdout=subprocess.DEVNULL, stderr=errlog)
        state = lambda: json.loads(http(base + "/api/state")[1])
        until("n1 up on the dashboard",
              lambda: any(n["node"] == "n1" and n["state"] == "up" for n in state()["nodes"]), 30)

        # Garbage on the subjects it reads, through NATS's text protocol.
        rng = random.Random(int(os.environ.get("PD_SEED", "1")))
        s = socket.create_connection(("127.0.0.1", int(nats_port)), 5)
        s.recv(4096)  # INFO
        payloads = garbage(rng)
        buf = bytearray(b'CONNECT {"verbose":false}\r\n')
        for i, p in enumerate(payloads):
            subj = f"presence.hb.x{i % 7}" if i % 2 else f"presence.user.u{i % 5}"
            buf += f"PUB {subj} {len(p)}\r\n".encode() + p + b"\r\n"
        buf += b"PING\r\n"
        s.sendall(bytes(buf))
        until("the PONG after the garbage", lambda: b"PONG" in s.recv(4096), 10)
        s.close()
        until("the garbage's drops in the log",
              lambda: "bad message on presence." in (work / "dash.err").read_text(), 10)
        check(dash.poll() is None, f"presence-dash still runs after {len(payloads)} bad messages")
        nodes = until("a fresh nodes frame", lambda: state()["nodes"], 5)
        check([n["node"] for n in nodes] == ["n1"], f"only the real node is shown: {nodes and [n['node'] for n in nodes]}")
        lines = (work / "dash.err").read_text().count("bad message on")
        check(0 < lines <= 20, f"the drops are logged with a rate limit ({lines} lines "
                               f"for {len(payloads)} messages)")

        # Hostile HTTP.
        for path, want in [("/../../etc/passwd", 404), ("/..%2f..%2fetc%2fpasswd", 404),
                           ("/%2e%2e/dash.js", 404), ("/index.html/", 404), ("/web/index.html", 404),
                           ("/.hidden.js", 404), ("/a" * 3000, 404), ("/dash.c", 404),
                           ("/api/user", 400), ("/api/user?user=", 400),
                           ("/api/user?user=" + "x" * 129, 400), ("/api/user?user=a..b", 400),
                           ("/api/user?user=%00", 400)]:
            code, body = http(base + path)
            check(code == want, f"GET {path[:40]} -> {code} (want {want})")
        for method in ("POST", "PUT", "DELETE"):
            code, _ = http(base + "/", method)
            check(code == 405, f"{method} / -> {code} (read-only)")
        code, body = http(base + "/api/user?user=nobody")
        doc = json.loads(body)
        check(code == 200 and doc["public"]["status"] == "offline" and doc["devices"] == [],
              "a lookup still works: an unknown user is offline, with no devices")
        code, body = http(base + "/")
        check(code == 200 and b"presence cluster" in body, "the page is still served")

        dash.send_signal(signal.SIGTERM)
        rc = dash.wait(20)
        check(rc == 0, f"SIGTERM: presence-dash exits 0 (got {rc})")
    except AssertionError as e:
        failed = True
        print("FAIL:", e, "\nlogs in", work)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
    print("0 passed, 1 failed" if failed else "1 passed, 0 failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
