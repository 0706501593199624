"""Probe: receive a stream of staged files into this node's Hugging Face cache, passing every
byte on to the next node of the chain as it arrives.

Stdlib only; runs on the node. stdin: one JSON line (the request: `cache`, `stream` as
`[[path, size, sha256], ...]`, `want` (indices of the files this node writes), `links`,
`repos`, `listen`, `bind`, `secret`, `staging`, `bwlimit`), then the head's messages for the
whole transfer, one JSON line each:
  {"next": [address, port] | null, "link": ID}   pass the stream on to that node's listener
      (or to nobody); ID names the link in both nodes' events
  {"source": "staging" | "stdin"}   read the stream from the staging cache (a shared folder
      this node sees), or from the head: frames `{"data": N, "at": OFFSET}` + N bytes on stdin.
      Without either, the stream comes from the previous node, which connects to our listener.
stdout: one JSON event per line: listening, linked, need, lost, progress (also sent as a
heartbeat, so the head can tell a frozen node from a busy one; with the seconds the stream has
waited so far on its source, its next node and its disk), done.

Threads: the main thread moves the stream (read it, keep it in a ring, pass it on); a writer
thread hashes and writes the files this node wants (one sha256 pass per byte, off the thread
that moves the stream) and renames each into place only once its sha256 is right; a control
thread reads the head's messages; an acceptor authenticates each connection to the listener
(HMAC of a fresh challenge with the transfer's secret) in a short thread of its own, so clients
that say nothing cannot hold it.

Faults: positions count bytes from the start of the stream. A node whose upstream ends waits
for the head to give it another one; a new upstream (the node before a failed one) is told our
position and resends from there out of its ring (the last bytes it passed on). A node
whose downstream fails waits for the head's word before reading on, so that its ring still
covers the gap. A disk that fails (full) costs this node its own files, never the nodes after
it: the bytes are still passed on. The head closing stdin before the end stops everything;
nothing half-written ever carries a final name.
"""

import collections
import hashlib
import hmac
import json
import os
import queue
import shutil
import socket
import struct
import sys
import threading
import time

from _hubcache import emit, load_stamps, save_stamps, stamp_of  # inlined by probes.load
from _links import swap_link  # inlined by probes.load

PARTIAL = ".clusterprep-partial"  # a file being written, beside its final name
CHUNK = 1 << 20
LOWAT = 256 << 10          # bytes a read from the previous node waits for (fewer wake-ups)
WRITE_AHEAD = 32           # chunks queued for the writer before the stream waits for the disk
HEARTBEAT = 0.5            # seconds between progress lines, busy or not
REPORT_EVERY = 8 << 20     # and, fed by the head, every this many bytes (its send window)
POLL = 1.0                 # seconds a blocking read waits before looking at the head's messages
AUTH_CONTEXT = b"clusterprep-weights-v1"
AUTH_SECONDS = 5.0
CONNECT_SECONDS = 10.0
DECISION_SECONDS = 60.0    # most a node waits for the head after its next node failed


class Failure(Exception):
    """Ends this node's transfer: the head has gone, or the stream cannot go on here."""


# -- authentication --------------------------------------------------------------------------

def proof(secret, nonce):
    return hmac.new(bytes.fromhex(secret), AUTH_CONTEXT + nonce, "sha256").digest()


def recv_exact(sock, n):
    data = b""
    while len(data) < n:
        part = sock.recv(n - len(data))
        if not part:
            raise OSError("connection closed during the handshake")
        data += part
    return data


def connect_downstream(address, port, secret, link):
    """Connect to the next node's listener, prove the secret, name the link; returns (socket,
    the position the next node needs the stream from)."""
    sock = socket.create_connection((address, port), timeout=CONNECT_SECONDS)
    try:
        nonce = recv_exact(sock, 32)
        sock.sendall(proof(secret, nonce))
        if recv_exact(sock, 2) != b"ok":
            raise OSError("the next node refused the transfer's secret")
        sock.sendall(struct.pack(">Q", link))
        sock.settimeout(30)  # it tells its position once its main thread takes us on
        (offset,) = struct.unpack(">Q", recv_exact(sock, 8))
    except OSError:
        sock.close()
        raise
    sock.settimeout(None)
    return sock, offset


