"""Phase 3, links: every node reaches the next node of a ring, and every other node while the
cluster has at most `pairs_up_to` nodes, on fresh ports, from the interface that its
GLOO_SOCKET_IFNAME / NCCL_SOCKET_IFNAME names (else the one its route picks); each ring link
carries a stream for a few seconds, all links at once, as a ring all_reduce loads them.
Links under half the ring's median are slow; a node at both ends of slow links is named.

The third stage of each node's smoke probe (`probes/smoke_node.py`): every node listens and
reports its port, then dials the peers it is given and streams to its ring successor, then
reports what it received. This phase needs no env: the probe is stdlib Python.
"""

from __future__ import annotations

import secrets
import statistics
from typing import Any

from clusterprep.inventory import Node
from clusterprep.smoke.answers import Listening, Received, Sent, StreamReceived, StreamSent
from clusterprep.smoke.conversation import Conversation, replies
from clusterprep.smoke.model import Link, LinksResult, NamesResult, Problem
from clusterprep.smoke.problems import folded, unanswered
from clusterprep.smoke.rendezvous import NEXT_STEP, SETUP_TIMEOUT

INTERFACE_VARIABLES = {"nccl": ["NCCL_SOCKET_IFNAME", "GLOO_SOCKET_IFNAME"],
                       "gloo": ["GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME"]}
SLOW_FRACTION = 0.5


async def check_links(conversations: list[Conversation], names: NamesResult, *, backend: str,
                      pairs_up_to: int, seconds: float, dial_timeout: float) -> LinksResult:
    result = LinksResult(all_pairs=len(conversations) <= pairs_up_to, seconds_measured=seconds)
    token = secrets.token_hex(16)
    for conversation in conversations:
        conversation.send({"stage": "links", "node": conversation.node.name, "token": token,
                           "address": names.addresses.get(conversation.node.name, ""),
                           "variables": INTERFACE_VARIABLES[backend], "timeout": dial_timeout})
    listening, failures = await replies(conversations, "listening", shape=Listening,
                                        timeout=SETUP_TIMEOUT)
    for node, event in listening.items():
        result.interfaces[node] = _interface_label(event)
    result.problems += [unanswered(node, error) for node, error in failures.items()]
    result.problems += _listening_problems(listening)
    if result.problems:
        return result
    ring = [(c.node, listening[c.node.name]) for c in conversations]
    for i, conversation in enumerate(conversations):
        conversation.send(_plan(ring, i, result.all_pairs, seconds))
    rounds = 1 + (len(ring) - 1) // 16  # a node dials 16 peers at a time
    sent, failures = await replies(conversations, "sent", shape=Sent,
                                   timeout=SETUP_TIMEOUT + rounds * dial_timeout + 2 * seconds)
    live = [c for c in conversations if c.node.name not in failures]
    for conversation in live:
        conversation.send({"stop": True})
    received, late = await replies(live, "received", shape=Received,
                                   timeout=SETUP_TIMEOUT + dial_timeout)
    failures.update(late)
    result.problems += [unanswered(node, error) for node, error in failures.items()]
    _read_links(result, [c.node.name for c in conversations], sent, received, seconds)
    return result


def _interface_label(event: Listening) -> str:
    chosen = next((e for e in event.interfaces if e.address), None)
    if chosen is None:
        return f"the address its name resolves to ({event.address})"
    return f"{chosen.variable}={chosen.value}: {chosen.selected[0]} ({chosen.address})"


def _listening_problems(listening: dict[str, Listening]) -> list[Problem]:
    causes = []
    for node, event in listening.items():
        if event.error is None:
            continue
        if event.error == "interface":
            for entry in event.interfaces:
                if entry.address is None:
                    causes.append((node, f"{entry.variable}={entry.value} names no "
                                         "interface of this node with an IPv4 address (it has: "
                                         f"{', '.join(entry.interfaces)})",
                                   f"set {entry.variable} to one of its interfaces, or unset "
                                   "it; interface names often differ between nodes"))
        else:
            causes.append((node, f"cannot listen at {event.address}, the address its "
                                 f"name resolves to: {event.message}",
                           "the node's name leads to an address it does not have: fix the "
                           "name in /etc/hosts or DNS"))
    return folded(causes)


