"""The Fleet: one live connection per node, and commands or probes run on all nodes at once.

Connections open lazily, once per invocation, and every later command reuses them. A node that
cannot be reached is remembered as such for the rest of the invocation (one connect timeout, not
one per step). Results come back in inventory order, head first.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from clusterprep import probes
from clusterprep.errors import (
    INTERRUPTED,
    PROBE_FAILED,
    UNEXPECTED,
    ClusterprepError,
    NodeError,
    NodeUnreachable,
)
from clusterprep.fleet.local import LocalTransport
from clusterprep.fleet.slurm import SlurmLauncher, SlurmOptions
from clusterprep.fleet.ssh import SshConnector, SshOptions, SshTransport
from clusterprep.fleet.sshconfig import ssh_available
from clusterprep.fleet.transport import (
    CommandResult,
    OutputCallback,
    Transport,
    uncancel_current_task,
)
from clusterprep.inventory import Inventory, Node, is_this_machine

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
    """A probe script's answer on one node: its JSON object, or why there is none."""

    node: str
    data: dict[str, Any] | None
    command: CommandResult
    error: NodeError | None

    @property
    def ok(self) -> bool:
        return self.error is None


class Fleet:
    """Every node of an inventory, reachable through one Transport each."""

    def __init__(self, inventory: Inventory, options: SshOptions | None = None,
                 slurm: SlurmOptions | None = None) -> None:
        self.inventory = inventory
        self.options = options or SshOptions()
        self._connector = SshConnector(self.options)
        # Through Slurm, each `run` is one job step for all its nodes (fleet/slurm.py).
        self.launcher = SlurmLauncher(inventory.nodes, slurm) if slurm is not None else None
        self._transports: dict[str, asyncio.Task[Transport]] = {}
        # Set by Ctrl-C: from then on no new command starts, so a command of many rounds
        # (`up`, `weights sync`) stops at once and keeps what it gathered.
        self.interrupted = False

    async def __aenter__(self) -> Fleet:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        for task in self._transports.values():
            if task.done() and not task.cancelled() and task.exception() is None:
                await task.result().close()
            else:
                task.cancel()
        await self._connector.close()
        if self.launcher is not None:
            await self.launcher.close()

    async def transport(self, node: Node) -> Transport:
        """The node's connected Transport (opened on first use). Raises NodeUnreachable."""
        if not self._transports and self.launcher is None and ssh_available():
            self._connector.prefetch([_target(n) for n in self.inventory.nodes])
        if node.name not in self._transports:
            opening = self._open(node) if self.launcher is None else self._open_srun(node)
            self._transports[node.name] = asyncio.ensure_future(opening)
        return await asyncio.shield(self._transports[node.name])

    async def _open(self, node: Node) -> Transport:
        target = _target(node)
        if is_this_machine(node.host) and node.user is None:
            # localhost runs directly unless the ssh config sends it elsewhere (HostName, Port,
            # ProxyJump): the simulated nodes, for one, live on loopback addresses.
            if not ssh_available():
                return LocalTransport(node)
            settings = await self._connector.resolve(target)
            if not settings.has_own_target:
                return LocalTransport(node)
        else:
            settings = await self._connector.resolve(target)
        transport = SshTransport(node, settings, self._connector)
        await transport.connect()
        return transport

    async def _open_srun(self, node: Node) -> Transport:
        assert self.launcher is not None
        transport = self.launcher.transport(node)
        await transport.connect()
        return transport

    async def connect(self, nodes: Iterable[Node] | None = None) -> dict[str, NodeError | None]:
        """Open every connection now; returns each node's connection error, or None."""
        async def one(node: Node) -> NodeError | None:
            try:
                await self.transport(node)
            except NodeUnreachable as e:
                return e.error
            return None

        targets = list(nodes) if nodes is not None else self.inventory.nodes
        errors = await asyncio.gather(*(one(node) for node in targets))
        return {node.name: error for node, error in zip(targets, errors)}

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
        targets = list(nodes) if nodes is not None else self.inventory.nodes
        if self.interrupted:
            return FleetResult([CommandResult(node.name, None, error=NodeError(
                INTERRUPTED, "not started: interrupted")) for node in targets], True)
        if self.launcher is not None:
            return await self._run_srun(command, targets, stdin, timeout, on_output)
        tasks = [
            asyncio.ensure_future(self.run_on(
                node, command, stdin=stdin(node) if callable(stdin) else stdin, timeout=timeout,
                on_output=on_output))
            for node in targets
        ]
        interrupted = False
        try:
            await asyncio.wait(tasks)
        except asyncio.CancelledError:
            interrupted = self.interrupted = True
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks)
            uncancel_current_task()
        results = [
            task.result() if not task.cancelled()
            else CommandResult(node.name, None, error=NodeError(INTERRUPTED, "interrupted"))
            for node, task in zip(targets, tasks)
        ]
        return FleetResult(results, interrupted)

    async def _run_srun(
        self,
        command: str,
        targets: list[Node],
        stdin: bytes | Callable[[Node], bytes] | None,
        timeout: float | None,
        on_output: OutputCallback | None,
    ) -> FleetResult:
        """One job step for all `targets` (see fleet/slurm.py)."""
        assert self.launcher is not None
        per_node = {node.host: stdin(node) for node in targets} if callable(stdin) else stdin
        results, interrupted = await self.launcher.run(
            command, targets, stdin=per_node, timeout=timeout, on_output=on_output)
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
        alike (a heartbeat, a last word). Over SSH, one channel per node; through Slurm, one
        job step for all the nodes that share an opening, not one per node. `on_end` hears
        each node's result as soon as it is known (a node that cannot be reached: at once).
        Results in the given order, failures kept as the nodes' NodeErrors."""
        targets = list(nodes) if nodes is not None else self.inventory.nodes

        def ended(result: CommandResult) -> CommandResult:
            if on_end is not None:
                on_end(result)
            return result

        async def spoken(first: bytes) -> AsyncIterator[bytes]:
            yield first
            async for chunk in then():
                yield chunk

        async def one(node: Node) -> CommandResult:
            return ended(await self.run_on(node, command, stdin_stream=spoken(opening(node)),
                                           on_output=on_output))

        if self.launcher is None:
            return list(await asyncio.gather(*(one(node) for node in targets)))
        errors = await self.launcher.connect(targets)
        by_name = {node.name: ended(CommandResult(node.name, None, error=errors[node.name]))
                   for node in targets if errors[node.name] is not None}
        groups: dict[bytes, list[Node]] = {}
        for node in targets:
            if node.name not in by_name:
                groups.setdefault(opening(node), []).append(node)
        steps = await asyncio.gather(*(
            self.launcher.run(command, group, stdin_stream=spoken(first), on_output=on_output)
            for first, group in groups.items()))
        by_name.update((result.node, ended(result)) for results, _ in steps for result in results)
        self.interrupted = self.interrupted or any(interrupted for _, interrupted in steps)
        return [by_name[node.name] for node in targets]

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
    ) -> tuple[list[ProbeResult], bool]:
        """Run the probe script `probes/NAME.py` on every node in one round trip each.

        The script and its JSON input (`payload`, or `payload(node)` for a per-node input)
        travel on stdin; it prints one JSON object. `python` and
        `isolated` choose the interpreter and whether it ignores its site and environment (see
        `probes.command`). Returns the per-node results and whether the run was interrupted.
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
        return [_parse_probe(result, name) for result in outcome.results], outcome.interrupted


def _target(node: Node) -> str:
    return f"{node.user}@{node.host}" if node.user else node.host


def _parse_probe(result: CommandResult, name: str) -> ProbeResult:
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
    return ProbeResult(result.node, data, result, None)
