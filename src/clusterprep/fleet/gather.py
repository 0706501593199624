"""Identical outputs from many nodes, stored once under a folded node set (as `clush -b`)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ClusterShell.NodeSet import NodeSet, NodeSetException, RESOLVER_NOGROUP

from clusterprep.fleet.transport import CommandResult


@dataclass
class OutputGroup:
    """One distinct (stdout, stderr) pair and the nodes that printed it, in inventory order."""

    nodes: list[str]
    stdout: bytes
    stderr: bytes

    @property
    def folded(self) -> str:
        return fold(self.nodes)


def fold(names: Iterable[str]) -> str:
    """`node01,node02,node03` -> `node[01-03]`; names NodeSet cannot fold are joined by commas."""
    names = list(names)
    try:
        return str(NodeSet.fromlist(names, resolver=RESOLVER_NOGROUP))
    except NodeSetException:
        return ",".join(names)


def group_outputs(results: Iterable[CommandResult]) -> list[OutputGroup]:
    """Group the nodes that were reached by identical output, first-seen order."""
    groups: dict[tuple[bytes, bytes], OutputGroup] = {}
    for result in results:
        if not result.reached:
            continue
        key = (result.stdout, result.stderr)
        if key not in groups:
            groups[key] = OutputGroup([], result.stdout, result.stderr)
        groups[key].nodes.append(result.node)
    return list(groups.values())