def _plan(ring: list[tuple[Node, Listening]], i: int, all_pairs: bool,
          seconds: float) -> dict[str, Any]:
    def peer(j: int) -> list[Any]:
        node, event = ring[j]
        return [node.name, event.address, event.port]

    n = len(ring)
    others = [j for j in range(n) if j != i] if all_pairs else ([(i + 1) % n] if n > 1 else [])
    following = peer((i + 1) % n) if n > 1 and seconds > 0 else None
    return {"peers": [peer(j) for j in others], "next": following, "seconds": seconds}


def _read_links(result: LinksResult, order: list[str], sent: dict[str, Sent],
                done: dict[str, Received], seconds: float) -> None:
    received = {(stream.sender, node): stream
                for node, event in done.items() for stream in event.streams}
    causes = []
    for node in order:
        event = sent.get(node)
        if event is None:
            continue
        for pair in event.pairs:
            result.pairs_checked += 1
            if not pair.ok:
                link = Link(node, pair.to, False, pair.cause, pair.message, pair.ms)
                result.pair_failures.append(link)
                causes.append((f"{node} -> {pair.to}", f"{pair.cause}: {pair.message}",
                               NEXT_STEP.get(pair.cause, "check the network between them")))
    result.problems += folded(causes)
    if len(order) < 2:
        return
    for i, node in enumerate(order):
        target = order[(i + 1) % len(order)]
        link = _ring_link(node, target, sent.get(node), received.get((node, target)), seconds)
        result.ring.append(link)
        if not link.ok and sent.get(node) and all(
                p.where != f"{node} -> {target}" for p in result.problems):
            result.problems.append(Problem(f"{node} -> {target}",
                                           f"ring stream: {link.cause}: {link.message}",
                                           "check the network between them"))
    _mark_slow(result)


def _ring_link(source: str, target: str, sent: Sent | None,
               received: StreamReceived | None, seconds: float) -> Link:
    pair = next((p for p in (sent.pairs if sent else []) if p.to == target), None)
    link = Link(source, target, ok=bool(pair and pair.ok), ms=pair.ms if pair else None)
    if pair and not pair.ok:
        link.cause, link.message = pair.cause, pair.message
    if seconds <= 0 or not link.ok:
        return link
    stream = (sent.stream if sent else None) or StreamSent(target, False)
    if not stream.ok or received is None or received.seconds <= 0:
        link.ok = False
        link.cause, link.message = stream.cause, stream.message
        return link
    link.mb_per_s = received.bytes / received.seconds / 1e6
    return link


def _mark_slow(result: LinksResult) -> None:
    rates = [link.mb_per_s for link in result.ring if link.mb_per_s is not None]
    if len(rates) < 2:
        return
    median = result.median_mb_per_s = statistics.median(rates)
    slow = [link for link in result.ring
            if link.mb_per_s is not None and link.mb_per_s < SLOW_FRACTION * median]
    for link in slow:
        link.slow = True
    explained = set()
    for node in dict.fromkeys(n for link in slow for n in (link.source, link.target)):
        own = [link for link in slow if node in (link.source, link.target)]
        if len(own) >= 2:
            explained.update(id(link) for link in own)
            figures = ", ".join(f"{l.source} -> {l.target} {l.mb_per_s:.1f} MB/s" for l in own)
            result.problems.append(Problem(
                node, f"slow node: both of its ring links are under half the ring's median "
                      f"{median:.1f} MB/s ({figures})",
                "check its NIC, cable and switch port (link speed, errors): one slow node "
                "drags every step of training"))
    for link in slow:
        if id(link) not in explained:
            result.problems.append(Problem(
                f"{link.source} -> {link.target}",
                f"slow link: {link.mb_per_s:.1f} MB/s, under half the ring's median "
                f"{median:.1f} MB/s",
                "check both ends' NICs, cables and switch ports"))
