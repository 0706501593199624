"""`--json`: one JSON object on stdout, for scripts. Output bytes that are not UTF-8 are also
given exactly, base64-encoded, under `<field>_base64`."""

from __future__ import annotations

import base64
import json
import sys
from typing import Any

from clusterprep.errors import NodeError
from clusterprep.check.model import CheckReport
from clusterprep.fleet import FleetResult
from clusterprep.nodes import Survey


def emit(document: dict[str, Any]) -> None:
    json.dump(document, sys.stdout, indent=2)
    sys.stdout.write("\n")


def _error(error: NodeError | None) -> dict[str, str] | None:
    return error.as_dict() if error is not None else None


def _text_fields(name: str, data: bytes) -> dict[str, str]:
    try:
        return {name: data.decode("utf-8")}
    except UnicodeDecodeError:
        return {
            name: data.decode("utf-8", errors="replace"),
            f"{name}_base64": base64.b64encode(data).decode(),
        }


def run_document(outcome: FleetResult, warnings: list[str]) -> dict[str, Any]:
    nodes = []
    for r in outcome.results:
        entry: dict[str, Any] = {"node": r.node, "exit_code": r.exit_code}
        entry.update(_text_fields("stdout", r.stdout))
        entry.update(_text_fields("stderr", r.stderr))
        entry.update({"seconds": round(r.seconds, 4), "error": _error(r.error)})
        nodes.append(entry)
    return {"ok": outcome.ok, "interrupted": outcome.interrupted, "nodes": nodes,
            "warnings": warnings}


def nodes_document(result: Survey, warnings: list[str]) -> dict[str, Any]:
    rows = [
        {
            "node": r.node, "head": r.head, "reachable": r.reachable, "rtt_ms": r.rtt_ms,
            "hostname": r.hostname, "os": r.os, "cpus": r.cpus, "gpus": r.gpus,
            "gpu_model": r.gpu_model, "slurm_state": r.slurm_state, "error": _error(r.error),
        }
        for r in result.reports
    ]
    return {"ok": result.ok, "interrupted": result.interrupted, "nodes": rows,
            "warnings": warnings}


def check_document(report: CheckReport, warnings: list[str]) -> dict[str, Any]:
    nodes = []
    for node in report.nodes:
        nodes.append({
            "node": node.node,
            "head": node.head,
            "ok": node.ok,
            "error": _error(node.error),
            "checks": [{"name": c.name, "ok": c.ok, "value": c.value, "expected": c.expected,
                        "message": c.message} for c in node.checks],
            "clock_offset_s": node.clock_offset_s,
            "clock_uncertainty_s": node.clock_uncertainty_s,
            "fingerprint": node.fingerprint,
        })
    findings = [{"severity": f.severity, "kind": f.kind, "item": f.item, "nodes": f.nodes,
                 "values": f.values, "reference": f.reference, "advice": f.advice}
                for f in report.findings]
    return {"ok": report.ok, "interrupted": report.interrupted, "nodes": nodes,
            "findings": findings, "warnings": warnings}
