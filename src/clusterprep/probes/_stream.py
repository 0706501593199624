"""Probe part: where a node's weights stream comes from (the previous node's connection, or
the staging cache read in place) and where it goes (the next node). Inlined by probes.load;
stdlib only."""

import os
import socket
import time

LOWAT = 256 << 10          # bytes a read from the previous node waits for (fewer wake-ups)


class Failure(Exception):
    """Ends this node's transfer: the head has gone, or the stream cannot go on here."""


class TcpSource:
    """The previous node's connection. `read` returns data, b"" (nothing yet: look at the
    head's messages), or None (the connection ended)."""

    def __init__(self, sock, link, buffers, poll):
        self.sock, self.link, self.buffers = sock, link, buffers
        self.lowat = 1
        sock.settimeout(poll)  # how long a read waits before the head's messages are looked at

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