class Acceptor:
    """Accepts connections to the listener for the whole transfer; each proves the secret in a
    thread of its own, and each that does is handed to the main thread (the newest wins)."""

    MAX_PENDING = 32

    def __init__(self, server, secret, inbox):
        self.server, self.secret, self.inbox = server, secret, inbox
        self.pending = threading.BoundedSemaphore(self.MAX_PENDING)
        self.closed = False
        server.settimeout(POLL)
        threading.Thread(target=self.run, daemon=True).start()

    def run(self):
        while not self.closed:
            try:
                conn, _ = self.server.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            if not self.pending.acquire(blocking=False):
                conn.close()  # a flood of idle clients: refuse the surplus, keep listening
                continue
            threading.Thread(target=self.authenticate, args=(conn,), daemon=True).start()

    def authenticate(self, conn):
        try:
            conn.settimeout(AUTH_SECONDS)
            nonce = os.urandom(32)
            conn.sendall(nonce)
            if not hmac.compare_digest(recv_exact(conn, 32), proof(self.secret, nonce)):
                conn.close()
                return
            conn.sendall(b"ok")
            (link,) = struct.unpack(">Q", recv_exact(conn, 8))
            self.inbox.put(("upstream", conn, link))
        except OSError:
            conn.close()
        finally:
            self.pending.release()

    def close(self):
        self.closed = True
        try:
            self.server.close()
        except OSError:
            pass


# -- where the stream comes from -------------------------------------------------------------

class Buffers:
    """Chunk buffers, each used again once the ring lets go of it: its bytes have been passed
    on and written by then (the ring holds more chunks than the writer may have queued), and
    a fresh buffer would cost a zero-filled allocation per chunk. No more are kept than the
    ring and the writer can hold at once: frames fed by the head come in buffers of their own
    and would otherwise pile up here, a chunk's worth for every chunk of the stream."""

    def __init__(self):
        self.free = []
        self.most = ring_size() // CHUNK + WRITE_AHEAD + 2

    def take(self):
        return self.free.pop() if self.free else bytearray(CHUNK)

    def give_back(self, buf):
        if len(buf) == CHUNK and len(self.free) < self.most:
            self.free.append(buf)


class TcpSource:
    """The previous node's connection. `read` returns data, b"" (nothing yet: look at the
    head's messages), or None (the connection ended)."""

    def __init__(self, sock, link, buffers):
        self.sock, self.link, self.buffers = sock, link, buffers
        self.lowat = 1
        sock.settimeout(POLL)

    def interrupt(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def read(self, want):
        view = memoryview(self.buffers.take())[:want]
        got = 0
        while got < want:
            lowat = min(LOWAT, want - got)
            if lowat != self.lowat:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, lowat)
                self.lowat = lowat
            try:
                n = self.sock.recv_into(view[got:])
            except socket.timeout:
                break
            except OSError:
                n = 0
            if n == 0:
                if got:
                    break  # hand over what came; the next read sees the end
                self.buffers.give_back(view.obj)
                return None
            got += n
        if not got:
            self.buffers.give_back(view.obj)
        return view[:got]

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class StagingSource:
    """The staging cache, read at its own path (the head proved this node sees it)."""

    def __init__(self, root, stream, bwlimit, buffers):
        self.root, self.stream, self.bwlimit, self.buffers = root, stream, bwlimit, buffers
        self.starts = []
        at = 0
        for _, size, _ in stream:
            self.starts.append(at)
            at += size
        self.index, self.file = -1, None
        self.read_bytes = 0
        self.started = time.monotonic()

    def read_at(self, pos, want):
        index = self.index if self.index >= 0 and self.starts[self.index] <= pos else 0
        while self.starts[index] + self.stream[index][1] <= pos:
            index += 1
        path, size, _ = self.stream[index]
        if index != self.index:
            self.close()
            try:
                self.file = open(os.path.join(self.root, path), "rb", buffering=0)
            except OSError as e:
                raise Failure("cannot read the staged file %s: %s" % (path, e.strerror))
            self.index = index
        offset = pos - self.starts[index]
        view = memoryview(self.buffers.take())[:min(want, size - offset)]
        self.file.seek(offset)
        n = self.file.readinto(view)
        if not n:
            raise Failure("the staged file %s is shorter than the manifest says (%d bytes): "
                          "stage it again" % (path, size))
        self.read_bytes += n
        if self.bwlimit:
            ahead = self.read_bytes / self.bwlimit - (time.monotonic() - self.started)
            if ahead > 0:
                time.sleep(ahead)
        return view[:n]

    def close(self):
        if self.file is not None:
            self.file.close()
            self.file = None


