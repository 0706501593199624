"""Probe: smoke's phases 1-3 on one node: names, rendezvous, links. One process per node for
all three (starting Python costs more than the work of a phase), held open as a conversation.

Stdlib only; runs on the node. Input: JSON lines, each stage started by one of them; the end of
input ends the probe. Output: one JSON event per line.

- `{"stage": "names", "names": [...]}`: prints `names`: this node's hostname, each name's
  addresses in the order a connect tries them (or why it does not resolve), and its GPU count
  (the driver's GPUs, narrowed by CUDA_VISIBLE_DEVICES).
- `{"stage": "rendezvous", "node", "token", "port", "listen", "master", "timeout"}`: the
  launcher's rendezvous rehearsed. The head (`listen`) binds the master port as torch's store
  does (every interface) and prints `master-listening`, or `master-taken` with what holds the
  port where it can tell. Then `{"dial": true|false}`: every node, the head too, dials the
  master address and prints `dialed`: a dial counts only when the head's listener sends this
  run's token back. The head then waits for `{"stop": true}` and prints `heard` (the nodes).
- `{"stage": "links", "node", "token", "address", "variables", "timeout"}`: listens on a fresh
  port at the address of the interface the first set variable of `variables`
  (GLOO_SOCKET_IFNAME / NCCL_SOCKET_IFNAME) names, else at `address` (where its name
  resolves), and prints `listening` (or the interface problem that stops it). Then
  `{"peers": [[node, address, port]...], "next": [node, address, port] | null, "seconds"}`:
  dials every peer from that interface (else from the one its route picks), streams zeros to
  `next` for `seconds`, prints `sent`. Then `{"stop": true}`: prints `received`, the streams
  that came in (bytes, seconds from accepting to the end).
"""

import errno
import json
import os
import socket
import sys
import threading
import time

from _ifnames import selected  # inlined by probes.load

CAUSES = {
    errno.ECONNREFUSED: "refused",
    errno.ETIMEDOUT: "timed out",
    errno.EHOSTUNREACH: "no route",
    errno.ENETUNREACH: "no route",
    errno.ECONNRESET: "reset",
    errno.EADDRNOTAVAIL: "address not available",
}
SIOCGIFADDR = 0x8915
CHUNK = 256 * 1024


# -- talking to the head and to peers -----------------------------------------------------

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


class Server:
    """Accepts connections on a listening socket, each answered by `answer(conn, accepted_at)`
    in a thread of its own, until stop()."""

    def __init__(self, sock, answer):
        self.sock = sock
        self.answer = answer
        self.handlers = []
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # closed by stop()
            handler = threading.Thread(target=self.answer, args=(conn, time.monotonic()),
                                       daemon=True)
            self.handlers.append(handler)
            handler.start()

    def stop(self, wait=0.0):
        """Stop accepting; give the connections under way `wait` seconds to finish."""
        self.sock.close()
        deadline = time.monotonic() + wait
        for handler in list(self.handlers):
            handler.join(max(0.0, deadline - time.monotonic()))


# -- names ----------------------------------------------------------------------------------

def resolve(name):
    try:
        infos = socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
    except socket.gaierror as e:
        return {"error": e.strerror or str(e)}
    except UnicodeError as e:
        return {"error": str(e)}
    addresses = []
    for info in infos:
        if info[4][0] not in addresses:
            addresses.append(info[4][0])
    return {"addresses": addresses}


