"""freeport.py - loopback ports for test servers, outside the kernel's
ephemeral range.

A port from the kernel's pick for port 0 lies in the ephemeral range
(/proc/sys/net/ipv4/ip_local_port_range), where an outgoing connection can
take it before a server binds it, or while a restarted server waits to bind
it again. These ports are drawn at random below that range (above it when
there is no room), so that tests running side by side differ, and each is
checked free right now. The C harness does the same (h_free_port).

    python3 tests/freeport.py 3     # prints three ports on one line
"""
import random
import socket
import sys


def ephemeral_range():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = (int(x) for x in f.read().split())
            return lo, hi
    except (OSError, ValueError):
        return 32768, 60999


def free_ports(n):
    """n distinct loopback ports nobody listens on now, outside the
    ephemeral range."""
    lo, hi = ephemeral_range()
    first, last = (20000, lo - 1) if lo - 20000 > 2000 else (hi + 1, 65535)
    ports = []
    for _ in range(200 * n):
        if len(ports) == n:
            break
        port = random.randint(first, last)
        if port in ports:
            continue
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))
            ports.append(port)
        except OSError:
            pass
        finally:
            s.close()
    if len(ports) < n:
        raise RuntimeError("no %d free ports in %d-%d" % (n, first, last))
    return ports


if __name__ == "__main__":
    print(*free_ports(int(sys.argv[1]) if len(sys.argv) > 1 else 1))
