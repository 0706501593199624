"""Probe: the links between nodes. Each node listens on a fresh port, from the interface that
its GLOO_SOCKET_IFNAME / NCCL_SOCKET_IFNAME names (else at the address its name resolves to),
dials its peers from that interface (else from the one its route picks), and streams to the
next node of the ring for a few seconds while the previous one streams to it.

Stdlib only; runs on the node. A conversation (JSON lines): the first input line is
`{"node", "token", "address", "variables", "timeout"}`; the node prints `listening` (its address
and port, or the interface problem that stops it). Then `{"peers": [[node, address, port]...],
"next": [node, address, port] | null, "seconds"}`: it dials every peer, streams to `next`, and
prints `sent`. Then `{"stop": true}`: it prints `done` with what it received.
"""

import os
import socket
import threading
import time

from _smoke_net import dial, emit, hear, instruction, say  # inlined by probes.load

SIOCGIFADDR = 0x8915
CHUNK = 256 * 1024


def interface_addresses():
    """Every interface of this node and its IPv4 address (None when it has none)."""
    import fcntl
    import struct
    found = {}
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for _, name in socket.if_nameindex():
            try:
                packed = fcntl.ioctl(probe.fileno(), SIOCGIFADDR,
                                     struct.pack("256s", name.encode()[:15]))
                found[name] = socket.inet_ntoa(packed[20:24])
            except OSError:
                found[name] = None
    finally:
        probe.close()
    return found


def matching(variable, spec, names):
    """The interfaces `spec` selects, as the library reading `variable` would: NCCL takes
    comma-separated prefixes, `^` to exclude them, `=` for exact names; gloo exact names."""
    spec = spec.strip()
    nccl = variable.startswith("NCCL")
    exclude = nccl and spec.startswith("^")
    spec = spec[1:] if exclude else spec
    exact = not nccl or spec.startswith("=")
    spec = spec[1:] if nccl and spec.startswith("=") else spec
    parts = [p.strip() for p in spec.split(",") if p.strip()]

    def selected(name):
        return any(name == p if exact else name.startswith(p) for p in parts)

    return [name for name in names if selected(name) != exclude]


def choose_interfaces(variables):
    """For each variable set on this node: what it names, what it selects, the address used.
    The first one set (the backend's own) decides where this node listens and dials from."""
    present = [(v, os.environ[v]) for v in variables if os.environ.get(v, "").strip()]
    if not present:
        return [], None
    addresses = interface_addresses()
    chosen, source = [], None
    for variable, spec in present:
        selected = [name for name in matching(variable, spec, list(addresses))
                    if addresses[name]]
        entry = {"variable": variable, "value": spec, "interfaces": sorted(addresses),
                 "selected": selected, "address": addresses[selected[0]] if selected else None}
        chosen.append(entry)
        if source is None and entry["address"]:
            source = entry["address"]
    return chosen, source


class Receiver:
    """Answers the peers' dials; counts the bytes of the ring's stream into this node."""

    def __init__(self, sock, token):
        self.sock = sock
        self.token = token
        self.heard = []
        self.streams = []
        self.handlers = []
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            handler = threading.Thread(target=self.answer, args=(conn, time.monotonic()),
                                       daemon=True)
            self.handlers.append(handler)
            handler.start()

    def answer(self, conn, started):
        conn.settimeout(60)
        try:
            hello, rest = hear(conn)
            if hello is None or hello.get("token") != self.token:
                return
            if not hello.get("stream"):
                say(conn, {"ok": True})
                self.heard.append(hello.get("from"))
                return
            received, buffer = len(rest), bytearray(1 << 20)
            while True:
                n = conn.recv_into(buffer)
                if not n:
                    break
                received += n
            self.streams.append({"from": hello.get("from"), "bytes": received,
                                 "seconds": time.monotonic() - started})
        except OSError:
            pass
        finally:
            conn.close()

    def finish(self, wait):
        self.sock.close()
        deadline = time.monotonic() + wait
        for handler in list(self.handlers):
            handler.join(max(0.0, deadline - time.monotonic()))


def check_peer(request, peer, source):
    name, address, port = peer
    sock, failure, seconds = dial(address, port, request["timeout"], source)
    result = {"to": name, "ms": round(seconds * 1000, 2)}
    if failure is not None:
        return dict(result, ok=False, **failure)
    try:
        result["source"] = sock.getsockname()[0]
        say(sock, {"from": request["node"], "token": request["token"]})
        answer, _ = hear(sock)
    except OSError:
        answer = None
    finally:
        sock.close()
    if not answer or not answer.get("ok"):
        return dict(result, ok=False, cause="not the peer",
                    message="%s:%d answered, but not as %s's listener" % (address, port, name))
    return dict(result, ok=True)


def stream(request, peer, source, seconds):
    """Send zeros to `peer` for `seconds`; what was sent, or why it stopped."""
    name, address, port = peer
    sock, failure, _ = dial(address, port, request["timeout"], source)
    if failure is not None:
        return dict(failure, to=name, ok=False)
    chunk = memoryview(bytes(CHUNK))
    sent, started = 0, time.monotonic()
    try:
        sock.settimeout(request["timeout"] + seconds)
        say(sock, {"from": request["node"], "token": request["token"], "stream": True})
        while time.monotonic() - started < seconds:
            sock.sendall(chunk)
            sent += CHUNK
        sock.shutdown(socket.SHUT_WR)
        sock.recv(1)  # the receiver closes once it has counted everything
    except OSError as e:
        return {"to": name, "ok": False, "cause": "reset", "bytes": sent,
                "message": "the stream to %s stopped: %s" % (name, e.strerror or e)}
    finally:
        sock.close()
    return {"to": name, "ok": True, "bytes": sent, "seconds": time.monotonic() - started}


def main():
    request = instruction()
    interfaces, source = choose_interfaces(request["variables"])
    if any(entry["address"] is None for entry in interfaces):
        emit("listening", interfaces=interfaces, error="interface")
        return
    address = source or request["address"]
    try:
        sock = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET,
                             socket.SOCK_STREAM)
        sock.bind((address, 0))
        sock.listen(256)
    except OSError as e:
        emit("listening", interfaces=interfaces, error="bind", address=address,
             message=e.strerror or str(e))
        return
    receiver = Receiver(sock, request["token"])
    emit("listening", interfaces=interfaces, address=address, port=sock.getsockname()[1])

    plan = instruction()
    if not plan:
        return
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(min(16, max(1, len(plan["peers"])))) as pool:
        pairs = list(pool.map(lambda peer: check_peer(request, peer, source), plan["peers"]))
    ring = stream(request, plan["next"], source, plan["seconds"]) if plan.get("next") else None
    emit("sent", pairs=pairs, stream=ring)

    instruction()  # {"stop": true}, or the end of input
    receiver.finish(wait=request["timeout"])
    emit("done", heard=receiver.heard, received=receiver.streams)


main()
