"""`clusterprep nodes`: is every node reachable, how fast, and what is it (OS, CPUs, GPUs)?"""

from __future__ import annotations

from dataclasses import dataclass

from clusterprep.errors import NodeError
from clusterprep.fleet import Fleet


@dataclass
class NodeReport:
    """One row of `clusterprep nodes`."""

    node: str
    head: bool
    reachable: bool
    rtt_ms: float | None = None
    hostname: str | None = None
    os: str | None = None
    cpus: int | None = None
    gpus: int = 0
    gpu_model: str | None = None
    error: NodeError | None = None
    slurm_state: str | None = None  # sinfo's state (idle, allocated, drained, down*...); SSH: None


@dataclass
class Survey:
    """Every node's report, in inventory order."""

    reports: list[NodeReport]
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        """Every node reachable and described."""
        return not self.interrupted and all(r.reachable and r.error is None
                                            for r in self.reports)


async def survey(fleet: Fleet, timeout: float | None = None) -> Survey:
    """Connect to every node, time a no-op round trip, and read its facts in one probe."""
    await fleet.connect()
    ping = await fleet.run("true", timeout=timeout)
    facts, interrupted = await fleet.probe("facts", timeout=timeout)
    reports = []
    for node, pong, fact in zip(fleet.inventory.nodes, ping.results, facts):
        report = NodeReport(node.name, node.head, reachable=pong.reached)
        if pong.reached:
            report.rtt_ms = round(pong.seconds * 1000, 1)
        if fact.data is not None:
            gpus = fact.data.get("gpus") or []
            report.hostname = fact.data.get("hostname")
            report.os = fact.data.get("os")
            report.cpus = fact.data.get("cpus")
            report.gpus = len(gpus)
            report.gpu_model = ", ".join(sorted({g["name"] for g in gpus})) or None
        report.error = pong.error or fact.error
        report.slurm_state = fleet.node_state(node)
        reports.append(report)
    return Survey(reports, interrupted or ping.interrupted)
