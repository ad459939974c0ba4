#!/usr/bin/python3
"""compose_test.py - compose.yaml and the Dockerfile, run for real with
Debian's podman and podman-compose (no Docker engine, no image registry).

  1. tests/compose/images.sh: the base image (debootstrap) and the stand-ins
     for nats, redis and prometheus, cached between runs;
  2. the project image from the Dockerfile (podman build; its layers are
     cached by podman, so an unchanged tree rebuilds in seconds);
  3. `podman-compose up` of compose.yaml under a project name of its own,
     with the published host ports moved to free ports (tests/freeport.py)
     and the project image under a tag of this run; NATS refuses a client
     without credentials, and the host's presencectl takes the admin role's
     from the volume nats-auth (the watcher, the watchers' NKey);
  4. checks from the host through the published ports: three nodes alive in
     `presencectl cluster`; every health check of compose.yaml passes
     (`podman healthcheck run`); Prometheus scrapes every node; a user
     connected through n1 is seen by every node (each node's own /metrics)
     and by queries through every NATS server; a watcher gets the
     notification of a change; n1's container killed and started again:
     three nodes alive, no ghost, the device still there; the Redis
     container restarted: a key written before is still there (the volume
     and AOF) and every node writes its snapshot again;
  5. `podman-compose down -v`, then no container, volume or network of the
     project is left.

Whatever happens (a failed check, an exception, SIGINT or SIGTERM) the
project is torn down before exit, and a run finds and removes what a killed
run left behind (the project name carries the pid). It gives up by itself
before ctest's timeout (--deadline).

Exit: 0 passed; 1 failed; 77 skipped (podman cannot run here: the reason
is printed).

Usage: compose_test.py --ctl PATH/TO/presencectl [--deadline S] [--keep]
"""
import argparse
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT / "tests"))
import freeport  # noqa: E402

SKIP = 77
PROJECT_PREFIX = "pdcompose"
NODES = ["n1", "n2", "n3"]
NATS = ["nats1", "nats2", "nats3"]
SERVICES = NATS + ["redis"] + NODES + ["prometheus", "dash"]
# Started too: the one-shot service that makes the NATS credentials (no
# health check: it exits once done).
UP_SERVICES = ["nats-auth"] + SERVICES
AUTH_DIR = "/run/presence-auth"  # compose.yaml's volume nats-auth
PORT_VARS = ["PD_COMPOSE_NATS1_PORT", "PD_COMPOSE_NATS2_PORT", "PD_COMPOSE_NATS3_PORT",
             "PD_COMPOSE_N1_METRICS_PORT", "PD_COMPOSE_N2_METRICS_PORT",
             "PD_COMPOSE_N3_METRICS_PORT", "PD_COMPOSE_PROMETHEUS_PORT", "PD_COMPOSE_DASH_PORT"]
T0 = time.monotonic()


class Failed(Exception):
    pass


class Interrupted(Exception):
    """A signal or the deadline: never swallowed by poll()'s retries."""


def log(msg):
    print(f"[{time.monotonic() - T0:6.1f}s] {msg}", flush=True)


def run(cmd, env=None, check=True, timeout=300, quiet=False):
    """Runs cmd; returns its CompletedProcess (text). check: fail on rc != 0."""
    try:
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout,
                           stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise Failed(f"{' '.join(cmd[:4])} ... did not finish in {timeout} s")
    if check and p.returncode != 0:
        if not quiet:
            sys.stdout.write(p.stdout[-4000:])
            sys.stdout.write(p.stderr[-4000:])
        raise Failed(f"{' '.join(cmd[:6])} ... exited {p.returncode}")
    return p


