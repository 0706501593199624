"""The head's side of one node's receiver (`probes/hfreceive.py`): start it, send it the head's
messages and data frames, hear its events, and know when it went quiet or ended."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from clusterprep import probes
from clusterprep.answers import Misfit, read
from clusterprep.errors import INTERRUPTED, PROBE_FAILED, NodeError
from clusterprep.events import JsonLines
from clusterprep.fleet import Fleet
from clusterprep.fleet.transport import CommandResult
from clusterprep.inventory import Node
from clusterprep.weights.answers import (
    RECEIVER_EVENTS,
    Done,
    Ended,
    FileFailure,
    Progress,
    ReceiverEvent,
    Unreadable,
)
from clusterprep.weights.manifest import Entry

TRANSFER_FAILED = "transfer-failed"


@dataclass
class NodeSync:
    """What a sync did on one node."""

    node: str
    cache: str | None = None
    files_needed: int = 0
    files_written: int = 0
    bytes_received: int = 0
    failed: list[FileFailure] = field(default_factory=list)
    free_at_start: int | None = None     # bytes free where its cache lives, when it began
    blocked: dict[str, float] = field(default_factory=dict)  # seconds its stream waited, by cause
    seconds: float | None = None         # from its receiver's start to its end
    error: NodeError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and not self.failed

    @property
    def disk_full(self) -> bool:
        return any(f.errno in (28, 122) for f in self.failed)  # ENOSPC, EDQUOT


@dataclass
class Target:
    """A node whose cache lacks something: the files to receive, the links to place."""

    node: Node
    cache: str
    entries: list[Entry]
    outcome: NodeSync

    @property
    def wants_files(self) -> bool:
        return any(e.kind == "file" for e in self.entries)


class Inbox:
    """What the head still has to write to one receiver's stdin; `close` ends it."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.closed = False

    def put(self, data: bytes) -> None:
        if not self.closed:
            self._queue.put_nowait(data)

    def close(self) -> None:
        if not self.closed:
            self._queue.put_nowait(None)
            self.closed = True

    def abandon(self) -> None:
        """The receiver has ended: drop what is queued and accept nothing more."""
        self.closed = True
        while not self._queue.empty():
            self._queue.get_nowait()

    async def stream(self) -> AsyncIterator[bytes]:
        while (item := await self._queue.get()) is not None:
            yield item


class Receiver:
    """One node's receiver, from its start to its end. Its events, read as types (all but
    progress, which only updates `position`), go to the transfer's queue as `(receiver,
    event)`; its end comes as `Ended()`, an event it cannot read as `Unreadable`."""

    def __init__(self, target: Target, fleet: Fleet, address: str,
                 events: asyncio.Queue[tuple[Receiver, ReceiverEvent]],
                 on_progress: Any) -> None:
        self.target = target
        self.name = target.node.name
        self.fleet = fleet
        self.address = address
        self.events = events
        self.on_progress = on_progress
        self.inbox = Inbox()
        self.port: int | None = None
        self.listen_error: str | None = None
        self.position = 0          # bytes of the stream it holds, as it last said
        self.read = 0              # bytes it read from the staging itself
        self.waited: dict[str, float] = {}  # seconds its stream waited so far, by cause
        self.heard = self.started = self.ended = time.monotonic()
        self.moved = asyncio.Event()
        self.done: Done | None = None
        self.result: CommandResult | None = None
        self.task: asyncio.Task[None] | None = None
        self._lines = JsonLines(self._on_event)
        # Where it sits in the chain: `upstream` None means it reads from the source. The
        # links in and out of it are named by ids that come back in its events.
        self.upstream: Receiver | None = None
        self.downstream: Receiver | None = None
        self.link_in: int | None = None
        self.link_out: int | None = None
        self.cut = False
        self.detached = False      # taken out of its chain for holding it back

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()


    def start(self, script: str, request: dict[str, Any]) -> None:
        """Run `script` (the receiver probe) on the node with its `request`."""
        self.inbox.put(script.encode() + _line(request))
        self.heard = self.started = time.monotonic()
        self.task = asyncio.ensure_future(self._run(probes.command(script)))

    def send(self, message: dict[str, Any]) -> None:
        self.inbox.put(_line(message))

    def send_frame(self, at: int, data: bytes) -> None:
        self.inbox.put(_line({"data": len(data), "at": at}))
        self.inbox.put(data)

    def stop(self) -> None:
        """End its command on the node (the transport kills it there)."""
        if self.task is not None:
            self.task.cancel()

    async def _run(self, command: str) -> None:
        try:
            self.result = await self.fleet.run_on(self.target.node, command,
                                                  stdin_stream=self.inbox.stream(),
                                                  on_output=self._on_output)
        except asyncio.CancelledError:  # stopped before its command started
            self.result = CommandResult(self.name, None, error=NodeError(
                INTERRUPTED, "stopped before the transfer finished"))
        finally:
            self.ended = time.monotonic()
            self.inbox.abandon()
            self.events.put_nowait((self, Ended()))

    def _on_output(self, node: str, stream: str, chunk: bytes) -> None:
        if stream == "stdout":
            self.heard = time.monotonic()
            self._lines(node, stream, chunk)

    def _on_event(self, node: str, raw: dict[str, Any]) -> None:
        kind = RECEIVER_EVENTS.get(raw.get("event"))
        if kind is None:
            return  # a word this head has no use for
        try:
            event = read(kind, raw)
        except Misfit as misfit:
            self.events.put_nowait((self, Unreadable(misfit.error(self.name, "hfreceive"))))
            return
        if isinstance(event, Progress):  # a Done is a last Progress too
            self.position = max(self.position, event.bytes)
            self.read = max(self.read, event.read)
            self.waited = event.blocked
            self.moved.set()
            self.on_progress(self.name, self.position)
        if isinstance(event, Done):
            self.done = event
            self.inbox.close()
        if type(event) is not Progress:
            self.events.put_nowait((self, event))

    def failure(self) -> NodeError | None:
        """Why it ended without finishing, once it has ended; None when it finished."""
        if self.done is not None and not self.done.error:
            return None
        result = self.result
        if result is not None and result.error is not None:
            return result.error
        if self.done is not None:
            return NodeError(TRANSFER_FAILED, self.done.error)
        code = result.exit_code if result is not None else None
        said = " | ".join(result.stderr.decode(errors="replace").strip().splitlines()[-3:]) \
            if result is not None else ""
        how = (f"was killed by signal {-code} ({_signal_name(-code)})"
               if code is not None and code < 0 else f"exited {code}")
        return NodeError(PROBE_FAILED, f"its receiver {how} before it reported"
                                       + (f": {said}" if said else ""))

    def record(self) -> None:
        """Its outcome, from what it said (or last said) and how it ended."""
        outcome = self.target.outcome
        outcome.bytes_received = self.position
        outcome.seconds = self.ended - self.started
        if self.done is not None:
            outcome.files_written = self.done.written
            outcome.free_at_start = self.done.free_at_start
            outcome.blocked = dict(self.done.blocked)
            outcome.failed = list(self.done.failed)
        if outcome.error is None:
            outcome.error = self.failure()


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return "unknown"


def _line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj).encode() + b"\n"
