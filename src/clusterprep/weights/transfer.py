"""Moving the stream: chains of receivers formed, fed from the source, and re-formed around
nodes that fail, freeze or cannot be reached.

A chain is a line of nodes: its first node reads the stream from the source (the staging cache
itself, when the head proved that node sees it, else frames the head sends on its SSH
connection), and every node passes each byte on to the next as it arrives. When a node fails
(its receiver ends, reports an error, or says nothing for `stall` seconds: `--hung-after`), it
is cut out: the node before it passes the stream on to the node after it, from wherever that
node had got (its ring still holds those bytes), or, where no node before it can, the node
after it reads from the source itself. When one node cannot reach the next, the chain splits
there in the same way. The head reacts to each receiver's events and its end, whatever its
cause."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

from clusterprep import probes
from clusterprep.errors import HUNG, NodeError, NodeUnreachable
from clusterprep.fleet import Fleet
from clusterprep.weights import chain
from clusterprep.weights.answers import (
    Ended,
    Linked,
    Listening,
    Lost,
    Need,
    ReceiverEvent,
    Unreadable,
)
from clusterprep.weights.manifest import Entry, Manifest
from clusterprep.weights.pace import Pace
from clusterprep.weights.progress import NodeBytesListener
from clusterprep.weights.receiver import TRANSFER_FAILED, Receiver, Target

GRACE = 2.0         # seconds to let a broken link's cause show (a node's end) before splitting
CHUNK = 1 << 20     # bytes per frame the head sends
WINDOW = 32 << 20   # bytes the head sends beyond what a receiver has said it holds


class Transfer:
    """One sync's transfer: every target's receiver from start to end."""

    def __init__(self, fleet: Fleet, manifest: Manifest, targets: list[Target],
                 listener: NodeBytesListener, *, secret: str, chains: int,
                 staging_readers: set[str], bwlimit: float | None, stall: float) -> None:
        self.fleet = fleet
        self.manifest = manifest
        self.targets = targets
        self.listener = listener
        self.secret = secret
        self.chain_count = chains
        self.staging_readers = staging_readers
        self.bwlimit = bwlimit
        self.stall = stall
        needed = {e.path for t in targets for e in t.entries}
        self.stream: list[Entry] = [e for e in manifest.files if e.path in needed]
        self.total = sum(e.size for e in self.stream)
        self.events: asyncio.Queue[tuple[Receiver, ReceiverEvent]] = asyncio.Queue()
        self.receivers: list[Receiver] = []
        self.pumps: dict[Receiver, asyncio.Task[None]] = {}
        self.chains: list[list[str]] = []       # as planned
        self.reforms: list[str] = []            # how they were re-formed, in order
        self.broken_links: list[str] = []       # node -> node: why
        self.head_sent = 0
        self.links = 0                          # ids given to links so far
        self.pace = Pace()

    @property
    def source_bytes(self) -> int:
        """Bytes read from the staging cache (sent by the head, or read by nodes themselves),
        as far as the nodes have said: at least what the furthest node holds."""
        return max([self.head_sent + sum(r.read for r in self.receivers)]
                   + [r.position for r in self.receivers])

    async def run(self) -> None:
        try:
            await self._start()
            carriers = await self._setup()
            self._form(carriers)
            await self._until_all_ended()
        except asyncio.CancelledError:
            # Ctrl-C: every receiver still running is killed on its node and ends interrupted.
            for receiver in self.receivers:
                receiver.stop()
            await asyncio.gather(*(r.task for r in self.receivers if r.task),
                                 return_exceptions=True)
            raise
        finally:
            for pump in self.pumps.values():
                pump.cancel()
            for receiver in self.receivers:
                receiver.record()
                self.listener.finished(receiver.name)

    # -- start and form ------------------------------------------------------------------------

    async def _start(self) -> None:
        self.listener.planned(
            {t.node.name: self.total if t.wants_files else 0 for t in self.targets}, self.total)
        loop = asyncio.get_running_loop()
        script = probes.load("hfreceive")
        for target in self.targets:
            try:
                transport = await self.fleet.transport(target.node)
            except NodeUnreachable as e:
                target.outcome.error = e.error
                continue
            host = transport.host_address or "127.0.0.1"
            address = await loop.run_in_executor(None, _address_of, host)
            receiver = Receiver(target, self.fleet, address, self.events,
                                self.listener.advanced)
            receiver.start(script, self._request(receiver))
            self.receivers.append(receiver)

    def _request(self, receiver: Receiver) -> dict[str, Any]:
        target = receiver.target
        wanted = {e.path for e in target.entries}
        stream = self.stream if target.wants_files else []
        return {
            "cache": target.cache,
            "stream": [[e.path, e.size, e.sha256] for e in stream],
            "want": [i for i, e in enumerate(stream) if e.path in wanted],
            "links": [[e.path, e.target] for e in self.manifest.links if e.path in wanted],
            "repos": list(self.manifest.folders),
            "listen": target.wants_files,
            "bind": receiver.address,
            "secret": self.secret,
            "staging": str(self.manifest.root) if self._reads_staging(receiver) else None,
            "bwlimit": self.bwlimit,
        }

    def _reads_staging(self, receiver: Receiver) -> bool:
        return receiver.name in self.staging_readers

    async def _setup(self) -> list[Receiver]:
        """Wait until every node that needs files listens (or failed); those nodes."""
        carriers = [r for r in self.receivers if r.target.wants_files]

        def ready(r: Receiver) -> bool:
            return r.port is not None or r.listen_error is not None or r.cut

        while not all(ready(r) for r in carriers):
            await self._next_event()
        return [r for r in carriers if not r.cut]

    def _form(self, carriers: list[Receiver]) -> None:
        if not carriers:
            return
        chains = chain.plan(carriers, self.chain_count, self._reads_staging)
        self.chains = [[r.name for r in chain] for chain in chains]
        for members in chains:
            # Links first: a first node that reads a small stream at once has its next node
            # by then (were it not, the end of the first node would still feed that node).
            for upstream, downstream in zip(members, members[1:]):
                self._link(upstream, downstream)
            self._feed(members[0])

    async def _until_all_ended(self) -> None:
        while any(r.running for r in self.receivers):
            await self._next_event()

    async def _next_event(self) -> None:
        """Handle one receiver event (or none within half a second), then cut frozen nodes."""
        try:
            receiver, event = await asyncio.wait_for(self.events.get(), 0.5)
        except asyncio.TimeoutError:
            pass
        else:
            self._handle(receiver, event)
        now = time.monotonic()
        for r in self.receivers:
            if r.running and not r.cut and now - r.heard > self.stall:
                self._cut(r, NodeError(HUNG, f"its receiver said nothing for {self.stall:g} s "
                                             "(stopped, or its node froze); cut out"))
        for slow, why in self.pace.laggards(self.receivers, self.total, now):
            self._detach(slow, why)

    # -- events --------------------------------------------------------------------------------

    def _handle(self, receiver: Receiver, event: ReceiverEvent) -> None:
        if isinstance(event, Listening):
            receiver.port = event.port
            receiver.listen_error = event.error
        elif isinstance(event, Need):
            self._start_pump(receiver, event.at)
        elif isinstance(event, Linked) and not event.ok:
            if receiver.downstream is not None and receiver.link_out == event.link:
                self._split(receiver, receiver.downstream, event.error or "cannot connect")
        elif isinstance(event, Lost):
            pair = ((receiver, receiver.downstream) if event.side == "downstream"
                    else (receiver.upstream, receiver))
            why = event.error or "the connection ended"
            self._recheck_later(*pair, event.link, why, time.monotonic())
        elif isinstance(event, Unreadable) and not receiver.cut:
            self._cut(receiver, event.error)
        elif isinstance(event, Ended) and not receiver.cut:
            failure = receiver.failure()
            if failure is not None:
                self._cut(receiver, failure)
            else:
                self._ended_whole(receiver)

    def _ended_whole(self, receiver: Receiver) -> None:
        """A node finished: had the node after it confirmed the whole stream? (It may have
        been named after the node had finished.) If not, it reads from the source."""
        downstream = receiver.downstream
        if downstream is None or downstream.cut or not downstream.running:
            return
        assert receiver.done is not None
        if receiver.done.passed_to != receiver.link_out:
            chain.split(receiver)
            self._feed(downstream)

    def _recheck_later(self, upstream: Receiver | None, downstream: Receiver | None,
                       link: int | None, why: str, since: float) -> None:
        asyncio.get_running_loop().call_later(GRACE, self._recheck, upstream, downstream,
                                              link, why, since)

    def _recheck(self, upstream: Receiver | None, downstream: Receiver | None,
                 link: int | None, why: str, since: float) -> None:
        """Link `link` broke at `since`. Both ends still speak: split the chain there. One
        end silent since: it is ending, or will be cut as hung; look again later. A link the
        head has replaced since is no concern."""
        if upstream is None or downstream is None or upstream.downstream is not downstream:
            return
        if link is None or upstream.link_out != link or downstream.link_in != link:
            return
        if upstream.cut or downstream.cut or not upstream.running or not downstream.running:
            return
        if min(upstream.heard, downstream.heard) <= since:
            self._recheck_later(upstream, downstream, link, why, since)
            return
        upstream.send({"next": None})
        self._split(upstream, downstream, why)

    # -- re-forming ----------------------------------------------------------------------------

    def _cut(self, failed: Receiver, error: NodeError) -> None:
        """Take a failed node out of its chain and close the gap it leaves."""
        if failed.cut:
            return
        failed.cut = True
        if failed.target.outcome.error is None:
            failed.target.outcome.error = error
        failed.stop()
        pump = self.pumps.pop(failed, None)
        if pump is not None:
            pump.cancel()
        closed = self._close_gap(failed)
        if closed:
            self.reforms.append(f"{failed.name} cut out ({error.kind}): {closed}")

    def _detach(self, slow: Receiver, why: str) -> None:
        """A node holds its chain back: the chain goes on without it, and it reads from the
        source by itself, at its own pace."""
        slow.detached = True
        closed = self._close_gap(slow)
        slow.send({"next": None})
        self._feed(slow)
        self.reforms.append(f"{slow.name} held its chain back ({why}): {closed}; "
                            f"{slow.name} {self._source_of(slow)}")

    def _close_gap(self, leaving: Receiver) -> str | None:
        """Take a node out of its chain: the node before it passes the stream on to the node
        after it, or that node reads from the source. Says what changed, if anything did."""
        self.pace.pause(time.monotonic())
        if leaving.upstream is not None:
            leaving.upstream.link_out = None
        leaving.link_in = leaving.link_out = None
        reform = chain.leave(leaving, lambda upstream: upstream.running)
        if reform.last is not None:
            reform.last.send({"next": None})
        if reform.link is not None:
            upstream, downstream = reform.link
            self._link(upstream, downstream)
            return f"{upstream.name} passes the stream on to {downstream.name}"
        if reform.fed is not None:
            self._feed(reform.fed)
            return f"{reform.fed.name} {self._source_of(reform.fed)}"
        return None

    def _link(self, upstream: Receiver, downstream: Receiver) -> None:
        if downstream.port is None:
            upstream.send({"next": None})
            self._split(upstream, downstream, downstream.listen_error or "it has no listener")
            return
        self.links += 1
        chain.join(upstream, downstream)
        upstream.link_out = downstream.link_in = self.links
        upstream.send({"next": [downstream.address, downstream.port], "link": self.links})

    def _split(self, upstream: Receiver, downstream: Receiver, why: str) -> None:
        """The chain splits between two nodes: the second one is fed from the source."""
        self.pace.pause(time.monotonic())
        chain.split(upstream)
        upstream.link_out = None
        self.broken_links.append(f"{upstream.name} -> {downstream.name}: {why}")
        self._feed(downstream)

    def _feed(self, receiver: Receiver) -> None:
        receiver.upstream = None
        receiver.link_in = None
        fed_by = chain.source(receiver, self._reads_staging)
        receiver.send({"source": "staging" if fed_by == chain.STAGING else "stdin"})

    def _source_of(self, receiver: Receiver) -> str:
        return ("reads the staging itself" if chain.source(receiver, self._reads_staging)
                == chain.STAGING else "gets the stream from the head")

    # -- the head as the source ----------------------------------------------------------------

    def _start_pump(self, receiver: Receiver, at: int) -> None:
        previous = self.pumps.pop(receiver, None)
        if previous is not None:
            previous.cancel()
        if receiver.running and not receiver.cut:
            self.pumps[receiver] = asyncio.ensure_future(self._pump(receiver, at))

    async def _pump(self, receiver: Receiver, at: int) -> None:
        """Send the stream from byte `at` to one receiver, as frames on its stdin, at most
        WINDOW bytes ahead of what it holds (and at most `bwlimit` bytes/s)."""
        loop = asyncio.get_running_loop()
        started, position, sent = time.monotonic(), at, 0
        try:
            for entry, offset in _from_position(self.stream, at):
                with open(self.manifest.root / entry.path, "rb", buffering=0) as f:
                    f.seek(offset)
                    while offset < entry.size:
                        while position - receiver.position > WINDOW:
                            if not receiver.running:
                                return
                            receiver.moved.clear()
                            try:
                                await asyncio.wait_for(receiver.moved.wait(), 1.0)
                            except asyncio.TimeoutError:
                                pass
                        data = await loop.run_in_executor(
                            None, f.read, min(CHUNK, entry.size - offset))
                        if not data:
                            raise OSError(f"{entry.path} is shorter than when it was staged")
                        receiver.send_frame(position, data)
                        offset += len(data)
                        position += len(data)
                        sent += len(data)
                        self.head_sent += len(data)
                        if self.bwlimit:
                            ahead = sent / self.bwlimit - (time.monotonic() - started)
                            if ahead > 0:
                                await asyncio.sleep(ahead)
        except OSError as e:
            self._cut(receiver, NodeError(TRANSFER_FAILED,
                                          f"the head cannot read the staging cache: {e}"))


def _from_position(stream: list[Entry], at: int) -> list[tuple[Entry, int]]:
    """The stream's files from byte `at` on, each with the offset to start from."""
    files, start = [], 0
    for entry in stream:
        if start + entry.size > at and entry.size:
            files.append((entry, max(0, at - start)))
        start += entry.size
    return files


def _address_of(host: str) -> str:
    """The address the previous node in a chain dials: the node's `HostName` as the head
    resolves it (for a local node, this machine)."""
    try:
        return socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)[0][4][0]
    except OSError:
        return host
