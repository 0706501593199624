"""Probe part: what the smoke probes share: JSON lines to and from the head, and dialling a
peer with the cause of a failure named as a user would look for it. Inlined by probes.load into
the probes that name it; stdlib only, like them."""

import errno
import json
import socket
import sys
import time

CAUSES = {
    errno.ECONNREFUSED: "refused",
    errno.ETIMEDOUT: "timed out",
    errno.EHOSTUNREACH: "no route",
    errno.ENETUNREACH: "no route",
    errno.ECONNRESET: "reset",
    errno.EADDRNOTAVAIL: "address not available",
}


def emit(event, **fields):
    """One event for the head: a JSON line on stdout, sent at once."""
    fields["event"] = event
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def instruction():
    """The head's next JSON line on stdin; {} once the head has closed it."""
    line = sys.stdin.buffer.readline()
    return json.loads(line) if line.strip() else {}


def dial(host, port, timeout, source=None):
    """Connect to host:port, from the address `source` when given (else the route picks).

    Returns (socket, None, seconds) or (None, {"cause", "message"}, seconds); a cause is one of
    CAUSES' values, "timed out", "name unknown" or "unreachable".
    """
    started = time.monotonic()
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as e:
        return None, {"cause": "name unknown",
                      "message": "cannot resolve %s: %s" % (host, e.strerror)}, 0.0
    sock = socket.socket(family, kind, proto)
    sock.settimeout(timeout)
    failure = None
    try:
        if source:
            sock.bind((source, 0))
        sock.connect(address)
    except socket.timeout:
        failure = {"cause": "timed out",
                   "message": "no answer from %s:%d within %g s" % (host, port, timeout)}
    except OSError as e:
        failure = {"cause": CAUSES.get(e.errno, "unreachable"),
                   "message": "%s:%d: %s" % (host, port, e.strerror or e)}
    seconds = time.monotonic() - started
    if failure is not None:
        sock.close()
        return None, failure, seconds
    return sock, None, seconds


def say(sock, obj):
    sock.sendall((json.dumps(obj) + "\n").encode())


def hear(sock, limit=4096):
    """One JSON line from a peer and the bytes that came after it; (None, b"") when the peer
    closed, garbled, overran `limit` or was too slow."""
    data = b""
    try:
        while b"\n" not in data and len(data) < limit:
            chunk = sock.recv(limit)
            if not chunk:
                return None, b""
            data += chunk
        line, _, rest = data.partition(b"\n")
        return json.loads(line), rest
    except (OSError, ValueError):
        return None, b""