STDIN = "stdin"  # the head's frames arrive in the inbox, among its other messages


class Downstream:
    """The next node: what it has been sent so far, by stream position."""

    def __init__(self, sock, link, sent):
        self.sock, self.link, self.sent = sock, link, sent
        self.interrupted = False

    def send_upto(self, ring, pos):
        if self.sent >= pos:
            return
        views = ring.since(self.sent)
        if views is None:
            raise OSError("the ring no longer holds byte %d" % self.sent)
        for view in views:
            self.sock.sendall(view)
            self.sent += len(view)

    def interrupt(self):
        """From another thread: the head chose another next node; unblock a send to this one."""
        self.interrupted = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def ring_size():
    """Bytes to keep for a new next node: more than the kernel can hold in flight between us
    and the node after a failed one (our send buffer, its receive buffer, its chunk, its send
    buffer), at the largest sizes TCP may grow them to here; and more than the writer may have
    queued (so a chunk the ring lets go of is written)."""
    limits = []
    for name in ("tcp_rmem", "tcp_wmem"):
        try:
            with open("/proc/sys/net/ipv4/" + name) as f:
                limits.append(int(f.read().split()[2]))
        except (OSError, ValueError, IndexError):
            limits.append(32 << 20)
    return max(2 * WRITE_AHEAD * CHUNK, limits[0] + 2 * limits[1] + 8 * CHUNK)


class Ring:
    """The last bytes passed on (`ring_size`), by stream position. Keeping a chunk costs no
    copy; one the ring lets go of goes back to the buffers."""

    def __init__(self, buffers):
        self.chunks = collections.deque()
        self.start = self.end = 0
        self.size = ring_size()
        self.buffers = buffers

    def add(self, view):
        self.chunks.append(view)
        self.end += len(view)
        while self.end - self.start - len(self.chunks[0]) >= self.size:
            dropped = self.chunks.popleft()
            self.start += len(dropped)
            self.buffers.give_back(dropped.obj)

    def since(self, offset):
        if offset < self.start or offset > self.end:
            return None
        views, at = [], self.start
        for chunk in self.chunks:
            if at + len(chunk) > offset:
                views.append(chunk[max(0, offset - at):])
            at += len(chunk)
        return views


# -- writing files ---------------------------------------------------------------------------

class Writer:
    """Hashes and writes the files this node wants, in a thread of its own, as the stream passes.
    A file that cannot be written (a full disk) fails alone; its partial file is removed."""

    def __init__(self, cache, stream, want):
        self.cache, self.stream, self.want = cache, stream, set(want)
        self.queue = queue.Queue(maxsize=WRITE_AHEAD)
        self.written, self.failed = {}, []
        self.index, self.offset = 0, 0          # the file being written, and where in it
        self.out = self.digest = None
        self.aborted = False
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def put(self, view):
        self.queue.put(view)

    def finish(self):
        self.queue.put(None)
        self.thread.join()

    def abort(self):
        self.aborted = True
        try:
            self.queue.put_nowait(None)  # wakes it if it waits; if full, it stops at its next get
        except queue.Full:
            pass
        self.thread.join()

    def run(self):
        try:
            self.consume()
        except Exception as e:  # ours, not the disk's: this node's files fail, the stream goes on
            reason = "clusterprep's writer failed: %s: %s" % (type(e).__name__, e)
            if self.index < len(self.stream):
                self.drop(partial_name(os.path.join(self.cache, self.stream[self.index][0])))
            for index in range(self.index, len(self.stream)):
                if index in self.want:
                    path, size, _ = self.stream[index]
                    self.failed.append({"path": path, "reason": reason, "errno": None,
                                        "unwritten": size, "where": self.cache})
            while True:  # so that the stream never waits on a writer that is gone
                view = self.queue.get()
                if view is None or self.aborted:
                    break

    def consume(self):
        self.start_files()
        while True:
            view = self.queue.get()
            if view is None or self.aborted:
                break
            while len(view):
                path, size, _ = self.stream[self.index]
                take = min(len(view), size - self.offset)
                self.write(view[:take])
                view = view[take:]
                self.offset += take
                if self.offset == size:
                    self.end_file()
                    self.index += 1
                    self.start_files()
        if self.out is not None:  # the stream stopped inside this file
            self.drop(partial_name(os.path.join(self.cache, self.stream[self.index][0])))

    def start_files(self):
        """Open the next file; empty files are written whole at once."""
        self.offset = 0
        while self.index < len(self.stream):
            if self.index in self.want:
                self.open()
            if self.stream[self.index][1]:
                return
            self.end_file()
            self.index += 1

    def open(self):
        final = os.path.join(self.cache, self.stream[self.index][0])
        self.digest = hashlib.sha256()
        try:
            os.makedirs(os.path.dirname(final), exist_ok=True)
            self.out = open(partial_name(final), "wb", buffering=0)
        except OSError as e:
            self.fail(e, 0)

    def write(self, view):
        if self.out is None:
            return
        self.digest.update(view)
        try:
            while len(view):
                view = view[self.out.write(view):]
        except OSError as e:
            self.fail(e, self.offset)

    def end_file(self):
        if self.out is None:
            return
        path, _, sha = self.stream[self.index]
        final = os.path.join(self.cache, path)
        try:
            os.fsync(self.out.fileno())
            self.out.close()
            self.out = None
            if self.digest.hexdigest() != sha:
                self.drop(partial_name(final))
                self.failed.append({"path": path, "reason": "the sha256 of the bytes received "
                                    "differs from the staged file's", "unwritten": 0})
                return
            os.replace(partial_name(final), final)
            self.written[path] = stamp_of(os.stat(final), sha)
        except OSError as e:
            self.fail(e, self.stream[self.index][1])

    def fail(self, error, done):
        path, size, _ = self.stream[self.index]
        self.failed.append({"path": path, "reason": str(error.strerror or error),
                            "errno": error.errno, "unwritten": size - done,
                            "where": os.path.dirname(os.path.join(self.cache, path))})
        self.drop(partial_name(os.path.join(self.cache, path)))

    def drop(self, partial):
        if self.out is not None:
            try:
                self.out.close()
            except OSError:
                pass
            self.out = None
        try:
            os.unlink(partial)
        except OSError:
            pass


