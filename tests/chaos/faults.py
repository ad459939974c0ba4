"""faults.py - the fault injector of the chaos driver: from a seeded RNG,
SIGKILL + restart of a node (down for less or more than the node timeout),
SIGSTOP + SIGCONT of a node, a restart of one nats-server (SIGKILL or
SIGTERM) and a restart of Redis (SIGKILL; it comes back empty). At most
one node fault and one server fault run at a time, so the system can be
expected to converge once they end.

After a nats-server restart the driver does what a socket server should
do after its own reconnect and what presence-sim does not (as
tests/it_persist.c does: "The test asks for those syncs"): once presence-sim is
connected again, it publishes P.resync.<node> for every node. That is the
only help it gives; a node's own SIGKILL, SIGSTOP or Redis loss gets none
beyond what the node asks for itself."""
import signal
import time

from cluster import ClusterError, wait_for


class Fault:
    def __init__(self, kind, target, start, down_for, detail=""):
        self.kind, self.target, self.start = kind, target, start
        self.recover_at = start + down_for
        self.down_for = down_for
        self.detail = detail
        self.state = "down"          # down -> recovering -> done
        self.deadline = None         # of the recovery
        self.off = 0                 # a restarted node's log offset


class Injector:
    KINDS = ("node_kill", "node_stop", "nats_restart", "redis_restart")

    def __init__(self, cluster, rng, node_timeout_s, log, resync):
        """log(text) records the timeline; resync() publishes P.resync.<node>
        for every node through a fresh NATS connection (True if it did)."""
        self.c, self.rng, self.nt, self.log, self.resync = cluster, rng, node_timeout_s, log, resync
        self.active = []
        self.counts = {k: 0 for k in self.KINDS}
        self.timeline = []
        self.driver_resyncs = 0
        self.bag = []

    def node_busy(self):
        return any(f.kind.startswith("node") for f in self.active)

    def server_busy(self):
        return any(not f.kind.startswith("node") for f in self.active)

    def inject_random(self, now):
        """Starts one fault of a kind that is free; False if none is."""
        # Kinds are drawn without replacement from a bag refilled when
        # empty, so that even a short run sees every kind.
        if not self.bag:
            self.bag = ["node_kill", "node_kill", "node_stop", "nats_restart", "redis_restart"]
        kinds = [k for k in self.bag if (self.node_busy() if k.startswith("node")
                                         else self.server_busy()) is False]
        if not kinds:
            return False
        kind = self.rng.choice(kinds)
        self.bag.remove(kind)
        if kind == "node_kill":
            nid = self.rng.choice(self.c.NODES)
            # Half shorter than the node timeout (peers see a new life),
            # half longer (peers take it for down first).
            if self.rng.random() < 0.5:
                down = self.rng.uniform(0.1, 0.6) * self.nt
            else:
                down = self.rng.uniform(1.3, 2.5) * self.nt
            f = Fault(kind, nid, now, down)
            self.c.nodes[nid].kill(signal.SIGKILL)
        elif kind == "node_stop":
            nid = self.rng.choice(self.c.NODES)
            f = Fault(kind, nid, now, self.rng.uniform(0.2, 2.0) * self.nt)
            self.c.nodes[nid].pause()
        elif kind == "nats_restart":
            i = self.rng.randrange(3)
            sig = self.rng.choice((signal.SIGKILL, signal.SIGTERM))
            f = Fault(kind, i, now, self.rng.uniform(0.5, 3.0), sig.name)
            self.c.nats[i].kill(sig)
        else:
            f = Fault(kind, "redis", now, self.rng.uniform(0.5, 3.0))
            self.c.redis.kill(signal.SIGKILL)
        self.counts[kind] += 1
        self.active.append(f)
        self._note(f, "inject", "down for %.2f s %s" % (f.down_for, f.detail))
        return True

    def step(self, now, force=False):
        """Advances every active fault; force recovers the ones still down now."""
        for f in list(self.active):
            if f.state == "down" and (force or now >= f.recover_at):
                self._recover(f, now)
            if f.state == "recovering" and self._recovered(f):
                f.state = "done"
                self._note(f, "recovered", "after %.2f s" % (time.monotonic() - f.start))
                self.active.remove(f)
            elif f.state == "recovering" and time.monotonic() > f.deadline:
                raise ClusterError("%s of %s did not recover within 30 s" % (f.kind, f.target))

    def drain(self, seconds):
        """Recovers everything still active; raises if that takes too long."""
        deadline = time.monotonic() + seconds
        while self.active:
            self.step(time.monotonic(), force=True)
            if time.monotonic() > deadline:
                raise ClusterError("faults still active: %s" %
                                   ", ".join("%s %s" % (f.kind, f.target) for f in self.active))
            time.sleep(0.05)

    def _recover(self, f, now):
        f.state = "recovering"
        f.deadline = time.monotonic() + 30
        if f.kind == "node_kill":
            f.off = self.c.node_start(f.target)
        elif f.kind == "node_stop":
            self.c.nodes[f.target].resume()
        elif f.kind == "nats_restart":
            self.c.nats_start(f.target)
        else:
            self.c.redis_start()
        self._note(f, "recover", "")

    def _recovered(self, f):
        if f.kind == "node_kill":
            if not self.c.nodes[f.target].running():
                raise ClusterError("node %s exited after its restart (code %s)" %
                                   (f.target, self.c.nodes[f.target].p.returncode))
            return self.c.node_ready(f.target, f.off)
        if f.kind == "nats_restart":
            # presence-sim connected again (anywhere) after the restart:
            # ask for the syncs it missed, as a socket server would.
            # Its reply inbox and one resync subscription per node.
            if not self.c.where_connected("presence-sim", 1 + len(self.c.NODES)):
                return False
            if self.resync():
                self.driver_resyncs += 1
            return True
        return True

    def _note(self, f, what, extra):
        t = time.monotonic()
        line = "%s %s %s %s" % (what, f.kind, f.target, extra)
        self.timeline.append((t, line))
        self.log(line)


def wait_all_up(cluster, seconds):
    """Every process of the cluster runs (none paused)."""
    return wait_for(lambda: all(n.running() and not n.paused for n in cluster.nodes.values())
                    and all(ns.running() for ns in cluster.nats) and cluster.redis.running(),
                    seconds)
