"""Who feeds whom in a weights sync: the nodes that need files in chains, each node fed by the
node before it, or, first in its chain, by the source (the staging cache, read by the node
itself when it sees it, else the head); and how a chain re-forms when a node leaves it.

Pure data: the members are any objects with `upstream` and `downstream` attributes (the head's
receivers, or plain records in tests). `transfer` sends what the changes here say.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

CHAIN, CHAINS, STAR = "chain", "chains", "star"
STAGING, HEAD = "staging", "head"

# A node in a chain: `upstream` (None: first in its chain, fed by the source) and `downstream`
# (None: last in its chain), both members too.
Member = TypeVar("Member")


def chain_count(wanting: int, chains: int, star: bool) -> int:
    """How many chains: `--chains N`, or with `--star` one per node that needs files."""
    return wanting if star else chains


def plan(carriers: list[Member], count: int,
         reads_staging: Callable[[Member], bool]) -> list[list[Member]]:
    """`count` chains of consecutive nodes (inventory order), each led by its first node that
    reads the staging itself, where one does (else the head feeds its first node)."""
    count = max(1, min(count, len(carriers)))
    size, extra = divmod(len(carriers), count)
    chains, start = [], 0
    for i in range(count):
        chain = carriers[start:start + size + (i < extra)]
        start += len(chain)
        leader = next((r for r in chain if reads_staging(r)), chain[0])
        chains.append([leader] + [r for r in chain if r is not leader])
    return chains


def mode(chains: list[list[str]]) -> str | None:
    """chain, chains or star, as planned; None when nothing had to move."""
    if not chains:
        return None
    if all(len(chain) == 1 for chain in chains):
        return STAR
    return CHAIN if len(chains) == 1 else CHAINS


def source(member: Member, reads_staging: Callable[[Member], bool]) -> Member | str:
    """What feeds `member`: the node before it, or STAGING (it reads it itself), or HEAD."""
    if member.upstream is not None:
        return member.upstream
    return STAGING if reads_staging(member) else HEAD


def join(upstream: Member, downstream: Member) -> None:
    """`upstream` passes the stream on to `downstream`."""
    upstream.downstream, downstream.upstream = downstream, upstream


def split(upstream: Member) -> Member | None:
    """The link after `upstream` ends: the node that was after it (now first in its chain,
    fed by the source), if there was one."""
    downstream = upstream.downstream
    upstream.downstream = None
    if downstream is not None:
        downstream.upstream = None
    return downstream


@dataclass
class Reform(Generic[Member]):
    """How a chain closes the gap a node leaves: `link` (the node before passes the stream on
    to the node after), or `fed` (the node after is fed by the source); `last` is the node
    before, when it is now last in its chain. All None: it was alone."""

    link: tuple[Member, Member] | None = None
    fed: Member | None = None
    last: Member | None = None


def leave(leaving: Member, carries_on: Callable[[Member], bool]) -> Reform[Member]:
    """Take `leaving` out of its chain. The node before it takes the node after it on when
    that node `carries_on` (still runs); else the node after it is fed by the source."""
    upstream, downstream = leaving.upstream, leaving.downstream
    leaving.upstream = leaving.downstream = None
    alive = upstream is not None and carries_on(upstream)
    if upstream is not None:
        upstream.downstream = None
    if downstream is not None:
        downstream.upstream = None
    if downstream is None:
        return Reform(last=upstream if alive else None)
    if alive:
        return Reform(link=(upstream, downstream))
    return Reform(fed=downstream)
