"""Probe: a node's Hugging Face cache against a manifest: check it, or receive files into it.

Stdlib only; runs on the node. Input: one JSON line on stdin, `{"action": "check" | "receive",
...}`. `check` prints one JSON object. `receive` is a conversation: it prints one JSON event per
line (listening, connected, progress, done) and reads further JSON lines (where to forward,
where the data comes from), then the data itself, from stdin or from the previous node over TCP.

Manifest entries are `[path, kind, size, sha256, target]`, paths relative to the cache root,
kind "f" (file) or "l" (relative symlink to `target`).

Integrity: a file is written aside (`.NAME.clusterprep-partial`), hashed as it is written, and
renamed to its final name only when its sha256 is right, so an interrupted transfer never
leaves a truncated file under a final name. After writing, the file's (size, mtime, sha256) is
recorded as a stamp (in ~/.cache/clusterprep, never in the HF cache), so a later check trusts
an unchanged file without hashing it again and hashes only what changed since.
"""

import json
import os
import sys
import time

# hashlib, hmac, socket, select, threading and queue are imported where they are used: a
# `sync` with nothing to do runs only `check`, and on many nodes every millisecond of start-up
# counts (importing them all costs more than starting Python).

CHUNK = 1 << 20
PARTIAL = ".clusterprep-partial"
AUTH_CONTEXT = b"clusterprep-weights-v1"


def hub_cache():
    """The cache huggingface_hub resolves on this node, and which setting decided it."""
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(name):
            return os.path.abspath(os.path.expanduser(os.environ[name])), name
    if os.environ.get("HF_HOME"):
        return os.path.join(os.path.abspath(os.path.expanduser(os.environ["HF_HOME"])), "hub"), "HF_HOME"
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(os.path.abspath(xdg), "huggingface", "hub"), "default"


def stamps_path():
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(xdg, "clusterprep", "weights-stamps.json")


def load_stamps(cache):
    try:
        with open(stamps_path()) as f:
            return json.load(f).get(cache, {})
    except (OSError, ValueError, AttributeError):
        return {}


def save_stamps(cache, stamps):
    path = stamps_path()
    try:
        with open(path) as f:
            everything = json.load(f)
    except (OSError, ValueError):
        everything = {}
    everything[cache] = stamps
    os.makedirs(os.path.dirname(path), exist_ok=True)
    aside = path + ".%d" % os.getpid()
    with open(aside, "w") as f:
        json.dump(everything, f)
    os.replace(aside, path)


def sha256_of(path, hashing):
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(CHUNK)
            if not block:
                return digest.hexdigest()
            digest.update(block)
            hashing.add(len(block))


class Hashing:
    """Counts the bytes hashed, and tells the head at most twice a second (a progress line on
    stdout, read as it arrives; the answer is the last line)."""

    def __init__(self):
        self.done = 0
        self.told = 0.0

    def add(self, n):
        self.done += n
        if time.monotonic() - self.told >= 0.5:
            self.tell()

    def tell(self):
        self.told = time.monotonic()
        emit({"event": "progress", "bytes": self.done})


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


# -- check ----------------------------------------------------------------------------------

def check_file(cache, entry, stamps, full, hash_unstamped, hashing):
    """'ok', 'missing' or 'corrupt' (with a reason) for one manifest entry; maybe a new stamp."""
    path, kind, size, sha, target = entry
    where = os.path.join(cache, path)
    try:
        st = os.lstat(where)
    except OSError:
        return "missing", "absent", None
    if kind == "l":
        if not os.path.islink(where):
            return "corrupt", "a file where a link belongs", None
        found = os.readlink(where)
        if found != target:
            return "corrupt", "links to %s, not %s" % (found, target), None
        return "ok", None, None
    if os.path.islink(where) or not os.path.isfile(where):
        return "corrupt", "not a regular file", None
    if st.st_size != size:
        return "corrupt", "size %d, expected %d" % (st.st_size, size), None
    stamp = stamps.get(path)
    fresh = stamp is not None and stamp == [size, st.st_mtime_ns, sha]
    if fresh and not full:
        return "ok", None, None
    if not full and stamp is None and not hash_unstamped:
        return "ok", None, None
    if sha256_of(where, hashing) != sha:
        return "corrupt", "sha256 differs", None
    return "ok", None, [size, st.st_mtime_ns, sha]


def extra_revisions(cache, entries, repos):
    wanted = {}
    for entry in entries:
        parts = entry[0].split("/")
        if len(parts) > 2 and parts[1] == "snapshots":
            wanted.setdefault(parts[0], set()).add(parts[2])
    extras = {}
    for repo in repos:
        try:
            present = os.listdir(os.path.join(cache, repo, "snapshots"))
        except OSError:
            continue
        found = sorted(set(present) - wanted.get(repo, set()))
        if found:
            extras[repo] = found
    return extras


