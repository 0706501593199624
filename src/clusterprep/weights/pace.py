"""Which node holds its chain back, judged every PACE seconds from how long each node's stream
waited on its next node and on its own disk (the receivers count both).

A chain moves at the pace of its slowest node. When a node's link or disk is slower than the
others', the node before it waits on it (its sends block), while it does not wait on its own
next node: the nodes after it are starved, not slow. A node whose stream mostly waits on its
own disk holds the chain back too. In a chain of equal nodes every node but the last waits on
its next node about as much as the one before it, so none stands out; the last node is never
judged (no node waits behind it). A node that waits on its next one may be held by its own
way out rather than by that node's way in: when it waits as much on the node it is given
next (the last one, even), it is the one judged.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from clusterprep.weights.receiver import Receiver

PACE = 2.0          # seconds between judgements
HELD = 0.9          # share of a window a node waited on the next one: held back by it...
FREE = 0.1          # ...while that one waited on its own next node less than this share
IN_A_ROW = 3        # judgements in a row before a node counts as holding its chain back
WORTH = 3 * PACE    # a node that would be done sooner than this is left alone


@dataclass
class _Sample:
    waited: dict[str, float]
    position: int


@dataclass
class _Held:
    """Why a node seems to hold its chain back: `by` waits on it (None: its disk)."""

    why: str
    by: Receiver | None = None


class Pace:
    """Remembers what each node had waited and held at the last judgement."""

    def __init__(self) -> None:
        self.at = time.monotonic()
        self.samples: dict[Receiver, _Sample] = {}
        self.in_a_row: dict[Receiver, int] = {}
        self.waited_before: set[Receiver] = set()  # nodes whose next node was judged once

    def laggards(self, receivers: list[Receiver], total: int,
                 now: float) -> list[tuple[Receiver, str]]:
        """The nodes holding their chains back since the last judgements, with why."""
        if now - self.at < PACE:
            return []
        span, self.at = now - self.at, now
        shares = {r: self._shares(r, span) for r in receivers}
        found = []
        for node in receivers:
            held = self._holds_back(node, shares, total, span)
            self.in_a_row[node] = self.in_a_row.get(node, 0) + 1 if held else 0
            if held and self.in_a_row[node] >= IN_A_ROW:
                found.append(self._culprit(node, held))
        for node in receivers:
            self.samples[node] = _Sample(dict(node.waited), node.position)
        return found

    def pause(self, now: float) -> None:
        """The chains changed: judge nothing on the window that saw the change."""
        self.at = now
        self.in_a_row.clear()
        self.samples.clear()

    def _shares(self, node: Receiver, span: float) -> dict[str, float] | None:
        before = self.samples.get(node)
        if before is None:
            return None
        return {cause: (node.waited.get(cause, 0.0) - before.waited.get(cause, 0.0)) / span
                for cause in ("send", "disk")}

    def _holds_back(self, node: Receiver, shares: dict[Receiver, dict[str, float] | None],
                    total: int, span: float) -> _Held | None:
        mine = shares.get(node)
        last = node.downstream is None and node.upstream not in self.waited_before
        if mine is None or node.cut or node.detached or not node.running or last:
            return None
        rate = (node.position - self.samples[node].position) / span
        if rate > 0 and (total - node.position) / rate < WORTH:
            return None
        if mine["disk"] > HELD:
            return _Held(f"its stream waited on its disk {mine['disk']:.0%} of the time")
        upstream = node.upstream
        if upstream is not None:
            theirs = shares.get(upstream)
            if theirs is not None and theirs["send"] > HELD and mine["send"] < FREE:
                return _Held(f"{upstream.name} waited on it {theirs['send']:.0%} of the time, "
                             f"it on the next node {mine['send']:.0%}", upstream)
        return None

    def _culprit(self, node: Receiver, held: _Held) -> tuple[Receiver, str]:
        """The node itself, or the node waiting on it when that one waited as much on the
        node it had next before: then its own way out is the slow part."""
        if held.by is None:
            return node, held.why
        if held.by in self.waited_before:
            return held.by, (f"it waited on {node.name} as on the node it had next before: "
                             "its own way out is the slow part")
        self.waited_before.add(held.by)
        return node, held.why
