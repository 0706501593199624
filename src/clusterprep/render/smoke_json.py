"""`clusterprep smoke --json`: one object with every phase that ran and all its figures."""

from __future__ import annotations

import dataclasses
from typing import Any

from clusterprep.smoke.model import SmokeReport


def document(report: SmokeReport, warnings: list[str]) -> dict[str, Any]:
    """The `--json` object: every phase that ran, with all its figures."""
    failed = report.failed_phase
    return {
        "ok": report.ok, "interrupted": report.interrupted, "nodes": report.nodes,
        "failed_phase": failed.name if failed else None,
        "phases": [dict(dataclasses.asdict(p), ok=p.ok) for p in report.phases],
        "problems": [p.as_dict() for p in report.problems], "warnings": warnings,
    }