def check(request):
    cache, source = hub_cache()
    stamps = load_stamps(cache)
    missing, corrupt, new_stamps = [], [], {}
    hashing = Hashing()
    for entry in request["entries"]:
        state, reason, stamp = check_file(cache, entry, stamps, request.get("full", False),
                                          request.get("hash_unstamped", False), hashing)
        if state == "missing":
            missing.append(entry[0])
        elif state == "corrupt":
            corrupt.append([entry[0], reason])
        if stamp is not None:
            new_stamps[entry[0]] = stamp
    if hashing.done:
        hashing.tell()
    if new_stamps and request.get("record_stamps"):
        stamps.update(new_stamps)
        save_stamps(cache, stamps)
    emit({
        "cache": cache, "cache_source": source, "missing": missing, "corrupt": corrupt,
        "extra_revisions": extra_revisions(cache, request["entries"], request.get("repos", [])),
    })


# -- receive --------------------------------------------------------------------------------

class Failure(Exception):
    pass


def read_control():
    line = sys.stdin.buffer.readline()
    if not line:
        raise Failure("the head closed the connection before the transfer began")
    return json.loads(line)


def listen(bind):
    import socket

    try:
        server = socket.create_server((bind, 0))
    except OSError:
        server = socket.create_server(("", 0))  # the head's address for us is not ours (NAT)
    return server


def proof(secret, nonce):
    import hmac

    return hmac.new(bytes.fromhex(secret), AUTH_CONTEXT + nonce, "sha256").digest()


def recv_exact(sock, n):
    data = b""
    while len(data) < n:
        part = sock.recv(n - len(data))
        if not part:
            raise OSError("connection closed during authentication")
        data += part
    return data


class Upstream:
    """Accepts, in the background, the first connection that proves it knows the transfer's
    secret (others are dropped), while the main thread sets up its own next hop."""

    def __init__(self, server, secret, seconds):
        import threading

        self.server, self.secret = server, secret
        self.deadline = time.monotonic() + seconds
        self.stopping = threading.Event()
        self.conn = None
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        try:
            self.conn = accept_upstream(self.server, self.secret, self.deadline, self.stopping)
        except (Failure, OSError):
            pass

    def connection(self):
        self.thread.join()
        if self.conn is None:
            raise Failure("no authenticated connection from the previous node in time")
        return self.conn

    def stop(self):
        self.stopping.set()
        self.thread.join()
        if self.conn is not None:
            self.conn.close()


def accept_upstream(server, secret, deadline, stopping):
    import hmac
    import select

    while not stopping.is_set():
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        ready, _, _ = select.select([server], [], [], min(left, 0.2))
        if not ready:
            continue
        conn, _ = server.accept()
        try:
            conn.settimeout(5)
            nonce = os.urandom(32)
            conn.sendall(nonce)
            if hmac.compare_digest(recv_exact(conn, 32), proof(secret, nonce)):
                conn.sendall(b"ok")
                conn.settimeout(120)
                return conn
        except OSError:
            pass
        conn.close()
    return None


def connect_downstream(address, port, secret):
    import socket

    sock = socket.create_connection((address, port), timeout=10)
    try:
        nonce = recv_exact(sock, 32)
        sock.sendall(proof(secret, nonce))
        if recv_exact(sock, 2) != b"ok":
            raise OSError("the next node refused the transfer's secret")
    except OSError:
        sock.close()
        raise
    sock.settimeout(120)
    return sock


class Source:
    """Reads from stdin or from the previous node's socket: whatever has arrived, up to n
    bytes (b"" only at the end). Passing bytes on as soon as they arrive, rather than after a
    whole chunk, keeps each hop from adding a chunk's transfer time to the chain."""

    def __init__(self, sock):
        self.sock = sock

    def read(self, n):
        if self.sock is None:
            return sys.stdin.buffer.read1(n)
        return self.sock.recv(n)


def partial_name(final):
    head, tail = os.path.split(final)
    return os.path.join(head, "." + tail + PARTIAL)


def remove_partials(cache, repos):
    for repo in repos:
        for folder, _, names in os.walk(os.path.join(cache, repo)):
            for name in names:
                if name.endswith(PARTIAL):
                    try:
                        os.unlink(os.path.join(folder, name))
                    except OSError:
                        pass


def place_link(cache, path, target):
    where = os.path.join(cache, path)
    if os.path.islink(where) and os.readlink(where) == target:
        return True
    if not os.path.exists(os.path.normpath(os.path.join(os.path.dirname(where), target))):
        return False  # its blob did not arrive: no dangling link that looks ready
    os.makedirs(os.path.dirname(where), exist_ok=True)
    aside = partial_name(where)
    if os.path.lexists(aside):
        os.unlink(aside)
    os.symlink(target, aside)
    os.replace(aside, where)
    return True


