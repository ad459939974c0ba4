"""netns.py - real network partitions for the tests: one Linux network
namespace per side, each with two links to the test's own namespace.

    side i (namespace pd<tag>s<i>)            the test's namespace
      lo         127.0.0.1  nats-server clients, the node
      svc link   10.<b>.<i+1>.2/30  <------->  10.<b>.<i+1>.1   Redis, the test
      net link   10.<b>.0.<i+1>/24  <------->  bridge pd<tag>br (no address)

The net links meet on a bridge: the routes between the nats-servers go over
them, and only over them. Cutting a side brings its net link down: its
routes break for real (TCP to the other servers times out; nothing is
simulated) while the side keeps its own nats-server, node, Redis and the
test's connections over its svc link. A side reaches no other side's svc
address (the namespaces have no default route), so a cut is a cut.

Inside each namespace tcp_retries2 is lowered: nats-server 2.9 sends no
route PING while it has outbound traffic (heartbeats and deltas always
flow), so a dead route ends only when TCP gives up retransmitting, which
under Linux's default retries takes minutes (docs/failure-modes.md says
what operators should set).

Two topologies may live at once (ctest -j runs it_partition and
chaos_short side by side): each takes a second octet <b> that no address
of the test's namespace uses, chosen under a lock file.

Everything is removed by Topology.destroy(), called from the tests' finally
and at exit; namespaces and links left by a test that was killed are found
by their prefix and removed the next time (Topology.sweep()). Needs root and
`ip` (iproute2); Topology.available() tells, with the reason.

Users: tests/partition/partition.py, and tests/chaos/cluster.py when
chaos.py runs its cluster in namespaces (nats_conf() is the servers'
configuration they share)."""
import atexit
import fcntl
import os
import re
import subprocess

PREFIX = "pdp"
LOCK = "/run/lock/pdp-netns.lock" if os.path.isdir("/run/lock") else "/tmp/pdp-netns.lock"
NATS_PORT, NATS_HTTP_PORT, NATS_ROUTE_PORT = 4222, 8222, 6222


def ip(*args, ns=None, check=True):
    argv = (["ip", "netns", "exec", ns] if ns else []) + ["ip"] + list(args)
    p = subprocess.run(argv, capture_output=True, text=True)
    if check and p.returncode != 0:
        raise OSError("ip %s%s: %s" % (" ".join(args), " (in %s)" % ns if ns else "",
                                        p.stderr.strip()))
    return p


def kill_inside(ns):
    """SIGKILL to every process of namespace ns."""
    p = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
    for pid in p.stdout.split():
        try:
            os.kill(int(pid), 9)
        except (OSError, ValueError):
            pass


def sysctl(ns, key, value):
    subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-q", "-w", "%s=%s" % (key, value)],
                   capture_output=True, check=True)