def poll(what, fn, timeout, every=0.5):
    """Calls fn until it returns a true value (returned) or timeout passes
    (then Failed, with fn's last answer or exception)."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            v = fn()
            if v:
                return v
            last = v
        except (Failed, OSError, ValueError, KeyError) as e:
            last = e
        if time.monotonic() > deadline:
            raise Failed(f"{what}: not within {timeout} s (last: {last!r})")
        time.sleep(every)


# ---- can podman run here? ------------------------------------------------------------

def skip_reason(env):
    if os.geteuid() != 0:
        return "needs root (debootstrap, and podman with cgroupfs on this machine)"
    for tool in ("podman", "podman-compose", "runc", "debootstrap"):
        if run(["sh", "-c", f"command -v {tool}"], check=False).returncode != 0:
            return f"{tool} is not installed (scripts/deps.sh installs it as root)"
    p = run(["podman", "info", "--format", "{{.Host.OCIRuntime.Name}}"], env=env, check=False)
    if p.returncode != 0:
        return f"podman info fails: {p.stderr.strip()[-300:]}"
    return None


# ---- the project ----------------------------------------------------------------------

class Project:
    def __init__(self, args):
        self.args = args
        self.name = f"{PROJECT_PREFIX}{os.getpid()}"
        self.image = f"localhost/presenced:{self.name}"
        self.env = dict(os.environ)
        self.env["CONTAINERS_CONF"] = str(HERE / "containers.conf")
        self.ports = dict(zip(PORT_VARS, freeport.free_ports(len(PORT_VARS))))
        self.env.update({k: str(v) for k, v in self.ports.items()})
        self.env["PRESENCED_IMAGE"] = self.image
        self.up_started = False
        self.watcher_seed = None

    def url(self, i):
        return f"nats://127.0.0.1:{self.ports[PORT_VARS[i]]}"

    def metrics_url(self, node):
        return f"http://127.0.0.1:{self.ports[f'PD_COMPOSE_{node.upper()}_METRICS_PORT']}/metrics"

    def prometheus_url(self, path):
        return f"http://127.0.0.1:{self.ports['PD_COMPOSE_PROMETHEUS_PORT']}{path}"

    def container(self, service):
        return f"{self.name}_{service}_1"  # podman-compose 1.0.3's naming

    def podman(self, *a, check=True, timeout=300, quiet=False):
        return run(["podman", *a], env=self.env, check=check, timeout=timeout, quiet=quiet)

    def compose(self, *a, check=True, timeout=300):
        return run(["podman-compose", "-p", self.name, "-f", str(ROOT / "compose.yaml"), *a],
                   env=self.env, check=check, timeout=timeout)

    def ctl(self, *a, server=0, check=True, timeout=30):
        return run([self.args.ctl, "--server", self.url(server), "--timeout", "3000", *a],
                   env=self.env, check=check, timeout=timeout)

    # -- leftovers and teardown --

    def remove_project(self, name):
        """Removes every container, pod, volume and network of project name."""
        label = f"label=io.podman.compose.project={name}"
        ids = self.podman("ps", "-aq", "--filter", label, check=False).stdout.split()
        if ids:
            self.podman("rm", "-f", "-t", "5", *ids, check=False, timeout=120)
        vols = self.podman("volume", "ls", "-q", "--filter", label, check=False).stdout.split()
        if vols:
            self.podman("volume", "rm", "-f", *vols, check=False)
        self.podman("network", "rm", "-f", f"{name}_default", check=False, quiet=True)

    def remove_stale(self):
        """Projects of runs whose process is gone (a run killed with -9)."""
        out = self.podman("ps", "-a", "--format", "{{.Labels}}", check=False).stdout
        out += self.podman("network", "ls", "--format", "{{.Name}}", check=False).stdout
        for pid in set(re.findall(rf"\b{PROJECT_PREFIX}(\d+)", out)):
            if not Path(f"/proc/{pid}").exists():
                log(f"removing {PROJECT_PREFIX}{pid}, left by a run that is gone")
                self.remove_project(f"{PROJECT_PREFIX}{pid}")
                self.untag(f"localhost/presenced:{PROJECT_PREFIX}{pid}")

    def teardown(self):
        if self.watcher_seed:
            self.watcher_seed.unlink(missing_ok=True)
        if self.up_started:
            log("tearing down")
            self.compose("down", "-v", "-t", "10", check=False, timeout=180)
            self.remove_project(self.name)
            self.up_started = False
        self.untag(self.image)

    def untag(self, ref):
        """Drops this name only (`podman untag IMAGE` alone drops them all,
        the cache anchor localhost/presenced:compose-test among them)."""
        self.podman("untag", ref, ref, check=False, quiet=True)

    def dump_logs(self):
        for s in SERVICES:
            p = self.podman("logs", "--tail", "25", self.container(s), check=False, quiet=True)
            print(f"---- last lines of {s} ----\n{p.stdout}{p.stderr}", end="")


# ---- what the cluster says ------------------------------------------------------------

def cluster(prj, server=0):
    """{node: entry} of one `presencectl --json cluster` reply."""
    p = prj.ctl("--json", "cluster", server=server, check=False)
    if p.returncode != 0:
        raise Failed(f"presencectl cluster: {p.stderr.strip()}")
    doc = json.loads(p.stdout)
    nodes = doc["nodes"]
    names = [e["node"] for e in nodes]
    if len(names) != len(set(names)):
        raise Failed(f"a node is listed twice: {names}")
    return {e["node"]: e for e in nodes}


def all_alive(prj, server=0, devices=None):
    """True if the cluster lists exactly n1..n3, all alive (and, if given,
    each seeing `devices` live devices: an entry counts the devices of the
    whole cluster as that node sees them)."""
    c = cluster(prj, server)
    if sorted(c) != NODES or not all(e["alive"] for e in c.values()):
        return False
    if devices is not None and any(e["devices"] != devices for e in c.values()):
        return False
    return c


def metrics(prj, node):
    """{name: value} of a node's /metrics, unlabelled samples only."""
    with urllib.request.urlopen(prj.metrics_url(node), timeout=5) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        m = re.match(r"^([a-z_]+) (-?[0-9.e+]+)$", line)
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


