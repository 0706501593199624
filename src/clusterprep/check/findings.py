"""Every finding of a check, critical first: the drift between nodes and the health of each
node, each with its advice. A health finding stands in for the drift finding of the same item
when it names all of that one's nodes: it says why a value is wrong, not only that it differs."""

from __future__ import annotations

from clusterprep.check.advice import advise
from clusterprep.check.drift import find_drift
from clusterprep.check.health import find_health
from clusterprep.check.model import CRITICAL, Finding, NodeState


def find_all(nodes: list[NodeState]) -> list[Finding]:
    """Drift and health findings over the fingerprinted nodes, each with its advice."""
    states = {node.node: node for node in nodes}
    health = find_health(nodes)
    named = {finding.item: set(finding.nodes) for finding in health}
    drift = [finding for finding in find_drift(nodes)
             if not set(finding.nodes) <= named.get(finding.item, set())]
    for finding in drift:
        finding.advice = advise(finding, states)
    return sorted(health + drift, key=lambda f: (f.severity != CRITICAL, f.item))
