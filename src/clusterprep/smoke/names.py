"""Phase 1, names: the master address resolves on every node, to the same address everywhere,
and so does every node's name (the launcher hands the hostfile's names to every node).

A name that no node resolves, while the head's ssh config sends it to an address, is the SSH
alias trap: `Host gpu1 / HostName 10.0.0.1` lets the head reach `gpu1`, but the nodes are
given `gpu1` as the master address and cannot resolve it.
"""

from __future__ import annotations

import time
from collections import Counter

from clusterprep.fleet import Fleet
from clusterprep.fleet.gather import fold
from clusterprep.fleet.transport import NodeUnreachable
from clusterprep.inventory import Node
from clusterprep.smoke.model import NameRow, NamesResult, Problem
from clusterprep.smoke.problems import folded, unanswered


def host_name(node: Node) -> str:
    """The name the launcher gives the other nodes for `node`: its host, without `user@`
    and without IPv6 brackets."""
    return node.host[1:-1] if node.host.startswith("[") else node.host


async def check_names(fleet: Fleet, timeout: float | None = None) -> NamesResult:
    """Every node resolves every node's name; one round trip per node."""
    started = time.monotonic()
    nodes = fleet.inventory.nodes
    names = list(dict.fromkeys(host_name(node) for node in nodes))
    answers, interrupted = await fleet.probe("smoke_names", {"names": names}, timeout=timeout)
    result = NamesResult(master=host_name(nodes[0]), interrupted=interrupted)
    views: dict[str, dict[str, dict]] = {}
    for answer in answers:
        if answer.data is None:
            assert answer.error is not None
            result.problems.append(unanswered(answer.node, answer.error))
            continue
        views[answer.node] = answer.data["resolved"]
        result.gpus[answer.node] = int(answer.data.get("gpus", 0))
    if views:
        for name in names:
            row = _agreement(name, views, nodes[0].name)
            result.rows.append(row)
            result.problems += await _row_problems(fleet, row, result.master, views)
        own = {host_name(node): node.name for node in nodes}
        result.addresses = {own[row.name]: row.address for row in result.rows
                            if row.address is not None}
    result.seconds = time.monotonic() - started
    return result


def _agreement(name: str, views: dict[str, dict[str, dict]], head: str) -> NameRow:
    """The address most nodes give `name` (the head's on a tie), and who differs."""
    seen: dict[str, str] = {}
    for node, resolved in views.items():
        entry = resolved.get(name, {})
        addresses = entry.get("addresses") or []
        seen[node] = addresses[0] if addresses else "unresolved: " + entry.get("error", "?")
    counts = Counter(value for value in seen.values() if not value.startswith("unresolved"))
    reference = None
    if counts:
        top = max(counts.values())
        tied = [value for value, n in counts.items() if n == top]
        reference = seen.get(head) if seen.get(head) in tied else tied[0]
    agreeing = [node for node, value in seen.items() if value == reference]
    return NameRow(name, reference, agreeing,
                   {node: value for node, value in seen.items() if value != reference})


async def _row_problems(fleet: Fleet, row: NameRow, master: str,
                        views: dict[str, dict[str, dict]]) -> list[Problem]:
    role = "the master address" if row.name == master else "node name"
    if row.address is None:
        alias = await _ssh_target(fleet, row.name)
        if alias is not None:
            return [Problem(
                fold(views), f"{role} {row.name!r} is an SSH alias: the head's ssh config "
                f"sends it to {alias}, but no node can resolve it, and the launcher hands the "
                "hostfile's names to every node",
                f"list the nodes by address in the nodes file ({row.name} -> {alias}), or add "
                "the names to every node's /etc/hosts or DNS")]
        return [Problem(fold(views), f"no node can resolve {role} {row.name!r}",
                        f"add {row.name} to every node's /etc/hosts or DNS")]
    causes = []
    for node, value in row.others.items():
        if value.startswith("unresolved"):
            causes.append((node, f"cannot resolve {role} {row.name!r} ({value[12:]}); the "
                                 f"other nodes resolve it to {row.address}",
                           f"add `{row.address} {row.name}` to its /etc/hosts or DNS"))
        else:
            causes.append((node, f"resolves {role} {row.name!r} to {value}, the other nodes to "
                                 f"{row.address}" + (": its ranks would wait for a master "
                                                     "that is not there (c10d 'client socket "
                                                     "has timed out')" if role != "node name"
                                                     else ""),
                           f"fix the entry for {row.name} in its /etc/hosts or DNS "
                           f"(`getent hosts {row.name}` there should print {row.address})"))
    return folded(causes)


async def _ssh_target(fleet: Fleet, name: str) -> str | None:
    """Where the head's ssh config sends `name`, when that differs from the name itself."""
    for node in fleet.inventory.nodes:
        if host_name(node) == name:
            try:
                address = (await fleet.transport(node)).host_address
            except NodeUnreachable:
                return None
            return address if address and address != name else None
    return None
