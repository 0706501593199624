"""The one interface every way of reaching nodes implements (SSH, Slurm), and the choice of one.

A backend is chosen once per invocation (fleet/choose.py) and the Fleet drives it; no step,
check, smoke phase or weights code knows which one it is. The contract is in
docs/architecture.md ("Backends"). A new way of reaching nodes (Kubernetes pods, an exec API)
is one new module with a `Backend` subclass, and one branch in fleet/choose.py.
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterable

from clusterprep.errors import (
    INTERRUPTED,
    UNEXPECTED,
    ClusterprepError,
    NodeError,
    NodeUnreachable,
)
from clusterprep.fleet.transport import (
    CommandResult,
    OutputCallback,
    Transport,
)
from clusterprep.interrupts import acknowledge
from clusterprep.inventory import Node

Opening = Callable[[Node], bytes]
"""A node's own first input (its stdin, or the start of a conversation)."""


class Backend(ABC):
    """How one invocation reaches its nodes: a connected Transport per node, commands on many
    nodes at once, conversations (a stream every node hears alike), and the teardown.

    The defaults run a command as one task per node over its Transport; a backend that can do
    better for many nodes at once (Slurm: one job step for all) overrides `run` and `converse`.
    Every failure on a node comes back as that node's NodeError, never as an exception.
    """

    hung_after: float
    """Seconds a node may send nothing before it counts as hung (streams above a backend use
    the same figure, so that one frozen node is judged alike everywhere)."""

    def __init__(self) -> None:
        self._transports: dict[str, asyncio.Task[Transport]] = {}

    @abstractmethod
    async def open(self, node: Node) -> Transport:
        """Open the node's Transport, connected. Raises NodeUnreachable with the cause."""

    def node_state(self, node: Node) -> str | None:
        """The scheduler's word on the node (Slurm's `idle`, `drained`...); None: no scheduler."""
        return None

    async def transport(self, node: Node) -> Transport:
        """The node's connected Transport, opened on first use and reused by every later
        command. Raises NodeUnreachable (again on each call: one connect attempt per node)."""
        if node.name not in self._transports:
            self._transports[node.name] = asyncio.ensure_future(self.open(node))
        return await asyncio.shield(self._transports[node.name])

    async def connect(self, nodes: Iterable[Node]) -> dict[str, NodeError | None]:
        """Open every node's connection now; each node's connection error, or None."""
        async def one(node: Node) -> NodeError | None:
            try:
                await self.transport(node)
            except NodeUnreachable as e:
                return e.error
            return None

        targets = list(nodes)
        errors = await asyncio.gather(*(one(node) for node in targets))
        return {node.name: error for node, error in zip(targets, errors)}

    async def run_on(
        self,
        node: Node,
        command: str,
        *,
        stdin: bytes | None = None,
        stdin_stream: AsyncIterator[bytes] | None = None,
        timeout: float | None = None,
        on_output: OutputCallback | None = None,
    ) -> CommandResult:
        """`command` on one node over its Transport, any failure kept as the node's NodeError."""
        started = time.monotonic()
        try:
            transport = await self.transport(node)
            result = await transport.run(command, stdin=stdin, stdin_stream=stdin_stream,
                                         timeout=timeout, on_output=on_output)
        except NodeUnreachable as e:
            result = CommandResult(node.name, None, error=e.error)
        except (asyncio.CancelledError, KeyboardInterrupt, ClusterprepError):
            raise  # Ctrl-C, or the user's setup (an ssh config OpenSSH rejects): not a node's
        except Exception as e:  # noqa: BLE001 - one node's surprise must not end the others
            result = CommandResult(node.name, None, error=NodeError(UNEXPECTED, (
                f"{type(e).__name__}: {e} (a case clusterprep does not handle yet: "
                "please report it with the command that produced it)")))
        result.seconds = time.monotonic() - started  # what the user waited, connection included
        return result

    async def run(
        self,
        command: str,
        nodes: list[Node],
        stdin: Callable[[Node], bytes | None],
        timeout: float | None,
        on_output: OutputCallback | None,
    ) -> tuple[list[CommandResult], bool]:
        """`command` on every node of `nodes` at once, each with its own `stdin(node)`.
        Each node's result in the given order, and whether Ctrl-C interrupted: then the nodes
        still running are stopped and marked interrupted, with their partial output."""
        tasks = [asyncio.ensure_future(self.run_on(node, command, stdin=stdin(node),
                                                   timeout=timeout, on_output=on_output))
                 for node in nodes]
        interrupted = False
        try:
            await asyncio.wait(tasks)
        except asyncio.CancelledError:
            interrupted = True
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks)
            acknowledge()
        results = [
            task.result() if not task.cancelled()
            else CommandResult(node.name, None, error=NodeError(INTERRUPTED, "interrupted"))
            for node, task in zip(nodes, tasks)
        ]
        return results, interrupted

    async def converse(
        self,
        command: str,
        nodes: list[Node],
        opening: Opening,
        then: Callable[[], AsyncIterator[bytes]],
        on_output: OutputCallback | None,
        on_end: Callable[[CommandResult], CommandResult],
    ) -> tuple[list[CommandResult], bool]:
        """`command` held open on every node while its input lasts: the node's `opening`,
        then a stream made by `then()` for each node alike. `on_end` hears each node's result
        as soon as it is known. Results in the given order, and whether Ctrl-C interrupted."""
        async def one(node: Node) -> CommandResult:
            return on_end(await self.run_on(node, command,
                                            stdin_stream=spoken(opening(node), then),
                                            on_output=on_output))

        return list(await asyncio.gather(*(one(node) for node in nodes))), False

    async def close(self) -> None:
        """Close every connection (and give back what the backend took); safe to call twice."""
        for task in self._transports.values():
            if task.done() and not task.cancelled() and task.exception() is None:
                await task.result().close()
            else:
                task.cancel()


async def spoken(first: bytes, then: Callable[[], AsyncIterator[bytes]]) -> AsyncIterator[bytes]:
    """A conversation's input: the node's opening, then the stream every node hears."""
    yield first
    async for chunk in then():
        yield chunk

