"""Phase 1, names: the master address resolves on every node, to the same address everywhere,
and so does every node's name (the launcher hands the hostfile's names to every node).

A name that no node resolves, while the head's ssh config sends it to an address, is the SSH
alias trap: `Host gpu1 / HostName 10.0.0.1` lets the head reach `gpu1`, but the nodes are
given `gpu1` as the master address and cannot resolve it.
"""

from __future__ import annotations

from collections import Counter

from clusterprep.errors import NodeUnreachable
from clusterprep.fleet import Fleet
from clusterprep.fleet.gather import fold
from clusterprep.inventory import Node
from clusterprep.smoke.answers import NamesAnswer, Resolution
from clusterprep.smoke.conversation import Conversation, replies
from clusterprep.smoke.model import NameRow, NamesResult, Problem
from clusterprep.smoke.problems import folded, unanswered


UNRESOLVED = "unresolved: "


def host_name(node: Node) -> str:
    """The name the launcher gives the other nodes for `node`: its host, without `user@`
    and without IPv6 brackets."""
    return node.host[1:-1] if node.host.startswith("[") else node.host


async def check_names(fleet: Fleet, conversations: list[Conversation],
                      timeout: float) -> NamesResult:
    """Every node resolves every node's name: the first stage of each node's smoke probe."""
    nodes = fleet.inventory.nodes
    names = list(dict.fromkeys(host_name(node) for node in nodes))
    result = NamesResult(master=host_name(nodes[0]))
    for conversation in conversations:
        conversation.send({"stage": "names", "names": names})
    answers, failures = await replies(conversations, "names", shape=NamesAnswer,
                                      timeout=timeout)
    result.problems += [unanswered(node, error) for node, error in failures.items()]
    views = {node: answer.resolved for node, answer in answers.items()}
    result.gpus = {node: answer.gpus for node, answer in answers.items()}
    if views:
        result.rows = [_agreement(name, views, nodes[0].name) for name in names]
        result.problems += await _unresolved(fleet, result, fold(views))
        for row in result.rows:
            result.problems += _disagreements(row, result.master)
        agreed = {row.name: row.address for row in result.rows if row.address is not None}
        result.addresses = {node.name: agreed[host_name(node)] for node in nodes
                            if host_name(node) in agreed}
    return result


def _agreement(name: str, views: dict[str, dict[str, Resolution]], head: str) -> NameRow:
    """The address most nodes give `name` (the head's on a tie), and who differs."""
    seen: dict[str, str] = {}
    for node, resolved in views.items():
        entry = resolved.get(name, Resolution())
        seen[node] = entry.addresses[0] if entry.addresses else UNRESOLVED + entry.error
    counts = Counter(value for value in seen.values() if not value.startswith(UNRESOLVED))
    reference = None
    if counts:
        top = max(counts.values())
        tied = [value for value, n in counts.items() if n == top]
        reference = seen.get(head) if seen.get(head) in tied else tied[0]
    agreeing = [node for node, value in seen.items() if value == reference]
    return NameRow(name, reference, agreeing,
                   {node: value for node, value in seen.items() if value != reference})


async def _unresolved(fleet: Fleet, result: NamesResult, everyone: str) -> list[Problem]:
    """Names no node resolves: the SSH alias trap when the head's ssh config knows them."""
    nowhere = [row.name for row in result.rows if row.address is None]
    targets = {name: await _ssh_target(fleet, name) for name in nowhere}
    aliases = {name: target for name, target in targets.items() if target is not None}
    problems = [Problem(everyone, f"no node can resolve {_role(name, result.master)} {name!r}",
                        f"add {name} to every node's /etc/hosts or DNS")
                for name, target in targets.items() if target is None]
    if aliases:
        among = (f" (the master address {result.master!r} among them)"
                 if result.master in aliases else "")
        mapped = _first([f"{name} -> {target}" for name, target in aliases.items()])
        problems.insert(0, Problem(
            everyone, f"the nodes file names SSH aliases that no node can resolve{among}: the "
            f"head's ssh config sends {mapped}, but the launcher hands the hostfile's names "
            "to every node",
            f"list the nodes by address in the nodes file, head first "
            f"({_first(list(aliases.values()))}), or add the names to every node's "
            "/etc/hosts or DNS"))
    return problems


def _disagreements(row: NameRow, master: str) -> list[Problem]:
    """Nodes that resolve a name otherwise than most, or not at all."""
    if row.address is None:
        return []
    role = _role(row.name, master)
    causes = []
    for node, value in row.others.items():
        if value.startswith(UNRESOLVED):
            causes.append((node, f"cannot resolve {role} {row.name!r} "
                                 f"({value[len(UNRESOLVED):]}); the other nodes resolve it to "
                                 f"{row.address}",
                           f"add `{row.address} {row.name}` to its /etc/hosts or DNS"))
        else:
            waits = (": its ranks would wait for a master that is not there (c10d 'client "
                     "socket has timed out')") if row.name == master else ""
            causes.append((node, f"resolves {role} {row.name!r} to {value}, the other nodes to "
                                 f"{row.address}{waits}",
                           f"fix the entry for {row.name} in its /etc/hosts or DNS "
                           f"(`getent hosts {row.name}` there should print {row.address})"))
    return folded(causes)


def _role(name: str, master: str) -> str:
    return "the master address" if name == master else "node name"


def _first(items: list[str], shown: int = 4) -> str:
    more = f", and {len(items) - shown} more" if len(items) > shown else ""
    return ", ".join(items[:shown]) + more


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
