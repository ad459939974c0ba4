"""cluster.py - the processes of a chaos run under one temp dir: three
clustered nats-servers with JetStream (monitoring on, so that /connz shows
who is connected where), a redis-server, three presenced nodes and
presence-sim. Starts, kills, pauses and restarts them by pid, and stops
everything it started (Cluster.stop_all, also on error).

Two layouts:
  * loopback (topo None): every process on free loopback ports; one
    presence-sim connected to all three servers, its six socket servers
    attached to the three nodes round-robin;
  * namespaces (topo, a tests/partition/netns.py Topology, created): side i
    holds nats-server i and node i, the node connected only to its own
    server, and a presence-sim of its own (socket servers s<i>-0, s<i>-1
    attached to node i, on the same server: a socket server lives next to
    its node), so the links between sides can be cut (Topology.cut) while
    every side keeps its load. Redis and the driver stay in the test's
    namespace and reach every side over its svc link, which is never cut.
    The sims share the users: a user may have devices on every side, and
    the oracle is the sum of the three.

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

_TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _TESTS)
sys.path.insert(0, os.path.join(_TESTS, "partition"))
from freeport import free_ports  # noqa: E402  (tests/freeport.py)
import netns  # noqa: E402  (tests/partition/netns.py)


class ClusterError(Exception):
    """A process did not start, stop or answer as expected."""


def port_open(port, host="127.0.0.1"):
    try:
        with socket.create_connection((host, port), timeout=0.5):
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

    def __init__(self, workdir, bin_dir, presenced, settings, topo=None):
        """bin_dir holds presence-sim; presenced is the node binary;
        settings: the PRESENCE_* environment of every node; topo: a created
        netns.Topology of three sides, or None for the loopback layout."""
        self.dir = workdir
        self.bin_dir = bin_dir
        self.presenced = presenced
        self.topo = topo
        ports = free_ports(13)
        self.redis_port = ports[9]
        self.metrics_ports = ports[10:13]
        redis_binds = ["127.0.0.1"]
        if topo is None:
            self.hosts = ["127.0.0.1"] * 3          # where the driver reaches server i
            self.nats_ports = ports[0:3]
            self.route_ports = ports[3:6]
            self.http_ports = ports[6:9]
            self.node_urls = [",".join("nats://127.0.0.1:%d" % p for p in self.nats_ports)] * 3
            self.redis_hosts = ["127.0.0.1"] * 3    # where node i reaches Redis
        else:
            self.hosts = [topo.svc_addr(i) for i in range(3)]
            self.nats_ports = [netns.NATS_PORT] * 3
            self.http_ports = [netns.NATS_HTTP_PORT] * 3
            self.node_urls = ["nats://127.0.0.1:%d" % netns.NATS_PORT] * 3
            self.redis_hosts = [topo.host_addr(i) for i in range(3)]
            redis_binds += self.redis_hosts
        self.urls = ["nats://%s:%d" % hp for hp in zip(self.hosts, self.nats_ports)]
        self.settings = dict(settings)
        self.nats = [self._nats_proc(i) for i in range(3)]
        self.redis = Proc("redis", ["redis-server", "--bind", " ".join(redis_binds),
                                    "--port", str(self.redis_port), "--dir", workdir,
                                    "--save", "", "--appendonly", "no",
                                    "--protected-mode", "no"],
                          os.path.join(workdir, "redis.log"))
        self.nodes = {nid: self._node_proc(i, nid) for i, nid in enumerate(self.NODES)}
        self.sims = []   # [(subprocess, json path)]

    def _argv(self, i, argv):
        """argv as run for side i (inside its namespace, if any)."""
        return argv if self.topo is None else self.topo.argv(i, argv)

    # -- NATS --
    def _nats_proc(self, i):
        name = "nats%d" % (i + 1)
        store = os.path.join(self.dir, name)
        os.makedirs(store, exist_ok=True)
        conf = os.path.join(self.dir, name + ".conf")
        with open(conf, "w") as f:
            if self.topo is not None:
                f.write(self.topo.nats_conf(i, name, "chaos", store, "max_payload: 1MB\n"))
            else:
                routes = ", ".join("nats-route://127.0.0.1:%d" % p for p in self.route_ports)
                f.write("server_name: %s\nlisten: 127.0.0.1:%d\nhttp: 127.0.0.1:%d\n"
                        "max_payload: 1MB\njetstream { store_dir: \"%s\" }\n"
                        "cluster {\n  name: chaos\n  listen: 127.0.0.1:%d\n  routes: [ %s ]\n}\n"
                        % (name, self.nats_ports[i], self.http_ports[i], store,
                           self.route_ports[i], routes))
        return Proc(name, self._argv(i, ["nats-server", "-c", conf]),
                    os.path.join(self.dir, name + ".log"))

    def nats_start(self, i):
        self.nats[i].start()
        if not wait_for(lambda: port_open(self.nats_ports[i], self.hosts[i]), 15):
            raise ClusterError("nats%d did not listen on %s:%d"
                               % (i + 1, self.hosts[i], self.nats_ports[i]))

    def monitor(self, i, path):
        """A monitoring endpoint of nats server i, parsed (None if it does not answer)."""
        try:
            url = "http://%s:%d/%s" % (self.hosts[i], self.http_ports[i], path)
            with urllib.request.urlopen(url, timeout=1) as r:
                return json.load(r)
        except (OSError, ValueError):
            return None

    def connz(self, i):
        """The /connz of nats server i (None if it does not answer)."""
        return self.monitor(i, "connz?limit=1024")

    def routes_seen(self):
        """[(server index, [remote server names or ids])] for the logs."""
        out = []
        for i in range(3):
            rz = self.monitor(i, "routez") if self.nats[i].running() else None
            out.append((i, None if rz is None else
                        [r.get("remote_name") or r.get("remote_id", "?")[:8]
                         for r in rz.get("routes") or []]))
        return out

    def routes_whole(self):
        """Every server runs and has a route to each of the others (its
        /routez names their server ids)."""
        ids = []
        for i in range(3):
            v = self.monitor(i, "varz") if self.nats[i].running() else None
            if not v or not v.get("server_id"):
                return False
            ids.append(v["server_id"])
        for i in range(3):
            rz = self.monitor(i, "routez")
            peers = {r.get("remote_id") for r in (rz or {}).get("routes") or []}
            if not set(ids[:i] + ids[i + 1:]) <= peers:
                return False
        return True

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
            js = self.monitor(i, "jsz")
            if ((js or {}).get("meta_cluster") or {}).get("leader"):
                return True
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
                    "PRESENCE_NATS_URL": self.node_urls[i],
                    "PRESENCE_REDIS_URL": "redis://%s:%d" % (self.redis_hosts[i],
                                                             self.redis_port),
                    "PRESENCE_METRICS_ADDR": "127.0.0.1:%d" % self.metrics_ports[i]})
        return Proc(nid, self._argv(i, [self.presenced]),
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
    def sim_names(self):
        return ["sim"] if self.topo is None else ["sim%d" % (i + 1) for i in range(3)]

    def sim_start(self, servers, rate, seed, args):
        """The load: `servers` socket servers at `rate` events/s in all
        (split among the sides' sims in the namespace layout), args the
        other presence-sim options."""
        sim = os.path.join(self.bin_dir, "presence-sim")
        if self.topo is None:
            argvs = [[sim, "--nats", ",".join(self.urls), "--nodes", ",".join(self.NODES),
                      "--servers", str(servers), "--rate", str(rate), "--seed", str(seed)]]
        else:
            argvs = [self._argv(i, [sim, "--nats", self.node_urls[i], "--nodes", nid,
                                    "--server-prefix", "s%d" % (i + 1),
                                    "--servers", str(max(1, servers // 3)),
                                    "--rate", "%g" % (rate / 3.0), "--seed", str(seed + i)])
                     for i, nid in enumerate(self.NODES)]
        for name, argv in zip(self.sim_names(), argvs):
            path = os.path.join(self.dir, name + ".json")
            out = open(path, "wb")
            err = open(os.path.join(self.dir, name + ".log"), "ab")
            try:
                self.sims.append((subprocess.Popen(argv + list(args), stdin=subprocess.DEVNULL,
                                                   stdout=out, stderr=err), path))
            finally:
                out.close()
                err.close()

    def sim_exited(self):
        """The exit code of a presence-sim that ended, or None while all run."""
        for p, _ in self.sims:
            if p.poll() is not None:
                return p.returncode
        return None

    def sims_connected(self):
        """Every presence-sim is connected with its reply inbox and its
        resync subscriptions (one per node it serves)."""
        if self.topo is None:
            return bool(self.where_connected("presence-sim", 1 + len(self.NODES)))
        return all(i in [s for s, _ in self.where_connected("presence-sim", 2)]
                   for i in range(3))

    def sim_stop(self, wait):
        """SIGINT: the load ends, the last replies are drained; returns
        (exit code, JSON summary or None): the worst code, and the sims'
        summaries summed (devices per user too) when there are several."""
        for p, _ in self.sims:
            p.send_signal(signal.SIGINT)
        code, summaries = 0, []
        deadline = time.monotonic() + wait
        for p, path in self.sims:
            try:
                c = p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.send_signal(signal.SIGINT)
                try:
                    c = p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    c = p.wait()
            code = c if code == 0 else code
            try:
                with open(path) as f:
                    summaries.append(json.loads(f.read()))
            except (OSError, ValueError):
                summaries.append(None)
        if None in summaries:
            return code, None
        return code, merge_summaries(summaries)

    # -- everything --
    def stop_all(self):
        """SIGTERM to the nodes (exit codes returned: 0 is a clean exit with
        a final snapshot), then everything else, by pid."""
        codes = {}
        for p, _ in self.sims:
            if p.poll() is None:
                p.kill()
                p.wait()
        for nid, nd in self.nodes.items():
            if nd.running():
                codes[nid] = nd.kill(signal.SIGTERM, wait=30)
        self.redis.kill(signal.SIGTERM)
        for ns in self.nats:
            ns.kill(signal.SIGTERM)
        return codes


def merge_summaries(summaries):
    """presence-sim summaries of disjoint socket servers as one: numbers
    added (times, *_ms, the longest), maps of numbers added key by key (user_devices: the devices of
    a user on all sides), users_with_devices recounted."""
    if len(summaries) == 1:
        return summaries[0]
    out = {}
    for sm in summaries:
        for k, v in sm.items():
            if isinstance(v, bool) or not isinstance(v, (int, float, dict)):
                out.setdefault(k, v)
            elif isinstance(v, dict):
                d = out.setdefault(k, {})
                for kk, vv in v.items():
                    if isinstance(vv, (int, float)) and not isinstance(vv, bool):
                        d[kk] = d.get(kk, 0) + vv
            elif k.endswith("_ms"):
                out[k] = max(out.get(k, 0), v)   # a time, not a count
            else:
                out[k] = out.get(k, 0) + v
    if "user_devices" in out:
        out["users_with_devices"] = sum(1 for v in out["user_devices"].values() if v > 0)
    return out
