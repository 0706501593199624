"""`weights sync`: send each node only what its cache lacks, through a pipelined chain.

The head reads the staged files once and streams them over its SSH connection to the first
node; every node writes what it needs and, as it receives, passes the bytes on to the next node
over a direct TCP connection (a pipelined chain: about S/B seconds for S bytes over links of B
bytes/s, whatever the number of nodes). The next node's listener accepts only a connection
that proves it knows this transfer's random secret (HMAC of a fresh challenge); the secret
travels on SSH stdin, never on a command line, and listeners live only for the transfer. When
some node cannot reach the next one, the head falls back to a star: it streams to every node
over SSH itself.

Every node hashes each file as it writes it aside and gives it its final name only when the
hash matches (see `probes/hfcache.py`).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from clusterprep import probes
from clusterprep.fleet import Fleet, NodeError
from clusterprep.fleet.fleet import PROBE_FAILED
from clusterprep.fleet.transport import INTERRUPTED, NodeUnreachable, Transport
from clusterprep.inventory import Node
from clusterprep.weights.manifest import Entry, Manifest
from clusterprep.weights.progress import NodeBytesListener
from clusterprep.weights.verify import NodeCache, check_caches

CHUNK = 1 << 20
SETUP_TIMEOUT = 20.0  # seconds for receivers to listen and to connect to their next node
CHAIN, STAR = "chain", "star"


@dataclass
class NodeSync:
    """What a sync did on one node."""

    node: str
    cache: str | None = None
    files_needed: int = 0
    files_written: int = 0
    bytes_received: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    error: NodeError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and not self.failed


@dataclass
class SyncReport:
    manifest: Manifest
    nodes: list[NodeSync]
    mode: str | None = None          # chain | star | None when nothing had to move
    fallback_reason: str | None = None
    stream_bytes: int = 0
    seconds: float = 0.0
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        return not self.interrupted and all(n.ok for n in self.nodes)


async def sync(
    fleet: Fleet,
    manifest: Manifest,
    *,
    listener: NodeBytesListener | None = None,
    chain: bool = True,
    bwlimit: float | None = None,
    timeout: float | None = None,
) -> SyncReport:
    """Make every node's hub cache hold the manifest's files and links; send only what differs.

    `bwlimit`: most bytes/s the head sends (per node in a star). `chain=False` forces the star.
    """
    started = time.monotonic()
    listener = listener or NodeBytesListener()
    states, bad, interrupted = await check_caches(fleet, manifest, for_sync=True, timeout=timeout)
    report = SyncReport(manifest, [_from_state(state) for state in states],
                        interrupted=interrupted)
    by_path = manifest.by_path()
    targets = []
    for node, state, outcome in zip(fleet.inventory.nodes, states, report.nodes):
        if state.error is None and bad.get(node.name):
            entries = [by_path[path] for path in bad[node.name]]
            outcome.files_needed = len(entries)
            targets.append(_Target(node, state.cache or "", entries, outcome))
    if targets and not interrupted:
        transfer = _Transfer(fleet, manifest, targets, listener, bwlimit)
        try:
            await transfer.run(chain)
        except asyncio.CancelledError:
            # Ctrl-C: the transfer marked its unfinished nodes; report what was done.
            report.interrupted = fleet.interrupted = True
            uncancel = getattr(asyncio.current_task(), "uncancel", None)
            if uncancel is not None:
                uncancel()
        report.mode, report.fallback_reason = transfer.mode, transfer.fallback_reason
        report.stream_bytes = sum(e.size for e in transfer.stream)
    report.seconds = time.monotonic() - started
    return report


def _from_state(state: NodeCache) -> NodeSync:
    return NodeSync(state.node, state.cache, error=state.error)


@dataclass
class _Target:
    node: Node
    cache: str
    entries: list[Entry]          # what this node lacks: files to receive, links to place
    outcome: NodeSync
    inbox: _Inbox = field(default_factory=lambda: _Inbox())
    address: str = ""
    listening: asyncio.Future[int | None] | None = None   # its listener's port; None: failed
    connected: asyncio.Future[str | None] | None = None   # None, or why it cannot forward
    told_next: bool = False

    @property
    def wants_files(self) -> bool:
        return any(e.kind == "file" for e in self.entries)


class _Inbox:
    """What the head still has to write to one receiver's stdin; `None` closes it."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=16)
        self.closed = False

    async def put(self, data: bytes | None) -> None:
        if not self.closed:
            await self._queue.put(data)

    def abandon(self) -> None:
        """The receiver has ended: drop what is queued and accept nothing more."""
        self.closed = True
        while not self._queue.empty():
            self._queue.get_nowait()

    async def stream(self) -> AsyncIterator[bytes]:
        while (item := await self._queue.get()) is not None:
            yield item