class Forward:
    """Passes every byte on to the next node; a failure there stops forwarding, not writing."""

    def __init__(self, sock):
        self.sock = sock
        self.error = None

    def send(self, data):
        if self.sock is None:
            return
        try:
            self.sock.sendall(data)
        except OSError as e:
            self.error = "forwarding to the next node failed: %s" % e
            self.sock.close()
            self.sock = None

    def close(self):
        import socket

        if self.sock is not None:
            try:
                self.sock.shutdown(socket.SHUT_WR)
                self.sock.settimeout(30)
                self.sock.recv(1)  # wait for the next node to finish reading
            except OSError:
                pass
            self.sock.close()


class Finisher:
    """Flushes each complete file to disk, checks its hash and renames it, in the background,
    so that a node keeps receiving and forwarding while its disk catches up (a blocking fsync
    in the receiving loop would stall every node after it in the chain)."""

    def __init__(self, written, failed):
        import queue
        import threading

        self.written, self.failed = written, failed
        self.queue = queue.Queue(maxsize=4)
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while True:
            item = self.queue.get()
            if item is None:
                return
            out, final, path, size, sha, got = item
            try:
                out.flush()
                os.fsync(out.fileno())
                out.close()
                if got != sha:
                    os.unlink(partial_name(final))
                    self.failed.append([path, "sha256 of the received bytes differs"])
                    continue
                os.replace(partial_name(final), final)
                self.written[path] = [size, os.stat(final).st_mtime_ns, sha]
            except OSError as e:
                self.failed.append([path, "cannot write: %s" % e])

    def finish(self):
        self.queue.put(None)
        self.thread.join()


def stream_files(cache, request, source, forward, finisher):
    import hashlib

    want = set(request["want"])
    total = 0
    last_report = time.monotonic()
    for index, (path, size, sha) in enumerate(request["stream"]):
        final = os.path.join(cache, path)
        out = digest = None
        if index in want:
            os.makedirs(os.path.dirname(final), exist_ok=True)
            out = open(partial_name(final), "wb")
            digest = hashlib.sha256()
        left = size
        try:
            while left:
                data = source.read(min(CHUNK, left))
                if not data:
                    raise Failure("the data stream ended after %d of %d bytes of %s"
                                  % (size - left, size, path))
                forward.send(data)
                if out is not None:
                    out.write(data)
                    digest.update(data)
                left -= len(data)
                total += len(data)
                now = time.monotonic()
                if now - last_report > 0.5:
                    emit({"event": "progress", "bytes": total,
                          "files": len(finisher.written)})
                    last_report = now
        except BaseException:
            if out is not None:
                out.close()
                os.unlink(partial_name(final))
            raise
        if out is not None:
            finisher.queue.put((out, final, path, size, sha, digest.hexdigest()))
    return total


def receive(request):
    cache = request["cache"]
    written, failed = {}, []
    result = {"event": "done", "bytes": 0, "failed": failed, "error": None,
              "forward_error": None}
    server = listen(request["bind"]) if request.get("listen") else None
    accepting = None
    if server is not None:
        accepting = Upstream(server, request["secret"], 90)
        emit({"event": "listening", "port": server.getsockname()[1]})
    upstream = downstream = None
    try:
        nxt = read_control().get("next")
        if nxt:
            try:
                downstream = connect_downstream(nxt[0], nxt[1], request["secret"])
                emit({"event": "connected", "ok": True})
            except OSError as e:
                emit({"event": "connected", "ok": False,
                      "error": "cannot reach %s:%s: %s" % (nxt[0], nxt[1], e)})
        plan = read_control()
        if not plan.get("forward") and downstream is not None:
            downstream.close()
            downstream = None
        if plan["source"] == "tcp":
            upstream = accepting.connection()
        elif accepting is not None:
            accepting.stop()
        if server is not None:
            server.close()
        remove_partials(cache, request["repos"])
        forward = Forward(downstream)
        finisher = Finisher(written, failed)
        try:
            result["bytes"] = stream_files(cache, request, Source(upstream), forward, finisher)
        finally:
            finisher.finish()  # what arrived whole is kept, even when the rest did not
        forward.close()
        result["forward_error"] = forward.error
        for path, target in request["links"]:
            if not place_link(cache, path, target):
                failed.append([path, "its blob is missing"])
    except (Failure, OSError) as e:
        result["error"] = str(e)
    finally:
        if upstream is not None:
            upstream.close()
        if written:
            stamps = load_stamps(cache)
            stamps.update(written)
            save_stamps(cache, stamps)
    result["written"] = len(written)
    emit(result)


def main():
    request = json.loads(sys.stdin.buffer.readline())
    if request["action"] == "check":
        check(request)
    else:
        receive(request)


main()
