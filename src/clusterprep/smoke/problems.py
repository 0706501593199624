"""Problems that every phase words the same way: a node that gave no answer, and many nodes
with one cause folded into one line."""

from __future__ import annotations

from collections.abc import Iterable

from clusterprep import suggest
from clusterprep.errors import CONNECTION_KINDS, INTERRUPTED, NodeError
from clusterprep.fleet.gather import fold
from clusterprep.smoke.model import Problem


def unanswered(node: str, error: NodeError) -> Problem:
    """A node whose probe gave no answer: unreachable, killed, or the probe itself failed."""
    if error.kind in CONNECTION_KINDS:
        step = f"`{suggest.command('nodes')}` shows why it cannot be reached; fix that first"
    elif error.kind == INTERRUPTED:
        step = f"run `{suggest.command('smoke')}` again"
    else:
        step = "run the phase again; if it persists, look at the node's logs"
    return Problem(node, f"{error.kind}: {error.message}", step)


def folded(causes: Iterable[tuple[str, str, str]]) -> list[Problem]:
    """(node, cause, next step) triples -> one Problem per distinct cause, nodes folded."""
    nodes: dict[tuple[str, str], list[str]] = {}
    for node, cause, step in causes:
        nodes.setdefault((cause, step), []).append(node)
    return [Problem(fold(names), cause, step) for (cause, step), names in nodes.items()]
