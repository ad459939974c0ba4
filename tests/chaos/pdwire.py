"""pdwire.py - the wire formats the chaos driver speaks, in Python 3
standard library only: MessagePack (the subset docs/protocol.md uses), a minimal
blocking NATS client (publish, subscribe, request), a minimal Redis client
(GET) and the snapshot reader of schemas/snapshot.md (enough to count each
user's devices in one node's view).

Errors are raised as WireError (or OSError from the socket); nothing here
prints."""
import json
import os
import socket
import struct
import time


class WireError(Exception):
    """A malformed message, or a peer that answered something unexpected."""


# ---- MessagePack -------------------------------------------------------------------------

def mp_pack(v):
    """Encodes None, bool, int, str, bytes, list/tuple and dict (str keys)."""
    out = bytearray()
    _pack(v, out)
    return bytes(out)


def _pack(v, out):
    if v is None:
        out.append(0xC0)
    elif v is True:
        out.append(0xC3)
    elif v is False:
        out.append(0xC2)
    elif isinstance(v, int):
        if 0 <= v < 0x80:
            out.append(v)
        elif -32 <= v < 0:
            out.append(v & 0xFF)
        elif v >= 0:
            out += b"\xcf" + struct.pack(">Q", v)
        else:
            out += b"\xd3" + struct.pack(">q", v)
    elif isinstance(v, str):
        b = v.encode()
        if len(b) < 32:
            out.append(0xA0 | len(b))
        else:
            out += b"\xdb" + struct.pack(">I", len(b))
        out += b
    elif isinstance(v, (bytes, bytearray)):
        out += b"\xc6" + struct.pack(">I", len(v)) + bytes(v)
    elif isinstance(v, (list, tuple)):
        out += b"\xdd" + struct.pack(">I", len(v))
        for x in v:
            _pack(x, out)
    elif isinstance(v, dict):
        out += b"\xdf" + struct.pack(">I", len(v))
        for k, x in v.items():
            _pack(k, out)
            _pack(x, out)
    else:
        raise WireError("cannot encode %r" % type(v))


def mp_unpack(buf):
    """Decodes one value that must fill buf exactly."""
    v, pos = _unpack(memoryview(buf), 0)
    if pos != len(buf):
        raise WireError("%d trailing bytes" % (len(buf) - pos))
    return v


_FIXED = {0xCC: ">B", 0xCD: ">H", 0xCE: ">I", 0xCF: ">Q",
          0xD0: ">b", 0xD1: ">h", 0xD2: ">i", 0xD3: ">q", 0xCA: ">f", 0xCB: ">d"}


def _take(b, pos, n):
    if pos + n > len(b):
        raise WireError("truncated at %d" % pos)
    return bytes(b[pos:pos + n]), pos + n


def _unpack(b, pos):
    raw, pos = _take(b, pos, 1)
    t = raw[0]
    if t < 0x80:
        return t, pos
    if t >= 0xE0:
        return t - 0x100, pos
    if 0xA0 <= t <= 0xBF:
        return _str(b, pos, t & 0x1F)
    if 0x90 <= t <= 0x9F:
        return _array(b, pos, t & 0x0F)
    if 0x80 <= t <= 0x8F:
        return _map(b, pos, t & 0x0F)
    if t == 0xC0:
        return None, pos
    if t in (0xC2, 0xC3):
        return t == 0xC3, pos
    if t in _FIXED:
        fmt = _FIXED[t]
        raw, pos = _take(b, pos, struct.calcsize(fmt))
        return struct.unpack(fmt, raw)[0], pos
    if t in (0xD9, 0xDA, 0xDB, 0xC4, 0xC5, 0xC6):
        width = {0xD9: 1, 0xDA: 2, 0xDB: 4, 0xC4: 1, 0xC5: 2, 0xC6: 4}[t]
        raw, pos = _take(b, pos, width)
        n = int.from_bytes(raw, "big")
        if t >= 0xD9:
            return _str(b, pos, n)
        return _take(b, pos, n)
    if t in (0xDC, 0xDD, 0xDE, 0xDF):
        width = 2 if t in (0xDC, 0xDE) else 4
        raw, pos = _take(b, pos, width)
        n = int.from_bytes(raw, "big")
        return (_array if t in (0xDC, 0xDD) else _map)(b, pos, n)
    raise WireError("unsupported MessagePack type 0x%02x at %d" % (t, pos - 1))


def _str(b, pos, n):
    raw, pos = _take(b, pos, n)
    return raw.decode("utf-8", "replace"), pos


def _array(b, pos, n):
    if n > len(b) - pos:
        raise WireError("array of %d in %d bytes" % (n, len(b) - pos))
    out = []
    for _ in range(n):
        v, pos = _unpack(b, pos)
        out.append(v)
    return out, pos


def _map(b, pos, n):
    if 2 * n > len(b) - pos:
        raise WireError("map of %d in %d bytes" % (n, len(b) - pos))
    out = {}
    for _ in range(n):
        k, pos = _unpack(b, pos)
        v, pos = _unpack(b, pos)
        out[k] = v
    return out, pos


# ---- NATS ----------------------------------------------------------------------------------

