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

This file is the conversation (the Receiver); its parts hold the rest: _handshake (the links
and their secret), _ring (chunk buffers, the resend ring), _stream (the sources and the next
node), _cachewriter (the writer thread, links, leftovers), _stamps, _emit.
"""

import collections
import json
import os
import queue
import socket
import struct
import sys
import threading
import time

from _emit import emit  # inlined by probes.load
from _handshake import Acceptor, connect_downstream  # inlined by probes.load
from _ring import CHUNK, Buffers, Ring  # inlined by probes.load
from _stamps import load_stamps, save_stamps  # inlined by probes.load
from _stream import Downstream, Failure, StagingSource, TcpSource  # inlined by probes.load
from _cachewriter import Writer, free_in, place_link, remove_partials  # inlined by probes.load

HEARTBEAT = 0.5            # seconds between progress lines, busy or not
REPORT_EVERY = 8 << 20     # and, fed by the head, every this many bytes (its send window)
POLL = 1.0                 # seconds a blocking read waits before looking at the head's messages
DECISION_SECONDS = 60.0    # most a node waits for the head after its next node failed
STDIN = "stdin"  # the head's frames arrive in the inbox, among its other messages


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
                self.acceptor = Acceptor(server, self.secret, self.inbox, POLL)
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
        self.source = TcpSource(sock, link, self.buffers, POLL)

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