"""The Fleet: one live connection per node, and commands or probes run on all nodes at once.

How a node is reached is its backend's business (fleet/backend.py); the Fleet is the same for
every backend.

Connections open lazily, once per invocation, and every later command reuses them. A node that
cannot be reached is remembered as such for the rest of the invocation (one connect timeout, not
one per step). Results come back in inventory order, head first.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from clusterprep import probes
from clusterprep.answers import Misfit, read
from clusterprep.errors import INTERRUPTED, PROBE_FAILED, NodeError
from clusterprep.fleet.backend import Backend
from clusterprep.fleet.transport import CommandResult, OutputCallback, Transport
from clusterprep.inventory import Inventory, Node


@dataclass
class FleetResult:
    """One command's results on many nodes, in inventory order."""

    results: list[CommandResult]
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        return not self.interrupted and all(r.ok for r in self.results)


@dataclass
class ProbeResult:
    """A probe script's answer on one node: its JSON object (and, where the caller gave its
    shape, that object read as the shape: `answer`), or why there is none."""

    node: str
    data: dict[str, Any] | None
    command: CommandResult
    error: NodeError | None
    answer: Any = None

    @property
    def ok(self) -> bool:
        return self.error is None


class Fleet:
    """Every node of an inventory, reached through one backend (fleet/backend.py)."""

    def __init__(self, inventory: Inventory, backend: Backend) -> None:
        self.inventory = inventory
        self.backend = backend
        # Set by Ctrl-C: from then on no new command starts, so a command of many rounds
        # (`up`, `weights sync`) stops at once and keeps what it gathered.
        self.interrupted = False

    @property
    def hung_after(self) -> float:
        """Seconds a node may send nothing before it counts as hung."""
        return self.backend.hung_after

    async def __aenter__(self) -> Fleet:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.backend.close()

    async def transport(self, node: Node) -> Transport:
        """The node's connected Transport (opened on first use). Raises NodeUnreachable."""
        return await self.backend.transport(node)

    async def connect(self, nodes: Iterable[Node] | None = None) -> dict[str, NodeError | None]:
        """Open every connection now; returns each node's connection error, or None."""
        return await self.backend.connect(self._targets(nodes))

    async def run(
        self,
        command: str,
        *,
        stdin: bytes | Callable[[Node], bytes] | None = None,
        timeout: float | None = None,
        on_output: OutputCallback | None = None,
        nodes: Iterable[Node] | None = None,
    ) -> FleetResult:
        """Run one shell command on every node (or on `nodes`) at once.

        `stdin` is the same for every node, or a function giving each node its own.

        Ctrl-C (cancellation) stops the nodes still running and returns everything gathered so
        far, finished nodes whole and the others marked interrupted with their partial output.
        """
        targets = self._targets(nodes)
        if self.interrupted:
            return FleetResult([CommandResult(node.name, None, error=NodeError(
                INTERRUPTED, "not started: interrupted")) for node in targets], True)
        results, interrupted = await self.backend.run(
            command, targets, stdin if callable(stdin) else lambda node: stdin, timeout,
            on_output)
        self.interrupted = self.interrupted or interrupted
        return FleetResult(results, interrupted)

    async def converse(
        self,
        command: str,
        opening: Callable[[Node], bytes],
        then: Callable[[], AsyncIterator[bytes]],
        *,
        on_output: OutputCallback | None = None,
        on_end: Callable[[CommandResult], None] | None = None,
        nodes: Iterable[Node] | None = None,
    ) -> list[CommandResult]:
        """`command` held open on every node (or on `nodes`) for as long as its input lasts:
        each node reads its `opening`, then a stream made by `then()` that every node hears
        alike (a heartbeat, a last word). `on_end` hears each node's result as soon as it is
        known (a node that cannot be reached: at once). Results in the given order, failures
        kept as the nodes' NodeErrors."""
        def ended(result: CommandResult) -> CommandResult:
            if on_end is not None:
                on_end(result)
            return result

        results, interrupted = await self.backend.converse(
            command, self._targets(nodes), opening, then, on_output, ended)
        self.interrupted = self.interrupted or interrupted
        return results

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
        """`command` on one node, over its connection: `Transport.run`'s options (a stream of
        input, for a conversation), and any failure kept as the node's NodeError, as in `run`."""
        return await self.backend.run_on(node, command, stdin=stdin, stdin_stream=stdin_stream,
                                         timeout=timeout, on_output=on_output)

    def node_state(self, node: Node) -> str | None:
        """The scheduler's word on the node (Slurm's state), or None without a scheduler."""
        return self.backend.node_state(node)

    async def probe(
        self,
        name: str,
        payload: dict[str, Any] | Callable[[Node], dict[str, Any]] | None = None,
        *,
        python: str = "python3",
        isolated: bool = True,
        timeout: float | None = None,
        nodes: Iterable[Node] | None = None,
        on_output: OutputCallback | None = None,
        shape: type | None = None,
    ) -> tuple[list[ProbeResult], bool]:
        """Run the probe script `probes/NAME.py` on every node in one round trip each.

        The script and its JSON input (`payload`, or `payload(node)` for a per-node input)
        travel on stdin; it prints one JSON object. `python` and
        `isolated` choose the interpreter and whether it ignores its site and environment (see
        `probes.command`). With a `shape` (a dataclass), each answer is read as one
        (answers.read) into `ProbeResult.answer`; an answer that does not fit is the node's
        error, naming the field. Returns the per-node results and whether the run was
        interrupted.
        """
        source = probes.load(name)
        script = source.encode()

        def stdin(node: Node) -> bytes:
            data = payload(node) if callable(payload) else payload
            return script + json.dumps(data or {}).encode()

        outcome = await self.run(
            probes.command(source, python, isolated), stdin=stdin, timeout=timeout,
            nodes=nodes, on_output=on_output,
        )
        return ([_parse_probe(result, name, shape) for result in outcome.results],
                outcome.interrupted)

    def _targets(self, nodes: Iterable[Node] | None) -> list[Node]:
        return list(nodes) if nodes is not None else self.inventory.nodes


def _parse_probe(result: CommandResult, name: str, shape: type | None) -> ProbeResult:
    if result.error is not None:
        return ProbeResult(result.node, None, result, result.error)
    if result.exit_code != 0:
        tail = result.stderr.decode(errors="replace").strip().splitlines()[-3:]
        message = f"probe {name} exited {result.exit_code}: " + " | ".join(tail)
        return ProbeResult(result.node, None, result, NodeError(PROBE_FAILED, message))
    try:
        data = json.loads(result.stdout.decode(errors="replace").strip().splitlines()[-1])
    except (ValueError, IndexError):
        message = f"probe {name} printed no JSON object"
        return ProbeResult(result.node, None, result, NodeError(PROBE_FAILED, message))
    if shape is None:
        return ProbeResult(result.node, data, result, None)
    try:
        return ProbeResult(result.node, data, result, None, read(shape, data))
    except Misfit as misfit:
        return ProbeResult(result.node, None, result, misfit.error(result.node, name))
