"""`up`, `plan` and `down --json`: one object with every node's outcome of every step."""

from __future__ import annotations

from typing import Any

from clusterprep.steps.runner import UpResult


def up_document(result: UpResult, warnings: list[str]) -> dict[str, Any]:
    nodes = []
    for node in result.nodes:
        steps = {}
        for step in result.steps:
            outcome = result.outcome(step, node)
            entry: dict[str, Any] = {"state": outcome.state, "message": outcome.message}
            if outcome.log:
                entry["log"] = outcome.log
            if outcome.data:
                entry.update(outcome.data)
            steps[step] = entry
        nodes.append({"node": node, "head": node == result.head, "steps": steps})
    return {
        "ok": result.ok,
        "interrupted": result.interrupted,
        "dry_run": result.dry_run,
        "recipe": result.recipe,
        "steps": result.steps,
        "changes": result.changes,
        "failed_nodes": result.failed_nodes,
        "nodes": nodes,
        "warnings": warnings,
    }