class _Transfer:
    def __init__(self, fleet: Fleet, manifest: Manifest, targets: list[_Target],
                 listener: NodeBytesListener, bwlimit: float | None) -> None:
        self.fleet = fleet
        self.manifest = manifest
        self.targets = targets
        self.listener = listener
        self.bwlimit = bwlimit
        self.secret = secrets.token_hex(32)
        needed = {e.path for t in targets for e in t.entries}
        self.stream = [e for e in manifest.files if e.path in needed]
        self.mode: str | None = None
        self.fallback_reason: str | None = None

    async def run(self, chain: bool) -> None:
        carriers = [t for t in self.targets if t.wants_files]
        use_chain = chain and len(carriers) > 1
        self.listener.planned(
            {t.node.name: sum(e.size for e in self.stream) if t.wants_files else 0
             for t in self.targets},
            sum(e.size for e in self.stream))
        loop = asyncio.get_running_loop()
        tasks = []
        for target in self.targets:
            try:
                transport = await self.fleet.transport(target.node)
            except NodeUnreachable as e:
                target.outcome.error = e.error
                continue
            target.address = await loop.run_in_executor(None, _address_of, transport)
            target.listening = loop.create_future()
            target.connected = loop.create_future()
            listen = use_chain and target in carriers and target is not carriers[0]
            await target.inbox.put(self._request(target, listen))
            tasks.append(asyncio.ensure_future(self._receive(transport, target)))
        started = [t for t in self.targets if t.listening is not None]
        carriers = [t for t in carriers if t in started]
        others = [t for t in started if t not in carriers]
        try:
            if use_chain and len(carriers) > 1 and await self._link(carriers):
                self.mode = CHAIN
                await self._tell_next(others)
                await self._send_plans(carriers[:1], source="stdin", forward=True)
                await self._send_plans(carriers[1:], source="tcp", forward=True)
                await self._send_plans(others, source="stdin", forward=False)
                await self._pump(carriers[:1])
            else:
                self.mode = STAR
                await self._tell_next(started)
                await self._send_plans(started, source="stdin", forward=False)
                await self._pump(carriers)
            for target in started:
                await target.inbox.put(None)
            await asyncio.gather(*tasks)
        except asyncio.CancelledError:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for target in started:
                if target.outcome.error is None:
                    target.outcome.error = NodeError(INTERRUPTED,
                                                     "interrupted before the transfer finished")
            raise

    async def _tell_next(self, targets: list[_Target], hops: list[Any] | None = None) -> None:
        """Each receiver first learns where to forward (None: nowhere)."""
        for target, hop in zip(targets, hops or [None] * len(targets)):
            if not target.told_next:
                target.told_next = True
                await target.inbox.put(_line({"next": hop}))

    def _request(self, target: _Target, listen: bool) -> bytes:
        script = probes.load("hfcache").encode()
        wanted = {e.path for e in target.entries}
        stream = self.stream if target.wants_files else []
        request = {
            "action": "receive",
            "cache": target.cache,
            "stream": [[e.path, e.size, e.sha256] for e in stream],
            "want": [i for i, e in enumerate(stream) if e.path in wanted],
            "links": [[e.path, e.target] for e in self.manifest.links if e.path in wanted],
            "repos": list(self.manifest.folders),
            "listen": listen,
            "bind": target.address,
            "secret": self.secret,
        }
        return script + _line(request)

    async def _link(self, carriers: list[_Target]) -> bool:
        """Tell each carrier its next node; True when every link of the chain is up."""
        try:
            ports = await asyncio.wait_for(
                asyncio.gather(*(t.listening for t in carriers[1:] if t.listening)),
                SETUP_TIMEOUT)
        except asyncio.TimeoutError:
            self.fallback_reason = f"a node did not open its listener in {SETUP_TIMEOUT:g} s"
            return False
        if None in ports:
            failed = [t.node.name for t, port in zip(carriers[1:], ports) if port is None]
            self.fallback_reason = "receivers ended before listening on " + ", ".join(failed)
            return False
        hops = [[t.address, port] for t, port in zip(carriers[1:], ports)] + [None]
        await self._tell_next(carriers, hops)
        try:
            errors = await asyncio.wait_for(
                asyncio.gather(*(t.connected for t in carriers[:-1] if t.connected)),
                SETUP_TIMEOUT)
        except asyncio.TimeoutError:
            self.fallback_reason = f"a node did not reach the next one in {SETUP_TIMEOUT:g} s"
            return False
        failures = [f"{t.node.name}: {error}" for t, error in zip(carriers, errors) if error]
        if failures:
            self.fallback_reason = "nodes cannot reach each other (" + "; ".join(failures) + ")"
            return False
        return True

    async def _send_plans(self, targets: list[_Target], *, source: str, forward: bool) -> None:
        for target in targets:
            await target.inbox.put(_line({"source": source, "forward": forward}))

    async def _pump(self, inboxes_of: list[_Target]) -> None:
        """Read the staged files once and hand every chunk to each receiving inbox."""
        started, sent = time.monotonic(), 0
        for entry in self.stream:
            with open(self.manifest.root / entry.path, "rb") as f:
                left = entry.size
                while left:
                    chunk = f.read(min(CHUNK, left))
                    if not chunk:
                        break  # the staged file shrank: receivers see the short stream
                    left -= len(chunk)
                    for target in inboxes_of:
                        await target.inbox.put(chunk)
                    sent += len(chunk)
                    if self.bwlimit:
                        ahead = sent / self.bwlimit - (time.monotonic() - started)
                        if ahead > 0:
                            await asyncio.sleep(ahead)
            if left:
                break
        for target in inboxes_of:
            await target.inbox.put(None)

    async def _receive(self, transport: Transport, target: _Target) -> None:
        events = _EventReader(target, self.listener)
        try:
            result = await transport.run(probes.command(probes.load("hfcache")),
                                         stdin_stream=target.inbox.stream(), on_output=events)
        finally:
            target.inbox.abandon()
            events.settle("the receiver ended early")
            self.listener.finished(target.node.name)
        outcome = target.outcome
        done = events.done
        if result.error is not None:
            outcome.error = result.error
        elif done is None:
            tail = " | ".join(result.stderr.decode(errors="replace").strip().splitlines()[-3:])
            outcome.error = NodeError(PROBE_FAILED, f"receiver exited {result.exit_code} "
                                                    f"without a report: {tail}")
        if done is not None:
            outcome.files_written = done.get("written", 0)
            outcome.bytes_received = done.get("bytes", 0)
            outcome.failed = [(path, reason) for path, reason in done.get("failed", [])]
            if done.get("error") and outcome.error is None:
                outcome.error = NodeError("transfer-failed", done["error"])


