"""watch.py - the chaos run's watchers (chaos.py --watch): one per
nats-server, subscribed to P.user.> for the whole run, each keeping every
user's latest notification as docs/protocol.md section 3 tells watchers to
(the largest `ver`; the later one on a tie).

At the end, once queries agree with the oracle, each watcher's last
notification of every user must show the status a `get` shows now
(offline for a user never announced): what a watcher last heard is the
truth. A watcher whose connection broke (its nats-server restarted)
joins again as a client does (schemas/notifications.md, "ver": subscribe,
then `get` every user until the reply's as_of is past the subscription,
then the notifications); one whose server never came back is left out. A
user whose last notification says it is there (not `offline`) at a ver
above the one the cluster ends with, published before a node was killed, is
the class docs/failure-modes.md does not promise (a visit lost with a
node killed while cut off: no node holds that write any more);
not_promised counts those apart, and they fail nothing.

On by default in make chaos since 2026-12-03 (--no-watch: off; the
20 s chaos_short of make test runs without it, as the classes under
"What is left" still show now and then). Faults it found that are fixed (common/model/
presence.c, common/sync/repl.c, common/notify/notify.c; see
schemas/notifications.md, "ver" and its limits, and
docs/failure-modes.md, "What heals"; tests/test_repl_watch.c checks each
in the simulated cluster):
  (1) a snapshot kept no offline delay: a restarted announcer restored a
      user in the delay as offline at once and never announced its
      `offline` (the peers leave it to the announcer). The delay now comes
      back from last_seen at the end of the restore
      (pd_model_restore_delays).
  (2) the end of the offline delay takes the ver (last_seen + delay) << 16,
      which can be larger than the claim of a reconnect made just before
      it on another node: the announcer, whose delay ended before the
      claim reached it, announced `offline` and then `online` with a
      smaller ver. A return now raises the user's ver floor above that
      offline (VER ops: at once where the delay had ended, by the owner at
      the delay's end elsewhere; never ahead of the clock).
  (3) partitions: a side that took the other for down announced `offline`
      for users still connected over there, above the ver of the state
      that survived on the other side; the heal re-announced that state
      before the floor the first side writes when the devices are back to
      it (2) arrived. A heal now waits until the peer's heartbeats show
      every delta we had applied (of every origin, not only ours) and we
      applied its deltas up to that heartbeat (bounded).
  (4) users never announced offline: the heal re-announced only users
      whose view changed on this node since the gap (now: whose ver shows
      a write since, also users never held here before, which a state
      transfer brings already offline); and a node that learned a user's
      last_seen only after its devices had left (a restarted announcer)
      showed it offline at once while the others kept it in the delay, so
      when the delay ended there nobody announced it (now it is put in
      the delay too, as after a restore).
  (5) a node declared down: each peer decides last_seen at its own time
      and the latest wins, but the delay ran from each node's own
      decision, so the offline was numbered ahead of the clock of the node
      announcing it, above a return made shortly after. The delay now
      ends at last_seen + the delay on every node (pd__seen moves it).
  (8) a link that flaps: the heal for lost deltas counted from its own
      break, and its announcements were lost in the next one; a change
      older than that (an offline) never reached the other side. A heal
      scheduled within a node timeout and the suspicion of the last one
      now reaches back as far as that one did.
  (6) a node back from its snapshot (killed for longer than the node
      timeout) announced its restored state once ready, before the floors
      the others write when its devices are back to them reached it:
      below the `offline` they announced meanwhile, and nothing announced
      the floor (its status does not change). Around a start, a heal or a
      change of announcers, a floor that changes no status is now
      announced (pd_notifier_floor).
  (9) seed 1 (all 17 users wrong in a run): a node killed, then its
      namespace's link flapping while it restarted: its watchers missed
      what the others announced meanwhile, and as the node came back as a
      new life, no heal repeated it. A node declared down that comes back
      as a new life now gets the changes announced since it was last
      heard again (pd_notifier_rejoin), once it is ready: seed 14 had
      the change made while the node, back, warmed up behind a cut.
  (10) a cut shorter than the node timeout (nobody down): a route that
      broke and was rebuilt lost what it carried, and when only the
      cut-off side wrote, no delta gap told anyone to heal. A node that
      hears a live peer again after more than two sync intervals of
      silence now repeats its changes since (as they were), two sync
      intervals later (seed 16: a route just rebuilt carries heartbeats
      before the other side's interest in notifications; a repeat made
      at once was lost), and as far back as a repeat made shortly before
      the silence (seed 11: the rejoin repeat went out in a flap's down
      phase), once (it_partition's flap under load: a repeat per cycle).
  (11) seed 11: users that the node back as a new life announces now,
      changed while it was away (their delay ended after it was cut off
      and killed): its start repeats only its warm-up's changes, and the
      others repeated only users they still announce. Their rejoin now
      also repeats the users they announced while it was gone.
  (12) seed 11 (2026-12-03): a user that connected and left on a node cut
      off from the others (announced `online` to that side alone), the
      node killed before the offline delay ended and back from its
      snapshot after: restored `offline` with no change in its new life,
      never held by the others, so nobody said `offline`. A node back
      from a snapshot now says the `offline` users whose ver shows a time
      since the snapshot.
  (13) seed 11 (u772, 2026-12-03): the same as (12) for a user that
      another node announces when all are alive: the node cut off took
      the others for down, said it `online` to its side alone as its
      announcer there, and was killed before the delay ended; back from
      its snapshot it said the restored `offline` only of users it
      announces now. It now says them whoever announces them.
  (14) seed 6: a node stopped (SIGSTOP) right after a flap, whose heal
      with a peer came due while it caught up after the stall: the heal
      was dropped (the notifier was paused), and what it had announced to
      its side alone during the flap was never said to the others. A heal
      or repeat asked while paused, or under way at the pause, is now
      made at the next start.
  (15) seed 9 (u442, u645): a node back from its snapshot still held a
      device that the others dropped while it was down (the socket
      server closed it meanwhile); it announced the user `online` at its
      start, below the `offline` the others announced, and the device's
      real return (a resync, at a higher ver) changed no status there, so
      nobody announced it (seed 41, u487: the same with the devices back
      from the stream, Redis having lost the snapshot). In the floors'
      window after the start of a node that got devices of its life
      before back (two node timeouts and two sync intervals), a write
      that changes no status is now announced too (pd_model_on_same,
      pd_notifier_same).
  (16) seed 6 (u371): a change said to one side only during a flap,
      then by a heal while a third node was gone (killed, its namespace
      cut), and that node came back as a new life: the announcer's rejoin
      repeat went back only to when it last heard the node, which after
      its own stall (it read the node's heartbeats late) was after the
      change. A rejoin now goes back as far as a heal made while the node
      was gone.
  (17) seed 14 (u420): a node back as a new life with nothing of its
      life before (Redis lost its snapshot, the stream could not be
      replayed) said a user `online` at its start, below the `offline`
      another node (which did not know it ready yet) announced
      meanwhile; the resync that followed raised the user's ver without
      a change of status there. When a window of floors ends (after a
      start, a heal, a rejoin, a take-over), the node now says again the
      users it announces whose ver shows a write in it (close_walk).
  (19) seed 5 (u24, 2026-12-03 evening): a node back from its snapshot
      (JetStream down: no replay) still held a device the socket server
      had closed; it said the user `away` at its start at the very ver of
      the `offline` the others held (the device's own writes were older
      than the floor that ver came from), and when the resync removed the
      device the change was another node's to say, which never had it
      (watchers kept the `away`: the later ts on a tie of ver). In the
      window after such a start, a change of a user the node said in it
      is now said by it too (notify.c, said_lately).
  (20) seed 16 (u360, u652): a node back as a new life restored a visit
      its cut had seen (connect, leave) with the offline delay over, so
      the user went offline at once at ver last_seen + delay; the node
      announcing the user, which never had the visit, got a write that
      changed no status numbered before its window opened, and the
      closing walk went by ver alone. The model now reports every write
      while a window is open, and the closing walk says again every user
      written in it (notify.c, `written`).
  (21) seed 5 (u696): the announcer said an `offline` a second after its
      peers had it (it lagged), and was killed at once: the notification
      was lost with the process, and the take-over reached back only
      about to its last heartbeat. It now reaches back two node timeouts
      and two sync intervals (a live announcer may owe a change for a
      node timeout before it is muted).
  (22) seed 15, 60 s (u789, u245): in a three-way split a node took
      the others for down and said a user `offline` at the end of its
      delay; at the heal it learned a later last_seen of the user's,
      written on the other side before that end, which put the user back
      in the delay here (the rule of (4)): the presence held again was
      said at the status register's ver, below the `offline` (and the
      node was killed a second later, before anything outranked it). A
      node that showed the user offline now raises the ver floor at its
      clock when the user goes back in the delay (model/presence.c,
      pd__seen).
What is left:
  (18) seed 6 (u278): a user whose delay ended while the node back as a
      new life (its announcer) was cut from the device's owner: the
      others took it for the announcer, it learned the user's departure
      only after that. Not reproduced in the simulator (there the node
      back learns it from the third node in time).
  (7) seed 1: after a heal, many users re-announced `online` below an
      `offline` announced on the other side, with a floor above it
      reaching every node later without a notification (the node that
      announced that offline may have gone down before writing its
      return floor; a floor that changes no status is never announced).
Measured on 2026-12-02 (ASan build, 30 s runs, users wrong): with
partitions seeds 31: 0, 41: 6, 1: 14 to 60, 2: 2, 3: 0, 4: 0, 5: 5,
6: 168, 7: 0, 8: 0, 9: 8, 10: 1; without partitions seeds 31: 11, 1: 25,
2: 17 (node kills and stops: (6) and classes not yet analysed). The same
runs of main before these fixes: 31 with partitions 12, 41: 54, 6: 144,
1: 4 and 76, 31 without partitions 12: the counts vary a lot from run to
run of one seed.
Measured on 2026-12-03 after (10) and (11) (release build, 30 s runs with
partitions, users wrong keeping the largest ver / the newest ts): seeds
16: 0/0, 11: 11/7, 12: 2/2, 1: 0/0, 2: 0/1, 5: 0/0, 41: 0/4; the same
morning before them 11: 4/9, 12: 2/0, 13: 0/0, 14: 2/2, 15: 1/1, and in
runs between the fixes 16: 8/0 and 7/7, 11: 8/8, 1/1 and 5/5. What the
logs of the last runs show is (7), and in seed 11 a false `offline`
announced after a node's restart with both a larger ver and a newer ts
than the truth's last notification (not analysed further).
Measured on 2026-12-03, afternoon (release build, 30 s runs with
partitions, users wrong keeping the largest ver / the newest ts): at the
start (1ec8ba2) seeds 11: 1/1, 6: 23/28, 9: 1/7, 1: 0/0, 5: 0/0, 41: 0/0;
after (13)-(16) seeds 11: 1/1, 6: 6/9, 9: 0/3, 12: 1/1, 1: 0/0, 41: 0/0,
2: 0/0, 14: 0/0; after (17) as well 11: 0/0, 6: 3/4, 9: 0/3, 12: 0/0,
1: 0/0, 41: 0/0, 2: 2/1, 14: 0/0. Seed 2's two are the class not
promised (docs/failure-modes.md): one user known to no node, one heard
`online` at a ver above the final one (a visit that only a node cut off
and then killed knew). Seed 6's three: changes announced while n2's
namespace was cut and n2 was killed, which n2's watcher never heard
(the rejoin repeats for n2's new life did not reach it; not analysed).
Then (the same code with a debug trace of the notifier) seed 6 three
times and seeds 15 to 30 once each: no user wrong keeping the largest
ver (seed 15: 2 keeping the newest ts); in most runs one watcher was
left out (its nats-server restarted), in seed 20 two. Without
partitions seeds 1, 6, 31, 41: 0 (41: 1 keeping the newest ts).
Always 0 lost, 0 ghosts, 0 divergent, `cluster --diff` clean.
Measured on 2026-12-03, evening (release build with a debug trace of the
notifier, runs with partitions, users wrong keeping the largest ver, "np"
the class not promised, counted apart since then): 30 s runs before
(19)-(21): seeds 1 to 15 and 6 three times: 0 but 5 (1: u24) and 16 (3:
u245, u360, u652); np: 2: 1, 4: 5, 11: 1. After (19) and (20): 5: 0 and
1 (u696: (21)), 16: 0 and 0 (np 1), 17: 0. After (21): seeds 18 to 30:
0 each; 60 s runs (make chaos's length) of seeds 1, 2, 5, 6, 16: 0 each,
but with one or two of the three watchers left out in each (their
server restarted), so each watcher whose server restarts now joins
again (get, then notifications); with that, 30 s runs of 1, 2 and 60 s
runs of 3, 4, 7, 8, 9: 0, every watcher checked; 60 s seed 10 failed
otherwise (a node's replay of the stream took 30 s under repeated
partitions, longer than the harness waits). After the offline floors
were no longer said (notify.c, pd_notifier_floor), 30 s runs of seeds
31 to 40: 0, np 36: 2 and 39: 1 (a notification of the lost visit
delivered late to a second side by a healed route: np goes by the
notification's ts since); 60 s runs of 11, 13, 14, 17: 0, of 15: 2
((22), then fixed). Always 0 lost, 0 ghosts, 0 divergent, cluster --diff
clean.
The run's chaos.log lists, for the first users that differ, everything
each watcher heard of them.

Python 3 standard library only."""
import threading
import time

