"""compare.py - the chaos driver's comparison of the cluster with
presence-sim's oracle (its --dump-users device count of every user), once
the load has stopped.

Three views are compared, each with the oracle:
  * P.query.cluster: every node alive, holding the oracle's device total,
    with equal vector clocks (a node's own entry is its live count, the
    others' come from heartbeats), asked ASKS times in a row: this is the
    convergence test, polled with a deadline;
  * P.query.get of every user in batches, ASKS times (any node of the
    queue group answers): the device count, and once the offline delay has
    passed, offline exactly when the oracle has no device. A user the
    public view shows offline is asked again as itself (an invisible user
    hides its devices from others);
  * each node's own whole view, from the snapshot it writes to Redis after
    convergence (schemas/snapshot.md): per user and per node, so a node
    that differs is named.

A user is *lost* if the oracle has a device and some view has none (or
says offline), a *ghost* if some view has a device (or says online) and the
oracle has none; a node is *divergent* if its snapshot differs from the
oracle in any user's count."""
import time

import pdwire

ASKS = 6
BATCH = 500


def cluster_state(nc):
    raw = nc.request("presence.query.cluster", pdwire.mp_pack({}), timeout=2.0)
    return None if raw is None else pdwire.mp_unpack(raw)


def cluster_converged(nc, nodes, total):
    """(True, None) when ASKS replies in a row show every node alive with
    `total` devices and the same vector clock; else (False, why)."""
    for _ in range(ASKS):
        c = cluster_state(nc)
        if c is None:
            return False, "no cluster reply"
        seen = {e.get("node"): e for e in c.get("nodes", [])}
        vcs = []
        for nid in nodes:
            e = seen.get(nid)
            if e is None or not e.get("alive"):
                return False, "%s says %s is not alive" % (c.get("node"), nid)
            if e.get("devices") != total:
                return False, "%s says %s has %s devices, oracle %d" % (
                    c.get("node"), nid, e.get("devices"), total)
            vc = e.get("vc")
            vcs.append(repr(sorted(vc.items()) if isinstance(vc, dict) else vc))
        if len(set(vcs)) != 1:
            return False, "%s sees different vector clocks: %s" % (c.get("node"), vcs)
    return True, None


def query_users(nc, users, viewer=None):
    """{user: (status, devices)} from P.query.get, batched."""
    out = {}
    for i in range(0, len(users), BATCH):
        req = {"users": users[i:i + BATCH]}
        if viewer:
            req["viewer"] = viewer
        raw = nc.request("presence.query.get", pdwire.mp_pack(req), timeout=3.0)
        if raw is None:
            raise pdwire.WireError("no reply to query.get")
        rep = pdwire.mp_unpack(raw)
        if "users" not in rep:
            raise pdwire.WireError("query.get refused: %r" % rep)
        for u in rep["users"]:
            out[u["user"]] = (u["status"], u["devices"])
    return out


def query_view(nc, users):
    """One pass: {user: (status, devices)}, invisible users seen as themselves."""
    view = query_users(nc, users)
    for u, (st, _) in list(view.items()):
        if st == "offline":
            view[u] = query_users(nc, [u], viewer=u)[u]
    return view


def query_mismatches(view, oracle, check_status):
    """[(user, kind, got, want)] of one query pass; kind is lost, ghost or count."""
    bad = []
    for u, want in oracle.items():
        st, got = view.get(u, ("missing", -1))
        # An invisible user's own view says "invisible" whether or not it
        # has devices: its count alone tells.
        online = st != "offline"
        if check_status and st != "invisible" and online != (want > 0):
            bad.append((u, "lost" if want > 0 else "ghost", st, want))
        elif got != want:
            kind = "lost" if got == 0 else ("ghost" if want == 0 else "count")
            bad.append((u, kind, got, want))
    return bad


def node_mismatches(counts, oracle):
    """[(user, kind, got, want)] of one node's snapshot view."""
    bad = []
    for u in sorted(set(oracle) | set(counts)):
        got, want = counts.get(u, 0), oracle.get(u, 0)
        if got != want:
            kind = "lost" if got == 0 else ("ghost" if want == 0 else "count")
            bad.append((u, kind, got, want))
    return bad


def snapshot_after(redis_port, nid, after_ms, seconds):
    """The snapshot body of nid whose build started after after_ms (wall
    clock), waiting for it; None if none comes in time."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            v = pdwire.redis_get(redis_port, "presence:snapshot:%s" % nid)
            if v is not None:
                body = pdwire.snapshot_read(v)
                if body.get("taken_at", 0) > after_ms:
                    return body
        except (OSError, pdwire.WireError):
            pass
        time.sleep(0.1)
    return None
