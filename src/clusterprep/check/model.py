"""What `check` finds: per-node check results and fingerprints, and findings across nodes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from clusterprep.check.facts import CheckResult, Fingerprint
from clusterprep.errors import NodeError

CRITICAL = "critical"
WARNING = "warning"
DRIFT = "drift"  # nodes differ on an item
HEALTH = "health"  # a node is unwell whatever the others are


@dataclass(frozen=True)
class CheckSpec:
    """One install check from the recipe: a `command`, or an `import` (with the `value` of an
    expression over the module instead of its version), and what to `expect`."""

    name: str
    command: str | None = None
    module: str | None = None
    value: str | None = None
    expect: str | None = None
    timeout: float | None = None  # seconds; the probe's defaults where None

    def as_payload(self) -> dict[str, Any]:
        payload: dict[str, Any] = {"name": self.name}
        if self.command is not None:
            payload["command"] = self.command
        if self.module is not None:
            payload["import"] = self.module
        if self.value is not None:
            payload["value"] = self.value
        if self.expect is not None:
            payload["expect"] = self.expect
        if self.timeout is not None:
            payload["timeout"] = self.timeout
        return payload


@dataclass
class NodeState:
    """One node's answer: its checks, its comparable fingerprint items, its clock offset.
    `fingerprint` is the probe's answer as it came (for `--json`), `facts` the same read
    into types, which the rules read."""

    node: str
    head: bool
    checks: list[CheckResult] = field(default_factory=list)
    items: dict[str, Any] = field(default_factory=dict)
    fingerprint: dict[str, Any] | None = None
    clock_offset_s: float | None = None
    clock_uncertainty_s: float | None = None
    error: NodeError | None = None
    facts: Fingerprint | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and all(check.ok for check in self.checks)


@dataclass
class Finding:
    """An item on which nodes differ (drift) or nodes are unwell (health): the nodes it names,
    every value seen, and one line saying what to do, built from what the nodes reported."""

    severity: str
    item: str
    nodes: list[str]
    values: dict[str, list[str]]  # value (as text) -> nodes that have it, reference first
    reference: str
    kind: str = DRIFT
    advice: str = ""


@dataclass
class MatrixRow:
    """Nodes whose checks came out alike (pass or fail, value and message), or that gave no
    answer for the same reason: one row of the check matrix, however many nodes."""

    nodes: list[str]
    head: bool
    checks: dict[str, CheckResult]
    error: NodeError | None


@dataclass
class CheckReport:
    """The whole answer of `clusterprep check`."""

    nodes: list[NodeState]
    findings: list[Finding]
    interrupted: bool = False

    @property
    def check_names(self) -> list[str]:
        return list(dict.fromkeys(c.name for node in self.nodes for c in node.checks))

    def matrix(self) -> list[MatrixRow]:
        """The check matrix, nodes with identical outcomes sharing a row, in first-seen order:
        identical nodes, the point of a cluster, make a matrix of one row."""
        rows: dict[tuple[Any, ...], MatrixRow] = {}
        for node in self.nodes:
            if node.error is not None:
                key: tuple[Any, ...] = ("error", node.error.kind, node.error.message)
            else:
                key = tuple((c.name, c.ok, c.value, c.message) for c in node.checks)
            row = rows.get(key)
            if row is None:
                rows[key] = MatrixRow([node.node], node.head,
                                      {c.name: c for c in node.checks}, node.error)
            else:
                row.nodes.append(node.node)
                row.head = row.head or node.head
        return list(rows.values())

    @property
    def ok(self) -> bool:
        return (not self.interrupted and all(node.ok for node in self.nodes)
                and not any(f.severity == CRITICAL for f in self.findings))