def partial_name(final):
    head, tail = os.path.split(final)
    return os.path.join(head, "." + tail + PARTIAL)


def remove_partials(cache, repos):
    """What an earlier run left half-written (killed before it could clean up)."""
    for repo in repos:
        for folder, _, names in os.walk(os.path.join(cache, repo)):
            for name in names:
                if name.endswith(PARTIAL):
                    try:
                        os.unlink(os.path.join(folder, name))
                    except OSError:
                        pass


def place_link(cache, path, target):
    """A snapshot's relative link, placed only once its blob is there (never dangling)."""
    where = os.path.join(cache, path)
    if os.path.islink(where) and os.readlink(where) == target:
        return None
    if not os.path.exists(os.path.normpath(os.path.join(os.path.dirname(where), target))):
        return "its blob is missing"
    try:
        swap_link(where, target, partial_name(where))
    except OSError as e:
        return "cannot place the link: %s" % (e.strerror or e)
    return None


def free_in(cache):
    """Bytes free where the cache lives (made now, if it is new: the files go there next)."""
    try:
        os.makedirs(cache, exist_ok=True)
        return shutil.disk_usage(cache).free
    except OSError:
        return None


# -- the conversation --------------------------------------------------------------------------

class Receiver:
    def __init__(self, request):
        self.request = request
        self.cache = request["cache"]
        self.stream = request["stream"]
        self.total = sum(size for _, size, _ in self.stream)
        self.secret = request["secret"]
        self.inbox = queue.Queue()
        self.pos = 0
        self.reported = 0
        self.blocked = {"disk": 0.0, "send": 0.0, "recv": 0.0}
        self.source = None
        self.staging = None        # the StagingSource, once this node has read the staging
        self.down = None
        self.down_lost = False     # the next node failed: wait for the head's word
        self.deferred = collections.deque()  # frames that came while waiting for that word
        self.buffers = Buffers()
        self.ring = Ring(self.buffers)
        self.writer = None
        self.acceptor = None
        self.passed_to = None      # the link whose next node confirmed it holds the stream
        self.finished = False

    # threads

    def read_control(self):
        """The head's messages (and frames) into the inbox; the end of stdin, too."""
        stdin = sys.stdin.buffer
        while True:
            line = stdin.readline()
            if not line:
                self.head_gone()
                return
            message = json.loads(line)
            if "data" in message:
                view = memoryview(bytearray(message["data"]))
                got = 0
                while got < len(view):
                    n = stdin.readinto(view[got:])
                    if not n:
                        self.head_gone()
                        return
                    got += n
                self.inbox.put(("frame", message["at"], view))
                continue
            self.inbox.put(("control", message))
            down = self.down
            if "next" in message and down is not None:
                down.interrupt()  # after the message is queued: the main thread finds it

    def head_gone(self):
        """Stop at once: the main thread may be blocked on either connection."""
        self.inbox.put(("eof",))
        for connection in (self.source, self.down):
            if isinstance(connection, (TcpSource, Downstream)):
                connection.interrupt()

    def heartbeat(self):
        while not self.finished:
            self.report()
            time.sleep(HEARTBEAT)

    def report(self):
        self.reported = self.pos
        if not emit({"event": "progress", "bytes": self.pos,
                     "read": self.staging.read_bytes if self.staging else 0,
                     "blocked": {k: round(v, 3) for k, v in self.blocked.items()}}):
            self.inbox.put(("eof",))

    # the main thread

    def run(self):
        request = self.request
        if request.get("listen"):
            try:
                try:
                    server = socket.create_server((request["bind"], 0))
                except OSError:  # the head's address for us is not ours (NAT): any will do
                    server = socket.create_server(("", 0))
                self.acceptor = Acceptor(server, self.secret, self.inbox)
                emit({"event": "listening", "port": server.getsockname()[1]})
            except OSError as e:
                emit({"event": "listening", "port": None, "error": str(e)})
        threading.Thread(target=self.read_control, daemon=True).start()
        threading.Thread(target=self.heartbeat, daemon=True).start()
        result = {"event": "done", "error": None, "free_at_start": free_in(self.cache)}
        remove_partials(self.cache, request["repos"])
        writer = self.writer = Writer(self.cache, self.stream, request["want"])
        try:
            self.move_stream()
            writer.finish()
            self.finish_downstream()
            failed = [{"path": path, "reason": why, "unwritten": 0}
                      for path, target in request["links"]
                      for why in [place_link(self.cache, path, target)] if why]
            writer.failed.extend(failed)
        except Failure as e:
            result["error"] = str(e)
            writer.abort()
        except Exception as e:  # a fault of this script: still a report, never a traceback
            result["error"] = "the receiver failed: %s: %s" % (type(e).__name__, e)
            writer.abort()
        finally:
            self.finished = True
            self.close_source()
            for closing in (self.staging, self.down, self.acceptor):
                if closing is not None:
                    closing.close()
            if writer.written:
                stamps = load_stamps(self.cache)
                stamps.update(writer.written)
                save_stamps(self.cache, stamps)
        result.update(bytes=self.pos, written=len(writer.written), failed=writer.failed,
                      passed_to=self.passed_to,
                      read=self.staging.read_bytes if self.staging else 0,
                      blocked={k: round(v, 3) for k, v in self.blocked.items()})
        emit(result)

    def move_stream(self):
        while self.pos < self.total:
            if self.source is None or self.source is STDIN:
                self.handle(self.next_item(block=True))
                continue
            self.handle_pending()
            if self.source is None or self.source is STDIN:
                continue
            started = time.monotonic()
            if self.source is self.staging:
                view = self.staging.read_at(self.pos, min(CHUNK, self.total - self.pos))
            else:
                view = self.source.read(min(CHUNK, self.total - self.pos))
            self.blocked["recv"] += time.monotonic() - started
            if view is None:
                self.lose_upstream()
            elif len(view):
                self.take(view)
        self.close_source()  # tells the previous node that we have it all

    def take(self, view):
        """One piece of the stream: keep it, pass it on, write it."""
        self.ring.add(view)
        self.pos += len(view)
        self.forward()
        started = time.monotonic()
        self.writer.put(view)
        self.blocked["disk"] += time.monotonic() - started
        if self.source is STDIN and self.pos - self.reported >= REPORT_EVERY:
            self.report()

    def forward(self):
        while True:
            if self.down_lost:
                self.await_decision()
                continue
            if self.down is None:
                return
            started = time.monotonic()
            try:
                self.down.send_upto(self.ring, self.pos)
                return
            except OSError as e:
                down, self.down = self.down, None
                down.close()
                self.down_lost = not down.interrupted
                if self.down_lost:
                    emit({"event": "lost", "side": "downstream", "link": down.link,
                          "at": self.pos, "error": str(e)})
            finally:
                self.blocked["send"] += time.monotonic() - started

    def await_decision(self):
        deadline = time.monotonic() + DECISION_SECONDS
        while self.down_lost:
            if time.monotonic() > deadline:
                self.down_lost = False  # no word from the head: carry on as the last node
                return
            item = self.next_item(block=True)
            if item is not None:
                self.handle(item)

    def finish_downstream(self):
        """Wait until the next node has the whole stream (it closes its end), passing the
        stream to whichever node the head names meanwhile."""
        while True:
            self.forward()  # (also waits for the head's word when the next node failed)
            down = self.down
            if down is None:
                return
            error = self.drain(down)
            if down.interrupted or self.down is not down:
                self.handle_pending()  # the head named another next node
                continue
            down.close()
            self.down = None
            if error is None:
                self.passed_to = down.link
                return
            self.down_lost = True
            emit({"event": "lost", "side": "downstream", "link": down.link, "at": self.pos,
                  "error": error})

    def drain(self, down):
        """Wait for the next node to close its end: None, or why the connection failed."""
        try:
            down.sock.shutdown(socket.SHUT_WR)
            down.sock.settimeout(POLL)
            while not down.interrupted:
                try:
                    if not down.sock.recv(1):
                        return None
                except socket.timeout:
                    self.handle_pending()
                    if self.down is not down:
                        return None
        except OSError as e:
            return str(e)
        return None

    # the head's messages and new upstream connections

    def next_item(self, block):
        if self.deferred and not self.down_lost:
            return self.deferred.popleft()
        try:
            return self.inbox.get(timeout=POLL) if block else self.inbox.get_nowait()
        except queue.Empty:
            return None

    def handle_pending(self):
        while True:
            item = self.next_item(block=False)
            if item is None:
                return
            self.handle(item)

    def handle(self, item):
        if item is None:
            return
        kind = item[0]
        if kind == "eof":
            raise Failure("the head closed the connection before the transfer finished")
        if kind == "frame":
            if self.down_lost:
                self.deferred.append(item)  # passed on once the head has named the next node
            elif self.source is STDIN:
                self.take_frame(item[1], item[2])
            return
        if kind == "upstream":
            self.adopt_upstream(item[1], item[2])
            return
        message = item[1]
        if "next" in message:
            self.link(message["next"], message.get("link"))
        if "source" in message:
            self.use_source(message["source"])

    def take_frame(self, at, view):
        if at + len(view) <= self.pos:
            return  # already had it
        if at > self.pos:
            raise Failure("the head's stream skipped from byte %d to %d" % (self.pos, at))
        self.take(view[self.pos - at:])

    def adopt_upstream(self, sock, link):
        try:
            sock.sendall(struct.pack(">Q", self.pos))
        except OSError:
            sock.close()
            return
        if self.pos >= self.total:
            sock.close()  # it has nothing to send us: our closing says so
            return
        self.close_source()
        self.source = TcpSource(sock, link, self.buffers)

    def use_source(self, name):
        self.close_source()
        if name == "staging":
            if self.staging is None:
                self.staging = StagingSource(self.request["staging"], self.stream,
                                             self.request.get("bwlimit"), self.buffers)
            self.source = self.staging
        elif name == STDIN:
            self.source = STDIN
            emit({"event": "need", "at": self.pos})

    def close_source(self):
        if isinstance(self.source, TcpSource):
            self.source.close()
        self.source = None

    def lose_upstream(self):
        link = self.source.link
        self.close_source()
        emit({"event": "lost", "side": "upstream", "link": link, "at": self.pos})

    def link(self, hop, link):
        if self.down is not None:
            self.down.close()
            self.down = None
        self.down_lost = False
        if not hop:
            return
        try:
            sock, offset = connect_downstream(hop[0], hop[1], self.secret, link)
        except OSError as e:
            emit({"event": "linked", "ok": False, "link": link,
                  "error": "cannot reach %s:%s: %s" % (hop[0], hop[1], e)})
            return
        if self.ring.since(offset) is None:
            sock.close()
            emit({"event": "linked", "ok": False, "link": link,
                  "error": "it needs the stream from byte %d, and this node keeps only bytes "
                           "%d to %d" % (offset, self.ring.start, self.ring.end)})
            return
        self.down = Downstream(sock, link, offset)
        emit({"event": "linked", "ok": True, "link": link, "at": offset})


def main():
    Receiver(json.loads(sys.stdin.buffer.readline())).run()
    # The control thread may still be blocked reading stdin: a normal exit would wait for it.
    os._exit(0)


main()