def resolve_all(names):
    if len(names) <= 64:
        return {name: resolve(name) for name in names}
    # Many names, maybe through DNS: 16 lookups at a time.
    found, pending = {}, list(names)

    def work():
        while pending:
            try:
                name = pending.pop()
            except IndexError:
                return
            found[name] = resolve(name)

    threads = [threading.Thread(target=work) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return found


def gpu_count():
    """The GPUs a training process would see: the driver's, narrowed by CUDA_VISIBLE_DEVICES."""
    try:
        physical = len(os.listdir("/proc/driver/nvidia/gpus"))
    except OSError:
        try:
            physical = sum(1 for d in os.listdir("/dev")
                           if d.startswith("nvidia") and d[6:].isdigit())
        except OSError:
            physical = 0
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return physical
    valid = 0
    for entry in [d.strip() for d in visible.split(",") if d.strip()]:
        if entry.lstrip("-").isdigit() and int(entry) < 0:
            break  # CUDA stops at the first invalid entry, such as -1
        valid += 1
    return min(valid, physical)


def names_stage(request):
    emit("names", hostname=socket.gethostname(), resolved=resolve_all(request["names"]),
         gpus=gpu_count())


# -- rendezvous -----------------------------------------------------------------------------

def listen_everywhere(port):
    """A listener on every interface, as torch's TCPStore binds: IPv6 with IPv4 mapped where
    the node has IPv6, else IPv4. Raises OSError (EADDRINUSE: the port is taken)."""
    failure = None
    for family, address in ((socket.AF_INET6, "::"), (socket.AF_INET, "0.0.0.0")):
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError as e:
            failure = e
            continue
        try:
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((address, port))
            sock.listen(1024)
            return sock
        except OSError as e:
            sock.close()
            if e.errno == errno.EADDRINUSE:
                raise
            failure = e  # no IPv6 here: IPv4 alone
    raise failure


def listening_inodes(port):
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                        inodes.add(fields[9])
        except (OSError, IndexError, ValueError, StopIteration):
            continue
    return inodes


def holders(port):
    """The processes listening on `port` that this user can see: pid, uid, command line."""
    wanted = {"socket:[%s]" % inode for inode in listening_inodes(port)}
    found = []
    for pid in os.listdir("/proc") if wanted else []:
        if not pid.isdigit():
            continue
        try:
            links = {os.readlink("/proc/%s/fd/%s" % (pid, fd))
                     for fd in os.listdir("/proc/%s/fd" % pid)}
            if not links & wanted:
                continue
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                command = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
            uid = os.stat("/proc/%s" % pid).st_uid
        except OSError:
            continue
        found.append({"pid": int(pid), "uid": uid, "command": command[:300]})
    return found


def dial_master(request):
    started = time.monotonic()
    sock, failure, _ = dial(request["master"], request["port"], request["timeout"])
    if failure is not None:
        return dict(failure, ok=False)
    local, answer = None, None
    try:
        local = sock.getsockname()[0]
        say(sock, {"node": request["node"]})
        answer, _ = hear(sock)
    except OSError as e:
        failure = {"cause": "reset", "message": str(e)}
    finally:
        sock.close()
    seconds = time.monotonic() - started
    if answer is None or answer.get("token") != request["token"]:
        failure = failure or {
            "cause": "not the head",
            "message": "something answers at %s:%d, but not the head's listener"
                       % (request["master"], request["port"])}
        return dict(failure, ok=False, seconds=seconds)
    return {"ok": True, "seconds": seconds, "local": local}


def rendezvous_stage(request):
    heard = []

    def answer(conn, _):
        conn.settimeout(10)
        try:
            hello, _ = hear(conn)
            if hello is not None:
                say(conn, {"token": request["token"]})
                heard.append(hello.get("node"))
        except OSError:
            pass
        finally:
            conn.close()

    server = None
    if request.get("listen"):
        try:
            server = Server(listen_everywhere(request["port"]), answer)
        except OSError as e:
            emit("master-taken", in_use=e.errno == errno.EADDRINUSE,
                 error=e.strerror or str(e), holders=holders(request["port"]))
        else:
            emit("master-listening")
    if instruction().get("dial"):
        emit("dialed", **dial_master(request))
    if server is not None:
        instruction()  # {"stop": true}
        server.stop()
        emit("heard", nodes=heard)


# -- links ----------------------------------------------------------------------------------

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


def choose_interfaces(variables):
    """For each variable set on this node: what it names, what it selects, the address used.
    The first one set (the backend's own) decides where this node listens and dials from."""
    present = [(v, os.environ[v]) for v in variables if os.environ.get(v, "").strip()]
    if not present:
        return [], None
    addresses = interface_addresses()
    chosen, source = [], None
    for variable, spec in present:
        picked = [name for name in selected(variable, spec, list(addresses)) if addresses[name]]
        entry = {"variable": variable, "value": spec, "interfaces": sorted(addresses),
                 "selected": picked, "address": addresses[picked[0]] if picked else None}
        chosen.append(entry)
        if source is None and entry["address"]:
            source = entry["address"]
    return chosen, source


def check_peer(request, peer, source):
    name, address, port = peer
    sock, failure, seconds = dial(address, port, request["timeout"], source)
    result = {"to": name, "ms": round(seconds * 1000, 2)}
    if failure is not None:
        return dict(result, ok=False, **failure)
    answer = None
    try:
        result["source"] = sock.getsockname()[0]
        say(sock, {"from": request["node"], "token": request["token"]})
        answer, _ = hear(sock)
    except OSError:
        pass
    finally:
        sock.close()
    if not answer or not answer.get("ok"):
        return dict(result, ok=False, cause="not the peer",
                    message="%s:%d answered, but not as %s's listener" % (address, port, name))
    return dict(result, ok=True)


def check_peers(request, peers, source):
    """Dial every peer, 16 at a time."""
    results, pending = [None] * len(peers), list(enumerate(peers))

    def work():
        while pending:
            try:
                i, peer = pending.pop()
            except IndexError:
                return
            results[i] = check_peer(request, peer, source)

    threads = [threading.Thread(target=work) for _ in range(min(16, len(peers)))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


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


def links_stage(request):
    interfaces, source = choose_interfaces(request["variables"])
    if any(entry["address"] is None for entry in interfaces):
        emit("listening", interfaces=interfaces, error="interface")
        return
    address = source or request["address"]
    try:
        sock = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET,
                             socket.SOCK_STREAM)
        sock.bind((address, 0))
        sock.listen(1024)
    except OSError as e:
        emit("listening", interfaces=interfaces, error="bind", address=address,
             message=e.strerror or str(e))
        return
    heard, streams = [], []

    def answer(conn, accepted):
        conn.settimeout(60)
        try:
            hello, rest = hear(conn)
            if hello is None or hello.get("token") != request["token"]:
                return
            if not hello.get("stream"):
                say(conn, {"ok": True})
                heard.append(hello.get("from"))
                return
            received, buffer = len(rest), bytearray(1 << 20)
            while True:
                n = conn.recv_into(buffer)
                if not n:
                    break
                received += n
            streams.append({"from": hello.get("from"), "bytes": received,
                            "seconds": time.monotonic() - accepted})
        except OSError:
            pass
        finally:
            conn.close()

    server = Server(sock, answer)
    emit("listening", interfaces=interfaces, address=address, port=sock.getsockname()[1])
    plan = instruction()
    if not plan:
        server.stop()
        return
    pairs = check_peers(request, plan["peers"], source)
    ring = stream(request, plan["next"], source, plan["seconds"]) if plan.get("next") else None
    emit("sent", pairs=pairs, stream=ring)
    instruction()  # {"stop": true}
    server.stop(wait=request["timeout"])
    emit("received", heard=heard, streams=streams)


STAGES = {"names": names_stage, "rendezvous": rendezvous_stage, "links": links_stage}


def main():
    while True:
        request = instruction()
        if not request:
            return
        STAGES[request["stage"]](request)


main()