class Topology:
    """n sides, each a namespace; the tag (pid x count) keeps runs apart."""

    made = 0   # topologies made by this process: each gets its own names

    def __init__(self, n=3):
        Topology.made += 1
        self.n = n
        self.tag = "%dx%d" % (os.getpid(), Topology.made % 10)
        self.b = None   # second octet of the addresses, chosen by create()
        self.ns = ["%s%ss%d" % (PREFIX, self.tag, i) for i in range(n)]
        self.bridge = "%s%sbr" % (PREFIX, self.tag)
        self.created = False
        self.cut_sides = set()

    # -- addresses --
    def net_addr(self, i):
        return "10.%d.0.%d" % (self.b, i + 1)

    def svc_addr(self, i):
        """The side's own address on its svc link (the test reaches it there)."""
        return "10.%d.%d.2" % (self.b, i + 1)

    def host_addr(self, i):
        """The test's end of side i's svc link (Redis listens there too)."""
        return "10.%d.%d.1" % (self.b, i + 1)

    def _veth(self, i, kind, end):
        return "%s%s%s%d%s" % (PREFIX, self.tag, kind, i, end)   # <= 15 bytes

    # -- life --
    @staticmethod
    def available():
        """(True, "") if namespaces can be made here, else (False, why)."""
        if os.geteuid() != 0:
            return False, "network namespaces need root"
        try:
            probe = "%s%dprobe" % (PREFIX, os.getpid())
            ip("netns", "add", probe)
            ip("netns", "del", probe)
            return True, ""
        except (OSError, FileNotFoundError) as e:
            return False, "cannot create a network namespace: %s" % e

    @staticmethod
    def sweep():
        """Removes namespaces and links of earlier runs whose process is
        gone (their tag is the pid of the test that made them)."""
        def stale(name):
            tag = ""
            for ch in name[len(PREFIX):]:
                if not ch.isdigit():
                    break
                tag += ch
            return name.startswith(PREFIX) and tag != "" and \
                not os.path.exists("/proc/%s" % tag)
        p = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
        for line in p.stdout.splitlines():
            name = (line.split() or [""])[0]
            if stale(name):
                kill_inside(name)   # what the killed test left running there
                subprocess.run(["ip", "netns", "del", name], capture_output=True)
        p = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True)
        for line in p.stdout.splitlines():
            parts = line.split(":")
            name = parts[1].strip().split("@")[0] if len(parts) > 1 else ""
            if stale(name):
                subprocess.run(["ip", "link", "del", name], capture_output=True)

    @staticmethod
    def _octets_in_use():
        p = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True)
        return {int(m) for m in re.findall(r"inet 10\.(\d+)\.", p.stdout)}

    def create(self):
        self.created = True
        atexit.register(self.destroy)
        # The lock is held until this topology's addresses exist, so that
        # a concurrent create() sees them and picks another octet.
        with open(LOCK, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            used = self._octets_in_use()
            start = (os.getpid() + Topology.made) % 150
            free = [100 + (start + k) % 150 for k in range(150)
                    if 100 + (start + k) % 150 not in used]
            if not free:
                raise OSError("no free 10.<b>.0.0/16 for the namespaces' addresses")
            self.b = free[0]
            self._create()

    def _create(self):
        ip("link", "add", self.bridge, "type", "bridge")
        ip("link", "set", self.bridge, "up")
        for i, ns in enumerate(self.ns):
            ip("netns", "add", ns)
            ip("link", "set", "lo", "up", ns=ns)
            # svc: point to point with the test's namespace
            host, side = self._veth(i, "v", "h"), self._veth(i, "v", "s")
            ip("link", "add", host, "type", "veth", "peer", "name", side)
            ip("link", "set", side, "netns", ns)
            ip("addr", "add", self.host_addr(i) + "/30", "dev", host)
            ip("link", "set", host, "up")
            ip("addr", "add", self.svc_addr(i) + "/30", "dev", side, ns=ns)
            ip("link", "set", side, "up", ns=ns)
            # net: to the bridge
            host, side = self._veth(i, "n", "h"), self._veth(i, "n", "s")
            ip("link", "add", host, "type", "veth", "peer", "name", side)
            ip("link", "set", side, "netns", ns)
            ip("link", "set", host, "master", self.bridge)
            ip("link", "set", host, "up")
            ip("addr", "add", self.net_addr(i) + "/24", "dev", side, ns=ns)
            ip("link", "set", side, "up", ns=ns)
            sysctl(ns, "net.ipv4.tcp_retries2", 3)
            sysctl(ns, "net.ipv4.tcp_syn_retries", 2)

    def destroy(self):
        if not self.created:
            return
        self.created = False
        for ns in self.ns:
            kill_inside(ns)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        for i in range(self.n):
            for kind in "vn":
                subprocess.run(["ip", "link", "del", self._veth(i, kind, "h")],
                               capture_output=True)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)

    # -- partitions --
    def cut(self, i):
        """Side i loses the other sides (its net link goes down)."""
        ip("link", "set", self._veth(i, "n", "h"), "down")
        self.cut_sides.add(i)

    def heal(self, i):
        ip("link", "set", self._veth(i, "n", "h"), "up")
        self.cut_sides.discard(i)

    def block(self, i):
        """Side i's port on the bridge stops forwarding (a switch port
        flapping): for links that flap faster than a second. Bringing the
        link itself down and up is no flap at that pace: the kernel applies
        a carrier coming back through its linkwatch work, at most once a
        second, so a link toggled every 350 ms carries nothing at all (seen
        here: not one UDP packet through in 4 s of it), while a blocked
        port forwards again at once."""
        subprocess.run(["bridge", "link", "set", "dev", self._veth(i, "n", "h"), "state", "0"],
                       check=True, capture_output=True)

    def unblock(self, i):
        subprocess.run(["bridge", "link", "set", "dev", self._veth(i, "n", "h"), "state", "3"],
                       check=True, capture_output=True)

    def cut_all(self):
        for i in range(self.n):
            self.cut(i)

    def heal_all(self):
        for i in range(self.n):
            self.heal(i)

    def argv(self, i, argv):
        """argv run inside side i's namespace (`ip netns exec` execs it:
        the pid is argv's own, for signals)."""
        return ["ip", "netns", "exec", self.ns[i]] + list(argv)

    def nats_conf(self, i, name, cluster, store, extra=""):
        """The configuration of side i's clustered nats-server: clients and
        monitoring on every address of the side (lo for its node, the svc
        link for the test) at NATS_PORT and NATS_HTTP_PORT, routes over
        the net links only. The cluster does not advertise its servers'
        client URLs: a client that reconnects (nats.c adds the advertised
        URLs to its list) comes back to its own side's server, never to
        another side's over the net links."""
        routes = ", ".join("nats-route://%s:%d" % (self.net_addr(j), NATS_ROUTE_PORT)
                           for j in range(self.n))
        return ("server_name: %s\nlisten: 0.0.0.0:%d\nhttp: 0.0.0.0:%d\n%s"
                "jetstream { store_dir: \"%s\" }\n"
                "cluster {\n  name: %s\n  listen: %s:%d\n  no_advertise: true\n"
                "  routes: [ %s ]\n}\n"
                % (name, NATS_PORT, NATS_HTTP_PORT, extra, store, cluster, self.net_addr(i),
                   NATS_ROUTE_PORT, routes))