class _EventReader:
    """Parses a receiver's JSON lines into the target's futures and the listener's calls."""

    def __init__(self, target: _Target, listener: NodeBytesListener) -> None:
        self.target = target
        self.listener = listener
        self.buffer = b""
        self.done: dict[str, Any] | None = None

    def __call__(self, node: str, stream: str, chunk: bytes) -> None:
        if stream != "stdout":
            return
        self.buffer += chunk
        *lines, self.buffer = self.buffer.split(b"\n")
        for line in lines:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            self._handle(event)

    def _handle(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        target = self.target
        if kind == "listening" and target.listening and not target.listening.done():
            target.listening.set_result(int(event["port"]))
        elif kind == "connected" and target.connected and not target.connected.done():
            target.connected.set_result(None if event.get("ok") else event.get("error"))
        elif kind == "progress":
            self.listener.advanced(target.node.name, int(event["bytes"]))
        elif kind == "done":
            self.done = event
            self.listener.advanced(target.node.name, int(event.get("bytes", 0)))

    def settle(self, why: str) -> None:
        """Answer the futures the receiver left open, so the head stops waiting for it."""
        if self.target.listening is not None and not self.target.listening.done():
            self.target.listening.set_result(None)
        if self.target.connected is not None and not self.target.connected.done():
            self.target.connected.set_result(why)


def _line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj).encode() + b"\n"


def _address_of(transport: Transport) -> str:
    """The address the head reaches a node at, which the previous node in the chain dials
    (for an SSH node, its `HostName` as `ssh -G` resolves it; a local node is this machine)."""
    host = transport.host_address or "127.0.0.1"
    try:
        return socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)[0][4][0]
    except OSError:
        return host