def life(m):
    """(start time, uptime) of a node from its metrics: another start time,
    or a smaller uptime, is another life."""
    up = m.get("presenced_uptime_seconds", m.get("presenced_uptime_ms", 0) / 1000)
    return (m.get("process_start_time_seconds"), up)


def every_node_sees(prj, devices, users):
    """True if each node's own metrics hold `devices` devices and `users` users."""
    for n in NODES:
        m = metrics(prj, n)
        if m.get("presenced_devices") != devices or m.get("presenced_users") != users:
            return False
    return True


def get_user(prj, user, server):
    doc = json.loads(prj.ctl("--json", "get", user, server=server).stdout)
    return doc["users"][0]


# ---- the checks -------------------------------------------------------------------------

def read_role(prj, role):
    """{VAR: value} of a role's file in the volume nats-auth, read in n1."""
    p = prj.podman("exec", prj.container("n1"), "cat", f"{AUTH_DIR}/{role}.env", check=False,
                   quiet=True)
    if p.returncode != 0:
        return None
    return dict(line.split("=", 1) for line in p.stdout.splitlines() if "=" in line)


def check_credentials(prj):
    """NATS asks for credentials (made by nats-auth at `up`, in no file of
    the tree); from here on presencectl on the host is the role admin."""
    admin = poll("the admin role's credentials in the volume nats-auth",
                 lambda: read_role(prj, "admin"), 120, every=1)
    if admin.get("PRESENCE_NATS_USER") != "admin" or len(admin.get("PRESENCE_NATS_PASSWORD", "")) < 20:
        raise Failed(f"admin.env holds {sorted(admin)}")
    seed = prj.podman("exec", prj.container("n1"), "cat", f"{AUTH_DIR}/watcher.nk").stdout.strip()
    if not seed.startswith("SU"):
        raise Failed("watcher.nk is not a user NKey seed")
    prj.watcher_seed = Path(f"/tmp/{prj.name}-watcher.nk")
    prj.watcher_seed.touch(mode=0o600)
    prj.watcher_seed.write_text(seed + "\n")

    def refused():
        p = prj.ctl("cluster", check=False)
        return p.returncode != 0 and "Violation" in p.stderr  # nats.c: "Authentication Violation"
    poll("a client without credentials refused", refused, 120, every=1)
    prj.env.update(admin)
    log("ok: NATS refuses a client without credentials; presencectl is admin from here on")


def check_up(prj):
    log("waiting for three nodes alive, asked through each NATS server's published port")
    for i in range(3):
        poll(f"three nodes alive through nats{i + 1}", lambda: all_alive(prj, i), 180)
    log("ok: n1, n2, n3 alive through nats1, nats2 and nats3")


