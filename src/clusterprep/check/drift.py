"""Drift: compare every node's fingerprint items with the reference (what most nodes have, the
head winning ties) and turn each difference into a Finding."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from clusterprep.check.fingerprint import ABSENT, severity
from clusterprep.check.model import CRITICAL, WARNING, Finding, NodeState

CLOCK_LIMIT_S = 1.0
DISK_FRACTION = 0.5  # a node with less than half the median free space is worth a warning


def find_drift(nodes: list[NodeState]) -> list[Finding]:
    """Findings for every item on which the fingerprinted nodes differ, critical first."""
    measured = [node for node in nodes if node.facts is not None]
    if not measured:
        return []
    findings = _differences(measured) + _clock(measured) + _disk(measured)
    return sorted(findings, key=lambda f: (f.severity != CRITICAL, f.item))


def no_drift(nodes: list[NodeState]) -> tuple[bool, str]:
    """What finding no drift means, in words: (whether nodes were compared at all, the words)."""
    measured = sum(1 for node in nodes if node.facts is not None)
    if measured < 2:
        which = "no node was" if measured == 0 else "only one node was"
        return False, f"nothing to compare: {which} fingerprinted"
    return True, f"no drift: the {measured} fingerprinted nodes are identical"


def _text(value: Any) -> str:
    if value is None:
        return ABSENT
    return value if isinstance(value, str) else json.dumps(value)


def _differences(nodes: list[NodeState]) -> list[Finding]:
    names = sorted({item for node in nodes for item in node.items})
    head = next((node for node in nodes if node.head), nodes[0])
    findings = []
    for item in names:
        seen: dict[str, list[str]] = {}
        for node in nodes:
            seen.setdefault(_text(node.items.get(item)), []).append(node.node)
        if len(seen) < 2:
            continue
        counts = Counter({value: len(holders) for value, holders in seen.items()})
        top = max(counts.values())
        leaders = [value for value, count in counts.items() if count == top]
        head_value = _text(head.items.get(item))
        reference = head_value if head_value in leaders else leaders[0]
        values = {reference: seen[reference]}
        values.update((value, holders) for value, holders in seen.items() if value != reference)
        differing = [name for value, holders in values.items() if value != reference
                     for name in holders]
        findings.append(Finding(severity(item), item, differing, values, reference))
    return findings


def _clock(nodes: list[NodeState]) -> list[Finding]:
    """A clock offset from the head beyond 1 s (after the measurement's own uncertainty)."""
    off = {}
    for node in nodes:
        if node.clock_offset_s is None:
            continue
        if abs(node.clock_offset_s) - (node.clock_uncertainty_s or 0) > CLOCK_LIMIT_S:
            off[node.node] = node.clock_offset_s
    if not off:
        return []
    values = {f"{offset:+.3f} s": [name] for name, offset in off.items()}
    return [Finding(CRITICAL, "clock:offset from the head", list(off),
                    {"within 1 s": [n.node for n in nodes if n.node not in off], **values},
                    "within 1 s")]


def _disk(nodes: list[NodeState]) -> list[Finding]:
    findings = []
    for key, label in (("hf_cache_free", "Hugging Face cache"), ("shared_free", "shared folder")):
        free = {n.node: getattr(n.facts.disk, key) for n in nodes
                if n.facts and getattr(n.facts.disk, key) is not None}
        if len(free) < 2:
            continue
        median = sorted(free.values())[len(free) // 2]
        low = {name: value for name, value in free.items() if value < DISK_FRACTION * median}
        if low:
            values = {f"median {median / 2**30:.1f} GiB": [n for n in free if n not in low]}
            values.update((f"{value / 2**30:.1f} GiB", [name]) for name, value in low.items())
            findings.append(Finding(WARNING, f"disk:free space at the {label}", list(low),
                                    values, next(iter(values))))
    return findings
