"""A probe held open as a conversation: JSON lines to its stdin while it runs, its JSON events
read from stdout as they come. Still one command per node: one channel, one Python start.

Smoke's phases 1-3 talk to one such probe per node (`probes/smoke_node.py`): a phase sends
each node its stage, then waits for every node's answer, or for as long as it allows.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterable
from typing import Any, TypeVar

from clusterprep import probes
from clusterprep.answers import Misfit, read
from clusterprep.errors import COMMAND_TIMEOUT, PROBE_FAILED, NodeError
from clusterprep.events import JsonLines
from clusterprep.fleet import CommandResult, Fleet
from clusterprep.inventory import Node

T = TypeVar("T")

class Conversation:
    """One node's probe: `send` lines to it, await its `event`s, learn its `failure`."""

    def __init__(self, node: Node, probe: str) -> None:
        self.node = node
        self.probe = probe
        self.script = probes.load(probe)
        self._outbox: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._events: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.task: asyncio.Task[CommandResult] | None = None
        self.gave_up_after: float | None = None  # set when stopped for not answering

    def start(self, fleet: Fleet) -> None:
        self.task = asyncio.ensure_future(self._run(fleet))
        self.task.add_done_callback(lambda _: self._events.put_nowait(None))

    async def _run(self, fleet: Fleet) -> CommandResult:
        return await fleet.run_on(self.node, probes.command(self.script),
                            stdin_stream=self._input(),
                            on_output=JsonLines(lambda _, e: self._events.put_nowait(e)))

    async def _input(self) -> AsyncIterator[bytes]:
        yield self.script.encode()
        while (line := await self._outbox.get()) is not None:
            yield line

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    def send(self, message: dict[str, Any]) -> None:
        self._outbox.put_nowait(json.dumps(message).encode() + b"\n")

    def close(self) -> None:
        """End the probe's input: it finishes what it does and exits."""
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


def start_all(fleet: Fleet, nodes: Iterable[Node], probe: str) -> list[Conversation]:
    conversations = [Conversation(node, probe) for node in nodes]
    for conversation in conversations:
        conversation.start(fleet)
    return conversations


async def stop_all(conversations: Iterable[Conversation],
                   gave_up_after: float | None = None) -> None:
    """Cancel every conversation still running (its command is killed on the node)."""
    tasks = []
    for conversation in conversations:
        if conversation.running:
            assert conversation.task is not None
            conversation.gave_up_after = gave_up_after
            conversation.task.cancel()
            tasks.append(conversation.task)
    await asyncio.gather(*tasks, return_exceptions=True)


async def finish_all(conversations: Iterable[Conversation], timeout: float) -> None:
    """Close every probe's input and let it end within `timeout`; stop those that do not."""
    conversations = list(conversations)
    for conversation in conversations:
        conversation.close()
    tasks = [c.task for c in conversations if c.task is not None]
    if tasks:
        await asyncio.wait(tasks, timeout=timeout)
    await stop_all(conversations, timeout)


async def replies(conversations: Iterable[Conversation], *kinds: str, shape: type[T],
                  timeout: float) -> tuple[dict[str, T], dict[str, NodeError]]:
    """Each conversation's next event of one of `kinds`, by node, read as a `shape`. A probe
    that ended first, gave none within `timeout`, or answered in another shape, is stopped
    and its failure returned instead."""
    conversations = list(conversations)
    waits = [asyncio.ensure_future(c.event(*kinds)) for c in conversations]
    try:
        done, _ = await asyncio.wait(waits, timeout=timeout) if waits else (set(), set())
    finally:
        for wait in waits:
            wait.cancel()
    events: dict[str, T] = {}
    misfits: dict[str, NodeError] = {}
    for conversation, wait in zip(conversations, waits):
        if wait in done and wait.result() is not None:
            name = conversation.node.name
            try:
                events[name] = read(shape, wait.result())
            except Misfit as misfit:
                misfits[name] = misfit.error(name, conversation.probe)
    silent = [c for c in conversations if c.node.name not in events]
    await stop_all(silent, timeout)
    return events, {c.node.name: misfits.get(c.node.name) or await c.failure() for c in silent}
