"""Probe part: the weights stream's chunks in memory: buffers used again, and the ring of the
last bytes passed on, from which a node resends to a new next node (the one after a failed
node). Inlined by probes.load; stdlib only."""

import collections

CHUNK = 1 << 20
WRITE_AHEAD = 32           # chunks queued for the writer before the stream waits for the disk


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

