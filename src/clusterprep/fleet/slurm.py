"""Reaching nodes through Slurm: one `srun` job step per fleet call, for all its nodes at once.

Inside an allocation, `srun` launches through the slurmds' own tree (`TreeWidth`): no SSH
connection from the head to any node. Each task of the step is `probes/slurm_task.py`, which
runs the command on its node as sshd would and sends back its output and exit status in
framed lines (see that file), so results have the same shape as over SSH: a `CommandResult`
per node, `NodeError`s of the same kinds.

- Stdin: every task reads the step's stdin (`--input=all`); where nodes need different stdin,
  the part they share travels once and each task keeps its own part of the rest.
- Nodes that Slurm reports down, drained or not responding get no task; they are named, and
  the other nodes run. A node whose task never started is named too. srun aborts a whole
  step when one node's launch fails: the nodes whose task had not begun the command then run
  it in a step of their own, once.
- A timeout or Ctrl-C cancels the step (`scancel --signal=KILL JOB.STEP`): Slurm kills the
  tasks' processes on every node.
- Hung nodes: each task sends a heartbeat while its command is silent; a started task heard
  from for no `hung_after` seconds is cut out as hung, and the step is cancelled once only
  hung tasks are left.
- Nothing of the head's environment reaches the nodes (`--export=NONE`), so a secret in it
  (`WANDB_API_KEY`) never enters the job step; secrets travel on stdin only.

The steps themselves are `fleet/srun.py`'s. `SrunTransport` is one node's Transport over `srun -w NODE`, for per-node conversations
(`weights sync` streams a node's stdin while it runs). A conversation every node hears alike
(the cluster lock's heartbeat) is one step for all of them (`SlurmBackend.converse`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable

from clusterprep.errors import (
    NodeUnreachable,
)
from clusterprep.fleet.backend import Backend, Opening, spoken
from clusterprep.fleet.options import SlurmOptions
from clusterprep.fleet.srun import SlurmLauncher
from clusterprep.fleet.transport import (
    CommandResult,
    OutputCallback,
    Transport,
)
from clusterprep.inventory import Node

class SrunTransport(Transport):
    """One node over `srun -w NODE`: a job step of its own for each command."""

    def __init__(self, node: Node, launcher: SlurmLauncher) -> None:
        super().__init__(node)
        self.launcher = launcher

    @property
    def host_address(self) -> str | None:
        state = self.launcher.state_of(self.node)
        return state.address if state is not None else self.node.host

    async def connect(self) -> None:
        error = (await self.launcher.connect([self.node]))[self.node.name]
        if error is not None:
            raise NodeUnreachable(error)

    async def run(
        self,
        command: str,
        *,
        stdin: bytes | None = None,
        timeout: float | None = None,
        on_output: OutputCallback | None = None,
        stdin_stream: AsyncIterator[bytes] | None = None,
    ) -> CommandResult:
        # Interrupted, the result says so (INTERRUPTED), as every transport's does.
        results, _ = await self.launcher.run(
            command, [self.node], stdin=stdin, stdin_stream=stdin_stream, timeout=timeout,
            on_output=on_output)
        return results[0]

    async def close(self) -> None:
        return None


class SlurmBackend(Backend):
    """The fleet's nodes inside a Slurm allocation: each command one job step for all its
    nodes, each conversation one step per distinct opening."""

    def __init__(self, nodes: Iterable[Node], options: SlurmOptions) -> None:
        super().__init__()
        self.launcher = SlurmLauncher(nodes, options)
        self.hung_after = options.hung_after

    async def open(self, node: Node) -> Transport:
        transport = SrunTransport(node, self.launcher)
        await transport.connect()
        return transport

    def node_state(self, node: Node) -> str | None:
        state = self.launcher.state_of(node)
        return state.state if state is not None else "unknown"

    async def run(
        self,
        command: str,
        nodes: list[Node],
        stdin: Callable[[Node], bytes | None],
        timeout: float | None,
        on_output: OutputCallback | None,
    ) -> tuple[list[CommandResult], bool]:
        inputs = {node.host: stdin(node) or b"" for node in nodes}
        shared = set(inputs.values())
        # One input for all travels once (as the step's stdin); else each task keeps its own.
        per_node: dict[str, bytes] | bytes | None = (
            inputs if len(shared) > 1 else next(iter(shared), None) or None)
        return await self.launcher.run(command, nodes, stdin=per_node, timeout=timeout,
                                       on_output=on_output)

    async def converse(
        self,
        command: str,
        nodes: list[Node],
        opening: Opening,
        then: Callable[[], AsyncIterator[bytes]],
        on_output: OutputCallback | None,
        on_end: Callable[[CommandResult], CommandResult],
    ) -> tuple[list[CommandResult], bool]:
        errors = await self.launcher.connect(nodes)
        by_name = {node.name: on_end(CommandResult(node.name, None, error=errors[node.name]))
                   for node in nodes if errors[node.name] is not None}
        groups: dict[bytes, list[Node]] = {}
        for node in nodes:
            if node.name not in by_name:
                groups.setdefault(opening(node), []).append(node)

        async def step(first: bytes, group: list[Node]) -> bool:
            # Each step's nodes are told as soon as it ends, not when the last step does
            # (one step per distinct opening: a launch, whose every node's differs, hears
            # each node's end as it happens)
            results, interrupted = await self.launcher.run(
                command, group, stdin_stream=spoken(first, then), on_output=on_output)
            by_name.update((result.node, on_end(result)) for result in results)
            return interrupted

        interrupted = await asyncio.gather(*(step(first, group)
                                             for first, group in groups.items()))
        return [by_name[node.name] for node in nodes], any(interrupted)

    async def close(self) -> None:
        await super().close()
        await self.launcher.close()
