"""A new way of reaching nodes is one Backend subclass: the Fleet, its probes and its
conversations work over it unchanged, and a node it cannot reach is that node's error.

The backend here runs every node's commands on this machine (as a container or exec API
backend would run them inside its pod): real processes, real probes, no SSH.
"""

from __future__ import annotations

import asyncio

from clusterprep.errors import REFUSED, NodeError, NodeUnreachable
from clusterprep.fleet import Fleet
from clusterprep.fleet.backend import Backend
from clusterprep.fleet.local import LocalTransport
from clusterprep.fleet.transport import Transport
from clusterprep.inventory import Inventory, Node


class ThisMachine(Backend):
    """Every node is this machine, except those named `down-*`, which refuse."""

    hung_after = 20.0

    def __init__(self) -> None:
        super().__init__()
        self.opened: list[str] = []

    async def open(self, node: Node) -> Transport:
        self.opened.append(node.name)
        if node.name.startswith("down-"):
            raise NodeUnreachable(NodeError(REFUSED, f"{node.name} refused"))
        return LocalTransport(node)


def cluster(*names: str) -> Inventory:
    return Inventory([Node(name, name, head=i == 0) for i, name in enumerate(names)], "test")


def test_commands_and_probes_run_over_a_new_backend_and_a_refusing_node_is_its_error():
    async def go():
        backend = ThisMachine()
        async with Fleet(cluster("pod-0", "pod-1", "down-2"), backend) as fleet:
            ran = await fleet.run("echo hello", stdin=None)
            facts, _ = await fleet.probe("facts")
            again = await fleet.run("true")
        return backend, ran, facts, again

    backend, ran, facts, again = asyncio.run(go())
    assert [r.stdout for r in ran.results[:2]] == [b"hello\n", b"hello\n"]
    assert ran.results[2].error == NodeError(REFUSED, "down-2 refused")
    assert [bool(f.data and f.data["hostname"]) for f in facts[:2]] == [True, True]
    assert facts[2].error is not None and facts[2].error.kind == REFUSED
    assert again.results[2].error.kind == REFUSED
    assert sorted(backend.opened) == ["down-2", "pod-0", "pod-1"]  # each opened once


def test_a_conversation_runs_over_the_default_per_node_streams():
    async def go():
        async def then():
            yield b"to all\n"

        async with Fleet(cluster("pod-0", "pod-1"), ThisMachine()) as fleet:
            return await fleet.converse("cat", lambda node: f"{node.name}\n".encode(), then)

    results = asyncio.run(go())
    assert [r.stdout for r in results] == [b"pod-0\nto all\n", b"pod-1\nto all\n"]
