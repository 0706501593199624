"""Probe: the launcher's rendezvous, rehearsed. The head listens on the master port as
torchrun's store does (every interface); every node, the head included, dials the master
address from its own side and must get this run's token back from the head's listener.

Stdlib only; runs on the node. A conversation (JSON lines): the first input line is
`{"node", "token", "port", "listen", "master", "timeout"}`. A listening node then prints
`listening` or `taken` (with what holds the port, where this node can tell). Every node waits
for `{"dial": true|false}`, prints `dialed`; the listener then waits for `{"stop": true}` (or the
end of its input) and prints `done` with the nodes it heard.
"""

import errno
import os
import socket
import threading
import time

from _smoke_net import dial, emit, hear, instruction, say  # inlined by probes.load


def listen(port):
    """A listener on every interface, as torch's TCPStore binds: IPv6 with IPv4 mapped where
    the node has IPv6, else IPv4. Raises OSError (EADDRINUSE: the port is taken)."""
    try:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        address = ("::", port)
    except OSError:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        address = ("0.0.0.0", port)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


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
    """The processes listening on `port` that this user can see: pid, user and command line."""
    wanted = {"socket:[%s]" % inode for inode in listening_inodes(port)}
    found = []
    for pid in os.listdir("/proc") if wanted else []:
        if not pid.isdigit():
            continue
        try:
            links = {os.readlink("/proc/%s/fd/%s" % (pid, fd))
                     for fd in os.listdir("/proc/%s/fd" % pid)}
        except OSError:
            continue
        if links & wanted:
            try:
                with open("/proc/%s/cmdline" % pid, "rb") as f:
                    command = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
                uid = os.stat("/proc/%s" % pid).st_uid
            except OSError:
                continue
            found.append({"pid": int(pid), "uid": uid, "command": command[:300]})
    return found


class Listener:
    """Accepts the nodes' dials: each says who it is and gets the token back."""

    def __init__(self, sock, token):
        self.sock = sock
        self.token = token
        self.heard = []
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # closed by stop()
            threading.Thread(target=self.answer, args=(conn,), daemon=True).start()

    def answer(self, conn):
        conn.settimeout(10)
        try:
            hello, _ = hear(conn)
            if hello is not None:
                say(conn, {"token": self.token})
                self.heard.append(hello.get("node"))
        except OSError:
            pass
        finally:
            conn.close()

    def stop(self):
        self.sock.close()


def dial_master(request):
    started = time.monotonic()
    sock, failure, _ = dial(request["master"], request["port"], request["timeout"])
    if failure is not None:
        return dict(failure, ok=False)
    try:
        local = sock.getsockname()[0]
        sock.settimeout(request["timeout"])
        say(sock, {"node": request["node"]})
        answer, _ = hear(sock)
    except OSError as e:
        answer, local = None, None
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


def main():
    request = instruction()
    listener = None
    if request.get("listen"):
        try:
            listener = Listener(listen(request["port"]), request["token"])
        except OSError as e:
            emit("taken", in_use=e.errno == errno.EADDRINUSE, error=e.strerror or str(e),
                 holders=holders(request["port"]))
            return
        emit("listening")
    if instruction().get("dial"):
        emit("dialed", **dial_master(request))
    if listener is not None:
        instruction()  # {"stop": true}, or the end of input
        listener.stop()
        emit("done", heard=listener.heard)


main()
