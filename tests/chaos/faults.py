"""faults.py - the fault injector of the chaos driver: from a seeded RNG,
SIGKILL + restart of a node (down for less or more than the node timeout),
SIGSTOP + SIGCONT of a node, a restart of one nats-server (SIGKILL or
SIGTERM) and a restart of Redis (SIGKILL; it comes back empty).

When the cluster runs in network namespaces (cluster.py, topo), network
partitions too, links cut for real (tests/partition/netns.py):
  partition_short  one side cut from the others for less than the node
                   timeout (the routes may survive: TCP retransmits)
  partition_long   one side cut for longer (peers declare its node down,
                   its users go offline there, and come back on the heal)
  partition_3way   every side cut from every other, then all healed
  link_flap        one side's link down and up, each phase shorter than
                   the node timeout, for a few node timeouts
A partition ends when its link is up and every server has its routes to
the two others again (/routez).

At most one node fault and one server fault (a nats-server or Redis
restart, or a partition) run at a time, so the system can be expected to
converge once they end.

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
        self.half = 0.0              # link_flap: seconds per phase
        self.toggle_at = None        # link_flap: when the link changes next
        self.toggles = 0             # link_flap: changes so far
        self.stall_note = None       # when a slow recovery is logged


PARTITION_KINDS = ("partition_short", "partition_long", "partition_3way", "link_flap")


class Injector:
    KINDS = ("node_kill", "node_stop", "nats_restart", "redis_restart")
    # Drawn without replacement, the bag refilled when empty, so that even
    # a short run sees every kind.
    BAG = ["node_kill", "node_kill", "node_stop", "nats_restart", "redis_restart"]

    def __init__(self, cluster, rng, node_timeout_s, log, resync, partitions=False):
        """log(text) records the timeline; resync() publishes P.resync.<node>
        for every node through a fresh NATS connection (True if it did);
        partitions: inject PARTITION_KINDS too (the cluster runs in
        network namespaces)."""
        self.c, self.rng, self.nt, self.log, self.resync = cluster, rng, node_timeout_s, log, resync
        self.partitions = partitions
        self.kinds = self.KINDS + (PARTITION_KINDS if partitions else ())
        self.active = []
        self.counts = {k: 0 for k in self.kinds}
        self.timeline = []
        self.driver_resyncs = 0
        self.bag = []

    def node_busy(self):
        return any(f.kind.startswith("node") for f in self.active)

    def server_busy(self):
        return any(not f.kind.startswith("node") for f in self.active)

    def inject_random(self, now):
        """Starts one fault of a kind that is free; False if none is."""
        if not self.bag:
            self.bag = self.BAG + (list(PARTITION_KINDS) if self.partitions else [])
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
        elif kind == "redis_restart":
            f = Fault(kind, "redis", now, self.rng.uniform(0.5, 3.0))
            self.c.redis.kill(signal.SIGKILL)
        else:
            f = self._partition(kind, now)
        self.counts[kind] += 1
        self.active.append(f)
        self._note(f, "inject", "down for %.2f s %s" % (f.down_for, f.detail))
        return True

    def _partition(self, kind, now):
        """Cuts links for a partition fault; returns the fault."""
        topo = self.c.topo
        if kind == "partition_3way":
            f = Fault(kind, "all", now, self.rng.uniform(0.3, 2.5) * self.nt)
            topo.cut_all()
            return f
        side = self.rng.randrange(3)
        if kind == "partition_short":
            f = Fault(kind, side, now, self.rng.uniform(0.2, 0.7) * self.nt)
        elif kind == "partition_long":
            f = Fault(kind, side, now, self.rng.uniform(1.3, 2.5) * self.nt)
        else:
            f = Fault(kind, side, now, self.rng.uniform(2.0, 3.0) * self.nt)
            f.half = self.rng.uniform(0.15, 0.45) * self.nt
            f.toggle_at = now + f.half
            f.detail = "(each phase %.2f s)" % f.half
        topo.cut(side)
        return f

    def _flap(self, f, now):
        """Turns a flapping link over when its phase is done."""
        if f.toggle_at is None or now < f.toggle_at:
            return
        if f.target in self.c.topo.cut_sides:
            self.c.topo.heal(f.target)
        else:
            self.c.topo.cut(f.target)
        f.toggles += 1
        f.toggle_at = now + f.half

    def step(self, now, force=False):
        """Advances every active fault; force recovers the ones still down now."""
        for f in list(self.active):
            if f.state == "down" and f.kind == "link_flap":
                self._flap(f, now)
            if f.state == "down" and (force or now >= f.recover_at):
                self._recover(f, now)
            if f.state == "recovering" and self._recovered(f):
                f.state = "done"
                self._note(f, "recovered", "after %.2f s" % (time.monotonic() - f.start))
                self.active.remove(f)
            elif f.state == "recovering" and time.monotonic() > f.stall_note:
                # Slow: say what is missing, once, for the logs.
                f.stall_note = float("inf")
                self._note(f, "still recovering:", self._missing(f))
            if f.state == "recovering" and time.monotonic() > f.deadline:
                raise ClusterError("%s of %s did not recover within 30 s%s" % (
                    f.kind, f.target, " (the routes between the nats-servers are not whole)"
                    if f.kind in PARTITION_KINDS else ""))

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
        f.stall_note = time.monotonic() + 8
        if f.kind == "node_kill":
            f.off = self.c.node_start(f.target)
        elif f.kind == "node_stop":
            self.c.nodes[f.target].resume()
        elif f.kind == "nats_restart":
            self.c.nats_start(f.target)
        elif f.kind == "redis_restart":
            self.c.redis_start()
        else:
            self.c.topo.heal_all()
            if f.kind == "link_flap":
                f.detail = "after %d link changes" % f.toggles
        self._note(f, "recover", f.detail if f.kind == "link_flap" else "")

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
            if not self.c.sims_connected():
                return False
            if self.resync():
                self.driver_resyncs += 1
            return True
        if f.kind in PARTITION_KINDS:
            return self.c.routes_whole()
        return True

    def _missing(self, f):
        """What a recovery still waits for, in words."""
        if f.kind == "node_kill":
            return "%s has not logged 'announcing changes'" % f.target
        if f.kind == "nats_restart":
            return ("presence-sim connections (server, start): %s, of which with their "
                    "subscriptions: %s; a sim exited: %s" % (
                        self.c.where_connected("presence-sim", 0),
                        self.c.where_connected("presence-sim", 2), self.c.sim_exited()))
        if f.kind in PARTITION_KINDS:
            return "routes: %s" % self.c.routes_seen()
        return "?"

    def _note(self, f, what, extra):
        t = time.monotonic()
        line = "%s %s %s %s" % (what, f.kind, f.target, extra)
        self.timeline.append((t, line))
        self.log(line)


def wait_all_up(cluster, seconds):
    """Every process of the cluster runs (none paused) and no link is cut."""
    return wait_for(lambda: all(n.running() and not n.paused for n in cluster.nodes.values())
                    and all(ns.running() for ns in cluster.nats) and cluster.redis.running()
                    and not (cluster.topo is not None and cluster.topo.cut_sides),
                    seconds)
