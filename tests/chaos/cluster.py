"""cluster.py - the processes of a chaos run, each on free loopback ports
under one temp dir: three clustered nats-servers with JetStream (monitoring
on, so that /connz shows who is connected where), a redis-server, three
presenced nodes and presence-sim. Starts, kills, pauses and restarts them
by pid, and stops everything it started (Cluster.stop_all, also on error).

Nothing here decides what to inject or what to compare: see faults.py and
compare.py. Methods raise ClusterError on what they cannot do."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from freeport import free_ports  # noqa: E402  (tests/freeport.py)


class ClusterError(Exception):
    """A process did not start, stop or answer as expected."""


def port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_for(cond, seconds, step=0.05):
    """Polls cond until it holds or the deadline passes; returns whether it held."""
    deadline = time.monotonic() + seconds
    while True:
        if cond():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(step)


def log_size(path):
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def log_contains(path, needle, offset=0):
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return needle.encode() in f.read()
    except OSError:
        return False


class Proc:
    """One process of the run: how to start it, and its current life."""

    def __init__(self, name, argv, log, env=None):
        self.name, self.argv, self.log, self.env = name, argv, log, env
        self.p = None
        self.paused = False

    def start(self):
        out = open(self.log, "ab")
        try:
            self.p = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=out,
                                      stderr=subprocess.STDOUT, env=self.env)
        finally:
            out.close()
        self.paused = False

    def running(self):
        return self.p is not None and self.p.poll() is None

    def kill(self, sig=signal.SIGKILL, wait=10.0):
        """Sends sig (and SIGCONT if paused); returns the exit code."""
        if not self.running():
            return None if self.p is None else self.p.returncode
        os.kill(self.p.pid, sig)
        if self.paused:
            os.kill(self.p.pid, signal.SIGCONT)
            self.paused = False
        try:
            return self.p.wait(wait)
        except subprocess.TimeoutExpired:
            os.kill(self.p.pid, signal.SIGKILL)
            return self.p.wait(5)

    def pause(self):
        os.kill(self.p.pid, signal.SIGSTOP)
        self.paused = True

    def resume(self):
        if self.running():
            os.kill(self.p.pid, signal.SIGCONT)
        self.paused = False


class Cluster:
    NODES = ("n1", "n2", "n3")

    def __init__(self, workdir, bin_dir, presenced, settings):
        """bin_dir holds presence-sim; presenced is the node binary;
        settings: the PRESENCE_* environment of every node."""
        self.dir = workdir
        self.bin_dir = bin_dir
        self.presenced = presenced
        ports = free_ports(13)
        self.nats_ports = ports[0:3]
        self.route_ports = ports[3:6]
        self.http_ports = ports[6:9]
        self.redis_port = ports[9]
        self.metrics_ports = ports[10:13]
        self.urls = ["nats://127.0.0.1:%d" % p for p in self.nats_ports]
        self.settings = dict(settings)
        self.nats = [self._nats_proc(i) for i in range(3)]
        self.redis = Proc("redis", ["redis-server", "--bind", "127.0.0.1",
                                    "--port", str(self.redis_port), "--dir", workdir,
                                    "--save", "", "--appendonly", "no"],
                          os.path.join(workdir, "redis.log"))
        self.nodes = {nid: self._node_proc(i, nid) for i, nid in enumerate(self.NODES)}
        self.sim = None

    # -- NATS --
    def _nats_proc(self, i):
        name = "nats%d" % (i + 1)
        store = os.path.join(self.dir, name)
        os.makedirs(store, exist_ok=True)
        routes = ", ".join("nats-route://127.0.0.1:%d" % p for p in self.route_ports)
        conf = os.path.join(self.dir, name + ".conf")
        with open(conf, "w") as f:
            f.write("server_name: %s\nlisten: 127.0.0.1:%d\nhttp: 127.0.0.1:%d\n"
                    "max_payload: 1MB\njetstream { store_dir: \"%s\" }\n"
                    "cluster {\n  name: chaos\n  listen: 127.0.0.1:%d\n  routes: [ %s ]\n}\n"
                    % (name, self.nats_ports[i], self.http_ports[i], store,
                       self.route_ports[i], routes))
        return Proc(name, ["nats-server", "-c", conf], os.path.join(self.dir, name + ".log"))

    def nats_start(self, i):
        self.nats[i].start()
        if not wait_for(lambda: port_open(self.nats_ports[i]), 15):
            raise ClusterError("nats%d did not listen on %d" % (i + 1, self.nats_ports[i]))

    def connz(self, i):
        """The /connz of nats server i (None if it does not answer)."""
        try:
            url = "http://127.0.0.1:%d/connz?limit=1024" % self.http_ports[i]
            with urllib.request.urlopen(url, timeout=1) as r:
                return json.load(r)
        except (OSError, ValueError):
            return None

    def where_connected(self, name, min_subs=0):
        """[(server index, connection start)] of clients named name that
        hold at least min_subs subscriptions."""
        out = []
        for i in range(3):
            if not self.nats[i].running():
                continue
            cz = self.connz(i)
            for c in (cz or {}).get("connections") or []:
                if c.get("name") == name and c.get("subscriptions", 0) >= min_subs:
                    out.append((i, c.get("start", "")))
        return out

    def jetstream_ready(self):
        """True once some server reports a JetStream meta leader."""
        for i in range(3):
            if not self.nats[i].running():
                continue
            try:
                url = "http://127.0.0.1:%d/jsz" % self.http_ports[i]
                with urllib.request.urlopen(url, timeout=1) as r:
                    js = json.load(r)
                if (js.get("meta_cluster") or {}).get("leader"):
                    return True
            except (OSError, ValueError):
                pass
        return False

    # -- Redis --
    def redis_start(self):
        self.redis.start()
        if not wait_for(lambda: port_open(self.redis_port), 10):
            raise ClusterError("redis-server did not listen on %d" % self.redis_port)

    # -- nodes --
    def _node_proc(self, i, nid):
        env = dict(os.environ)
        env.update(self.settings)
        env.update({"PRESENCE_NODE_ID": nid,
                    "PRESENCE_NATS_URL": ",".join(self.urls),
                    "PRESENCE_REDIS_URL": "redis://127.0.0.1:%d" % self.redis_port,
                    "PRESENCE_METRICS_ADDR": "127.0.0.1:%d" % self.metrics_ports[i]})
        return Proc(nid, [self.presenced],
                    os.path.join(self.dir, nid + ".log"), env)

    def node_start(self, nid):
        """Starts (or restarts) a node; returns the log offset of this life."""
        nd = self.nodes[nid]
        off = log_size(nd.log)
        nd.start()
        return off

    def node_ready(self, nid, off):
        return log_contains(self.nodes[nid].log, "announcing changes", off)

    # -- presence-sim --
    def sim_start(self, args):
        self.sim_out = os.path.join(self.dir, "sim.json")
        argv = [os.path.join(self.bin_dir, "presence-sim"), "--nats", ",".join(self.urls),
                "--nodes", ",".join(self.NODES)] + args
        out = open(self.sim_out, "wb")
        err = open(os.path.join(self.dir, "sim.log"), "ab")
        try:
            self.sim = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        finally:
            out.close()
            err.close()

    def sim_stop(self, wait):
        """SIGINT: the load ends, the last replies are drained; returns
        (exit code, parsed JSON summary or None)."""
        self.sim.send_signal(signal.SIGINT)
        try:
            code = self.sim.wait(wait)
        except subprocess.TimeoutExpired:
            self.sim.send_signal(signal.SIGINT)
            try:
                code = self.sim.wait(10)
            except subprocess.TimeoutExpired:
                self.sim.kill()
                code = self.sim.wait()
        try:
            with open(self.sim_out) as f:
                return code, json.loads(f.read())
        except (OSError, ValueError):
            return code, None

    # -- everything --
    def stop_all(self):
        """SIGTERM to the nodes (exit codes returned: 0 is a clean exit with
        a final snapshot), then everything else, by pid."""
        codes = {}
        if self.sim is not None and self.sim.poll() is None:
            self.sim.kill()
            self.sim.wait()
        for nid, nd in self.nodes.items():
            if nd.running():
                codes[nid] = nd.kill(signal.SIGTERM, wait=30)
        self.redis.kill(signal.SIGTERM)
        for ns in self.nats:
            ns.kill(signal.SIGTERM)
        return codes