import compare
import pdwire

SUBJECT = "presence.user.>"


class Watcher(threading.Thread):
    def __init__(self, name, url, users):
        super().__init__(name="watch-" + name, daemon=True)
        self.wname, self.url, self.users = name, url, users
        self.rejoins = 0        # times its server went away and it joined again
        self.last = {}          # user -> (ver, ts, status): the largest ver
        self.last_ts = {}       # user -> (ver, ts, status): the newest ts
        self.hist = {}          # user -> [(seconds since start, ver, ts, status)], for the logs
        self.t0 = time.monotonic()
        self.count = 0
        self.broken = None      # why the connection ended, if it did
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.nc = pdwire.Nats([url])
        self.nc.subscribe(SUBJECT, self._on_note)
        self.nc.flush()

    def _on_note(self, subject, data):
        try:
            v = pdwire.mp_unpack(data)
            key = (v.get("ver") or 0, v.get("ts") or 0, v.get("status"))
            u = v["user"]
        except (pdwire.WireError, KeyError, TypeError, AttributeError):
            return
        with self.lock:
            self.count += 1
            self._keep(u, key)

    def _keep(self, u, key, how=""):
        """Keeps key (ver, ts, status) of u as the recipe says (lock held)."""
        self.hist.setdefault(u, []).append((round(time.monotonic() - self.t0, 2),) + key +
                                           ((how,) if how else ()))
        if key[:2] >= self.last.get(u, (0, 0, None))[:2]:
            self.last[u] = key
        if key[1] >= self.last_ts.get(u, (0, 0, None))[1]:
            self.last_ts[u] = key

    def run(self):
        while not self.stopping.is_set():
            try:
                self.nc.poll(0.1)
            except (OSError, pdwire.WireError) as e:
                self.nc.close()
                if not self._rejoin():
                    self.broken = str(e) or type(e).__name__
                    return

    def _rejoin(self):
        """Its server went away (a restart): back as a client that lost its
        connection does it (schemas/notifications.md, "ver"): subscribe,
        note T, `get` every user until the reply's as_of is at least T,
        keep each entry (ver V) unless a notification above it came
        meanwhile, then go on with the notifications. What it missed in
        between is what get says. False if the server never came back."""
        while not self.stopping.is_set():
            try:
                nc = pdwire.Nats([self.url])
                nc.subscribe(SUBJECT, self._on_note)
                nc.flush()
                t = int(time.time() * 1000)
                entries = self._get_all(t)
                if entries is None:
                    nc.close()
                    continue
                self.nc = nc
                with self.lock:
                    for e in entries:
                        self._keep(e["user"], (e.get("ver") or 0, t, e.get("status")), "get")
                    self.rejoins += 1
                return True
            except (OSError, pdwire.WireError, KeyError, TypeError, AttributeError):
                time.sleep(0.2)
        return False

    def _get_all(self, t, seconds=20):
        """Every user's get entry from a reply whose as_of is at least t
        (asked again until then, or None after `seconds`)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not self.stopping.is_set():
            q = pdwire.Nats([self.url])
            try:
                out = get_entries(q, self.users, as_of=t)
                if out is not None:
                    return out
            finally:
                q.close()
            time.sleep(0.2)
        return None

    def stop(self):
        self.stopping.set()
        self.join(5)
        self.nc.close()

    def status_of(self, user, by="ver"):
        """What the watcher keeps of user: by the largest ver (the recipe
        of schemas/notifications.md) or by the newest ts."""
        with self.lock:
            last = self.last if by == "ver" else self.last_ts
            return last.get(user, (0, 0, "offline"))[2]


def start(cluster, users):
    """A started watcher per nats-server of the cluster, of these users."""
    ws = []
    for i, url in enumerate(cluster.urls):
        w = Watcher("nats%d" % (i + 1), url, users)
        w.start()
        ws.append(w)
    return ws


def mismatches(watchers, nc, users, by="ver"):
    """[(watcher, user, heard, get)] of the watchers that stayed connected."""
    view = compare.query_users(nc, users)
    bad = []
    for w in watchers:
        if w.broken:
            continue
        for u in users:
            got, want = w.status_of(u, by), view.get(u, ("missing", 0))[0]
            if got != want:
                bad.append((w.wname, u, got, want))
    return bad


def check(watchers, nats, users, seconds):
    """Polls until every connected watcher's last notifications equal the
    queries (or the deadline); returns the last mismatches."""
    deadline = time.monotonic() + seconds
    bad = [("-", "-", "not asked", "-")]
    while True:
        try:
            nc = nats()
            try:
                bad = mismatches(watchers, nc, users)
            finally:
                nc.close()
        except (OSError, pdwire.WireError) as e:
            bad = [("-", "(query)", "error", str(e))]
        if not bad or time.monotonic() >= deadline:
            return bad
        time.sleep(0.3)


def mismatches_by_ts(watchers, nats, users):
    """The same check once, for watchers keeping the newest ts per user
    (reported beside the largest-ver check, which decides)."""
    try:
        nc = nats()
        try:
            return mismatches(watchers, nc, users, by="ts")
        finally:
            nc.close()
    except (OSError, pdwire.WireError) as e:
        return [("-", "(query)", "error", str(e))]


def get_entries(nc, users, as_of=0):
    """The get entries of users, batched; None if a reply is missing,
    refused, or says an as_of below the one asked."""
    out = []
    for i in range(0, len(users), compare.BATCH):
        raw = nc.request("presence.query.get", pdwire.mp_pack({"users": users[i:i + compare.BATCH]}),
                         timeout=3.0)
        rep = pdwire.mp_unpack(raw) if raw is not None else {}
        if "users" not in rep or rep.get("as_of", 0) < as_of:
            return None
        out += rep["users"]
    return out


def not_promised(watchers, nats, bad, kills):
    """The mismatches of bad (watcher, user, heard, get) that are the class
    docs/failure-modes.md does not promise: the watcher kept a visit's
    state (not `offline`) at a ver larger than the one the cluster holds
    now (a write no node has any more, the user may be known to none),
    published before a node was killed (its ts against kills: the wall
    time in ms of each SIGKILL of a node; a route that heals may deliver
    it later, chaos seed 39). A node that is not killed loses no write, so
    without a kill after it that is a failure like any other; nor is an
    `offline` kept above the final ver ((7): the end of a delay that a
    node announced and died before the devices were back to it, a floor
    nobody wrote). Returns (not promised, the rest)."""
    by_name = {w.wname: w for w in watchers}
    users = sorted({u for _, u, _, _ in bad})
    try:
        nc = nats()
        try:
            vers = {e["user"]: e.get("ver") or 0 for e in get_entries(nc, users) or []}
        finally:
            nc.close()
    except (OSError, pdwire.WireError, KeyError, TypeError, AttributeError):
        return [], bad
    lost, rest = [], []
    for b in bad:
        w, kept = by_name.get(b[0]), None
        if w:
            with w.lock:
                kept = w.last.get(b[1])
        if (kept and kept[2] != "offline" and b[1] in vers and kept[0] > vers[b[1]]
                and any(k > kept[1] for k in kills)):
            lost.append(b)
        else:
            rest.append(b)
    return lost, rest


def get_entry(nc, user):
    """The get entry of user now (status, ver, last_seen, ts), for the logs."""
    try:
        raw = nc.request("presence.query.get", pdwire.mp_pack({"users": [user]}), timeout=3.0)
        e = pdwire.mp_unpack(raw)["users"][0]
        return {k: e.get(k) for k in ("status", "ver", "last_seen", "ts", "devices")}
    except (OSError, pdwire.WireError, KeyError, IndexError, TypeError, AttributeError) as e:
        return "(no answer: %s)" % e


def history(watchers, user):
    """What each watcher heard of user, in order of arrival (for the logs)."""
    return {w.wname: list(w.hist.get(user, [])) for w in watchers}
