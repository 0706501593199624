"""A probe held open as a conversation: JSON lines to its stdin while it runs, its JSON events
read from stdout as they come. Still one round trip per node: one command, one channel.

The smoke phases that need every node at once (a listener before the dials, every listener's
port before anyone dials) talk to all nodes' probes this way.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterable
from typing import Any

from clusterprep import probes
from clusterprep.fleet import CommandResult, Fleet, NodeError
from clusterprep.fleet.fleet import PROBE_FAILED
from clusterprep.fleet.transport import COMMAND_TIMEOUT, NodeUnreachable
from clusterprep.inventory import Node


class Conversation:
    """One node's probe: `send` lines to it, await its `event`s, then its `result`."""

    def __init__(self, node: Node, probe: str, first: dict[str, Any]) -> None:
        self.node = node
        self.script = probes.load(probe)
        self._outbox: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._events: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._partial = b""
        self.task: asyncio.Task[CommandResult] | None = None
        self.gave_up_after: float | None = None  # set when finish_all stopped it
        self.send(first)

    def start(self, fleet: Fleet) -> None:
        self.task = asyncio.ensure_future(self._run(fleet))
        self.task.add_done_callback(lambda _: self._events.put_nowait(None))

    async def _run(self, fleet: Fleet) -> CommandResult:
        try:
            transport = await fleet.transport(self.node)
        except NodeUnreachable as e:
            return CommandResult(self.node.name, None, error=e.error)
        return await transport.run(probes.command(self.script), stdin_stream=self._input(),
                                   on_output=self._read)

    async def _input(self) -> AsyncIterator[bytes]:
        yield self.script.encode()
        while (line := await self._outbox.get()) is not None:
            yield line

    def _read(self, node: str, stream: str, chunk: bytes) -> None:
        if stream != "stdout":
            return
        *lines, self._partial = (self._partial + chunk).split(b"\n")
        for line in lines:
            try:
                self._events.put_nowait(json.loads(line))
            except ValueError:
                continue

    def send(self, message: dict[str, Any]) -> None:
        self._outbox.put_nowait(json.dumps(message).encode() + b"\n")

    def close(self) -> None:
        """End the probe's input (it reads that as `{}`)."""
        self._outbox.put_nowait(None)

    async def event(self, *kinds: str) -> dict[str, Any] | None:
        """The probe's next event of one of `kinds`, skipping others; None once it has ended."""
        while (event := await self._events.get()) is not None:
            if event.get("event") in kinds:
                return event
        self._events.put_nowait(None)  # later calls learn of the end too
        return None

    async def failure(self) -> NodeError:
        """Why the probe gave no (further) answer: the node's NodeError, else its exit status
        and its last lines on stderr. Waits for the probe to end."""
        assert self.task is not None
        result = await self.task
        if self.gave_up_after is not None:
            return NodeError(COMMAND_TIMEOUT, f"the probe gave no answer within "
                                              f"{self.gave_up_after:g} s; stopped")
        if result.error is not None:
            return result.error
        tail = " | ".join(result.stderr.decode(errors="replace").strip().splitlines()[-3:])
        return NodeError(PROBE_FAILED, f"probe exited {result.exit_code}: {tail}")


def start_all(fleet: Fleet, conversations: Iterable[Conversation]) -> list[Conversation]:
    started = list(conversations)
    for conversation in started:
        conversation.start(fleet)
    return started


async def stop_all(conversations: Iterable[Conversation]) -> None:
    """Cancel every conversation still running (its command is killed on the node)."""
    tasks = [c.task for c in conversations if c.task is not None and not c.task.done()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def finish_all(conversations: Iterable[Conversation], timeout: float) -> None:
    """Let every probe end by itself within `timeout`; stop those that do not."""
    conversations = list(conversations)
    tasks = [c.task for c in conversations if c.task is not None]
    if tasks:
        await asyncio.wait(tasks, timeout=timeout)
    for conversation in conversations:
        if conversation.task is not None and not conversation.task.done():
            conversation.gave_up_after = timeout
    await stop_all(conversations)


async def gather_events(conversations: Iterable[Conversation], *kinds: str,
                        timeout: float) -> dict[str, dict[str, Any] | None]:
    """Each conversation's next event of one of `kinds`; None where its probe ended first or
    `timeout` passed."""
    conversations = list(conversations)
    waits = [asyncio.ensure_future(c.event(*kinds)) for c in conversations]
    try:
        done, _ = await asyncio.wait(waits, timeout=timeout) if waits else (set(), set())
    finally:
        for wait in waits:
            wait.cancel()
    return {c.node.name: (w.result() if w in done else None)
            for c, w in zip(conversations, waits)}