def check_health(prj):
    # podman-compose 1.0.3 passes the health checks to podman, but podman
    # runs them from systemd timers, which this machine has not: run each
    # one here, so that a wrong health check fails the test.
    for s in SERVICES:
        poll(f"the health check of {s}",
             lambda: prj.podman("healthcheck", "run", prj.container(s), check=False,
                                quiet=True).returncode == 0, 60, every=2)
    log(f"ok: the health checks of {', '.join(SERVICES)} pass")


def check_prometheus(prj):
    def targets_up():
        with urllib.request.urlopen(prj.prometheus_url("/api/v1/targets"), timeout=5) as r:
            doc = json.load(r)
        active = doc["data"]["activeTargets"]
        up = sorted(t["labels"]["instance"] for t in active if t["health"] == "up")
        return up == ["n1:9100", "n2:9100", "n3:9100"] and up
    up = poll("Prometheus scraping n1..n3", targets_up, 90, every=1)
    log(f"ok: Prometheus scrapes {', '.join(up)}")


def check_dash(prj):
    url = f"http://127.0.0.1:{prj.ports['PD_COMPOSE_DASH_PORT']}/"

    def page():
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status == 200 and b"<html" in r.read().lower()
    poll("the dashboard's page on its published port", page, 60, every=1)
    log("ok: the dashboard serves its page on its published port")


def check_user_everywhere(prj):
    prj.ctl("--node", "n1", "--as", "compose-test", "connect", "c1", "alice", "web")
    poll("alice's device in every node's own metrics", lambda: every_node_sees(prj, 1, 1), 30)
    for i in range(3):
        u = poll(f"alice online through nats{i + 1}",
                 lambda: (lambda u: u["status"] == "online" and u["devices"] == 1 and u)(
                     get_user(prj, "alice", i)), 30)
    devs = json.loads(prj.ctl("--json", "devices", "alice", server=2).stdout)["devices"]
    if [(d["conn"], d["node"]) for d in devs] != [("c1", "n1")]:
        raise Failed(f"devices of alice: {devs}")
    log(f"ok: alice, connected through n1, seen by n1, n2, n3 (metrics) and through every "
        f"NATS server ({u['status']}, {u['devices']} device)")