class Nats:
    """One blocking NATS connection to the first server of urls that
    answers. Messages of subscriptions arrive through poll()/request()."""

    def __init__(self, urls, timeout=2.0):
        last = None
        for url in urls:
            host, port = url.replace("nats://", "").rsplit(":", 1)
            try:
                self.sock = socket.create_connection((host, int(port)), timeout=timeout)
                self.url = url
                break
            except OSError as e:
                last = e
        else:
            raise WireError("no NATS server answers (%s): %s" % (",".join(urls), last))
        self.buf = b""
        self.sids = {}
        self.next_sid = 1
        self.inbox = "_INBOX.chaos%d_%d" % (os.getpid(), int(time.time() * 1000) % 10**8)
        self.replies = {}
        self.next_req = 0
        info = self._line(time.monotonic() + timeout)
        if not info.startswith(b"INFO "):
            raise WireError("no INFO from %s: %r" % (self.url, info[:80]))
        connect = {"verbose": False, "pedantic": False, "name": "chaos-driver",
                   "lang": "python", "version": "0", "protocol": 1}
        self.sock.sendall(b"CONNECT " + json.dumps(connect).encode() + b"\r\nPING\r\n")
        self._wait_pong(time.monotonic() + timeout)
        self.subscribe(self.inbox + ".*", self._on_reply)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def publish(self, subject, data=b"", reply=None):
        head = "PUB %s %s%d\r\n" % (subject, reply + " " if reply else "", len(data))
        self.sock.sendall(head.encode() + data + b"\r\n")

    def subscribe(self, subject, cb):
        sid = self.next_sid
        self.next_sid += 1
        self.sids[sid] = cb
        self.sock.sendall(b"SUB %s %d\r\n" % (subject.encode(), sid))
        return sid

    def unsubscribe(self, sid):
        self.sids.pop(sid, None)
        self.sock.sendall(b"UNSUB %d\r\n" % sid)

    def flush(self, timeout=2.0):
        self.sock.sendall(b"PING\r\n")
        self._wait_pong(time.monotonic() + timeout)

    def request(self, subject, data, timeout=2.0):
        """The reply's payload, or None when nobody answers in time."""
        self.next_req += 1
        key = str(self.next_req)
        self.publish(subject, data, "%s.%s" % (self.inbox, key))
        deadline = time.monotonic() + timeout
        while key not in self.replies:
            if not self._read_one(deadline):
                return None
        return self.replies.pop(key)

    def poll(self, seconds):
        """Dispatches messages for this long."""
        deadline = time.monotonic() + seconds
        while self._read_one(deadline):
            pass

    def _on_reply(self, subject, data):
        key = subject.rsplit(".", 1)[1]
        if key == str(self.next_req):
            self.replies[key] = data

    def _wait_pong(self, deadline):
        self.pong = False
        while not self.pong:
            if not self._read_one(deadline):
                raise WireError("no PONG from %s" % self.url)

    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        self.sock.settimeout(left)
        try:
            chunk = self.sock.recv(1 << 16)
        except socket.timeout:
            return False
        if not chunk:
            raise WireError("%s closed the connection" % self.url)
        self.buf += chunk
        return True

    def _line(self, deadline):
        while b"\r\n" not in self.buf:
            if not self._fill(deadline):
                return None
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _read_one(self, deadline):
        """Handles one protocol line (and its payload); False on timeout."""
        line = self._line(deadline)
        if line is None:
            return False
        if line.startswith(b"MSG "):
            parts = line.split()
            n = int(parts[-1])
            while len(self.buf) < n + 2:
                if not self._fill(deadline + 5):
                    raise WireError("truncated MSG from %s" % self.url)
            data, self.buf = self.buf[:n], self.buf[n + 2:]
            cb = self.sids.get(int(parts[2]))
            if cb:
                cb(parts[1].decode(), data)
        elif line == b"PING":
            self.sock.sendall(b"PONG\r\n")
        elif line == b"PONG":
            self.pong = True
        elif line.startswith(b"-ERR"):
            raise WireError("%s: %s" % (self.url, line.decode(errors="replace")))
        return True


# ---- Redis ---------------------------------------------------------------------------------

def redis_get(port, key, timeout=3.0):
    """The value of key on 127.0.0.1:port (bytes), None if absent; raises
    OSError when Redis does not answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        k = key.encode()
        s.sendall(b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(k), k))
        buf = b""
        while b"\r\n" not in buf:
            chunk = s.recv(1 << 16)
            if not chunk:
                raise OSError("redis closed the connection")
            buf += chunk
        head, rest = buf.split(b"\r\n", 1)
        if head.startswith(b"-"):
            raise OSError("redis: " + head.decode(errors="replace"))
        if not head.startswith(b"$"):
            raise OSError("redis: unexpected %r" % head[:40])
        n = int(head[1:])
        if n < 0:
            return None
        while len(rest) < n + 2:
            chunk = s.recv(1 << 20)
            if not chunk:
                raise OSError("redis closed the connection")
            rest += chunk
        return rest[:n]


# ---- snapshots -----------------------------------------------------------------------------

def snapshot_read(value):
    """The body map of a snapshot value (schemas/snapshot.md); the checksum
    is the node's business, the length and the layout are checked here."""
    if len(value) < 24 or value[:7] != b"PDSNAP\x00":
        raise WireError("not a snapshot")
    (n,) = struct.unpack(">Q", value[8:16])
    if n != len(value) - 24:
        raise WireError("snapshot body is %d bytes, header says %d" % (len(value) - 24, n))
    body = mp_unpack(value[24:])
    if not isinstance(body, dict) or not isinstance(body.get("devices"), list):
        raise WireError("snapshot body without devices")
    return body


def snapshot_user_devices(body):
    """{user: device count} of the view in a snapshot body."""
    counts = {}
    for entry in body["devices"]:
        op = entry[1]
        if not isinstance(op, list) or len(op) < 5 or op[0] != 0:
            raise WireError("snapshot device entry is not an ADD: %r" % (entry,))
        counts[op[3]] = counts.get(op[3], 0) + 1
    return counts