def check_watcher(prj):
    # As a watcher, by the NKey made at `up` (the role may read only).
    wenv = {k: v for k, v in prj.env.items()
            if k not in ("PRESENCE_NATS_USER", "PRESENCE_NATS_PASSWORD")}
    w = subprocess.Popen([prj.args.ctl, "--server", prj.url(1), "--nkey", str(prj.watcher_seed),
                          "--json", "watch", "alice", "--count", "1"], env=wenv,
                         stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    try:
        if "watching" not in w.stderr.readline():
            raise Failed("presencectl watch did not start")
        # The subscription reaches the other NATS servers through the
        # routes a moment later: change again until the notification comes.
        for k in range(10):
            status = "busy" if k % 2 == 0 else "away"
            prj.ctl("--node", "n2", "--as", "compose-test", "status", "alice", status, server=2)
            try:
                out, _ = w.communicate(timeout=3)
                break
            except subprocess.TimeoutExpired:
                continue
        else:
            raise Failed("the watcher got no notification in 10 changes")
    finally:
        if w.poll() is None:
            w.kill()
            w.wait()
    note = json.loads(out.strip().splitlines()[0])
    if note.get("user") != "alice" or note.get("status") not in ("busy", "away"):
        raise Failed(f"unexpected notification: {note}")
    log(f"ok: a watcher on nats2 got {{user: alice, status: {note['status']}}}")


class ServerSpeaks(threading.Thread):
    """alice's socket server (compose-test) restating c1 to n1 every 300 ms,
    as a real one answers the resync request a restarted node sends: a
    node restored from its snapshot closes a server that says nothing
    within PRESENCE_SERVER_TIMEOUT_MS (3 s here) of the end of its restore
    (schemas/cluster.md, P.resync). Requests to n1 while it is down fail
    and are retried."""

    def __init__(self, prj):
        super().__init__(daemon=True)
        self.prj, self.stop = prj, threading.Event()

    def run(self):
        while not self.stop.wait(0.3):
            try:
                run([self.prj.args.ctl, "--server", self.prj.url(0), "--timeout", "500ms",
                     "--node", "n1", "--as", "compose-test", "connect", "c1", "alice", "web"],
                    env=self.prj.env, check=False, timeout=10, quiet=True)
            except Failed:
                pass  # n1 not answering yet: the next turn asks again


def check_kill_node(prj):
    """n1 killed and started again; alice's server keeps speaking from here
    to the end of the run (it stops with the process: a daemon thread)."""
    ServerSpeaks(prj).start()
    ctr = prj.container("n1")
    before = life(metrics(prj, "n1"))

    def state():
        out = prj.podman("inspect", "--format", "{{.State.Running}} {{.State.Pid}}", ctr).stdout
        running, pid = out.split()
        return running == "true", pid
    pid_before = state()[1]
    prj.podman("kill", ctr)
    log("killed n1's container (SIGKILL)")
    # Dead, or already started again by its restart policy (on-failure).
    poll("n1's container dead", lambda: (lambda r, p: not r or p != pid_before)(*state()), 30)
    prj.podman("start", ctr)  # a no-op if the restart policy was first

    def new_life():
        now = life(metrics(prj, "n1"))
        return now[0] != before[0] or now[1] < before[1]
    poll("n1's new life answering on its metrics port", new_life, 60)
    for i in range(3):
        poll(f"three nodes alive, one device, through nats{i + 1}",
             lambda: all_alive(prj, i, devices=1), 60)
    poll("alice's device in every node's own metrics", lambda: every_node_sees(prj, 1, 1), 30)
    devs = json.loads(prj.ctl("--json", "devices", "alice").stdout)["devices"]
    if [(d["conn"], d["node"]) for d in devs] != [("c1", "n1")]:
        raise Failed(f"devices of alice after n1's restart: {devs}")
    log("ok: n1 killed and started again: three nodes, no ghost, alice's device kept")


def redis_cli(prj, *a):
    return prj.podman("exec", prj.container("redis"), "redis-cli", *a).stdout.strip()


def check_restart_redis(prj):
    redis_cli(prj, "SET", "compose-test:marker", prj.name)
    counts = {n: metrics(prj, n).get("presenced_snapshots_total", 0) for n in NODES}
    prj.podman("restart", "-t", "10", prj.container("redis"))
    poll("redis answering after its restart", lambda: redis_cli(prj, "PING") == "PONG", 30)
    got = redis_cli(prj, "GET", "compose-test:marker")
    if got != prj.name:
        raise Failed(f"the key written before Redis' restart is gone ({got!r}): "
                     "no volume, or no AOF")
    for n in NODES:
        poll(f"{n} writing snapshots again after Redis' restart",
             lambda: (lambda m: m.get("presenced_redis_up") == 1
                      and m.get("presenced_snapshots_total", 0) > counts[n])(metrics(prj, n)),
             60)
    keys = redis_cli(prj, "--scan", "--pattern", "presence:snapshot:*").split()
    if sorted(keys) != [f"presence:snapshot:{n}" for n in NODES]:
        raise Failed(f"snapshot keys after Redis' restart: {keys}")
    poll("three nodes alive after Redis' restart", lambda: all_alive(prj, 0, devices=1), 30)
    log("ok: Redis restarted: its data kept (volume, AOF), every node writes snapshots again")


def check_down(prj):
    prj.compose("down", "-v", "-t", "10", timeout=180)
    label = f"label=io.podman.compose.project={prj.name}"
    left = prj.podman("ps", "-aq", "--filter", label).stdout.split()
    vols = prj.podman("volume", "ls", "-q", "--filter", label).stdout.split()
    if left or vols:
        raise Failed(f"after down -v: containers {left}, volumes {vols}")
    # podman-compose 1.0.3's down removes no network (docker compose does):
    # remove the one it made, and check that nothing else of ours is left.
    prj.podman("network", "rm", f"{prj.name}_default", check=False, quiet=True)
    nets = [n for n in prj.podman("network", "ls", "--format", "{{.Name}}").stdout.split()
            if n.startswith(prj.name)]
    if nets:
        raise Failed(f"networks left after down: {nets}")
    prj.up_started = False
    log("ok: down -v left no container, volume or network")


# ---- main -------------------------------------------------------------------------------

def build_images(prj):
    log("images: base and stand-ins (tests/compose/images.sh)")
    p = run(["nice", "-n", "10", "bash", str(HERE / "images.sh")], env=prj.env, check=False,
            timeout=1200)
    sys.stdout.write(p.stderr)
    if p.returncode != 0:
        raise Failed("tests/compose/images.sh failed")
    t = time.monotonic()
    log(f"project image from the Dockerfile: {prj.image}")
    anchor = "localhost/presenced:compose-test"
    old = prj.podman("image", "inspect", "--format", "{{.Id}}", anchor, check=False,
                     quiet=True).stdout.strip()
    # nice: the compiler in the image yields to the tests that ctest runs
    # beside this one (their timing matters, this build's does not).
    p = run(["nice", "-n", "10", "podman", "build", "--pull=never", "--format", "docker",
             "-f", str(ROOT / "Dockerfile"),
             "-t", prj.image, "-t", anchor, str(ROOT)],
            env=prj.env, check=False, timeout=1800)
    if p.returncode != 0:
        sys.stdout.write(p.stdout[-6000:] + p.stderr[-3000:])
        raise Failed("podman build of the Dockerfile failed")
    log(f"project image built in {time.monotonic() - t:.0f} s")
    # The previous build's image, if this one differs: removed with the
    # layers only it had (the cmake tree of older sources), so that disk use
    # does not grow with every change. Refused (and kept) while another run
    # still uses it under its own tag.
    new = prj.podman("image", "inspect", "--format", "{{.Id}}", anchor).stdout.strip()
    if old and old != new:
        prj.podman("rmi", old, check=False, quiet=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ctl", required=True, help="the host's presencectl")
    ap.add_argument("--deadline", type=float, default=840,
                    help="give up (and tear down) after this many seconds")
    ap.add_argument("--keep", action="store_true", help="leave the project up on failure")
    args = ap.parse_args()

    env = dict(os.environ, CONTAINERS_CONF=str(HERE / "containers.conf"))
    reason = skip_reason(env)
    if reason:
        print(f"SKIP compose_test: {reason}")
        return SKIP

    def on_signal(signum, _frame):
        raise Interrupted(f"signal {signum}" if signum != signal.SIGALRM
                          else f"the deadline ({args.deadline:.0f} s) passed")
    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGALRM):
        signal.signal(s, on_signal)
    signal.alarm(int(args.deadline))

    prj = Project(args)
    ok = False
    try:
        prj.remove_stale()
        build_images(prj)
        log(f"podman-compose up, project {prj.name}, host ports "
            + " ".join(f"{k[11:]}={v}" for k, v in prj.ports.items()))
        prj.up_started = True
        # Naming the services leaves out the profile "sim" service, which
        # podman-compose 1.0.3 would start (it knows no profiles).
        prj.compose("up", "-d", "--no-build", *UP_SERVICES, timeout=300)
        check_credentials(prj)
        check_up(prj)
        check_health(prj)
        check_prometheus(prj)
        check_dash(prj)
        check_user_everywhere(prj)
        check_watcher(prj)
        check_kill_node(prj)
        check_restart_redis(prj)
        check_down(prj)
        ok = True
    except (Failed, Interrupted) as e:
        print(f"FAIL compose_test: {e}")
        if prj.up_started:
            prj.dump_logs()
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if not (args.keep and not ok):
            prj.teardown()
        else:
            print(f"--keep: project {prj.name} left up; remove it with\n"
                  f"  CONTAINERS_CONF={HERE / 'containers.conf'} podman-compose "
                  f"-p {prj.name} -f {ROOT / 'compose.yaml'} down -v\n"
                  f"  podman network rm {prj.name}_default; "
                  f"podman untag {prj.image} {prj.image}")
    log("compose_test " + ("passed" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
