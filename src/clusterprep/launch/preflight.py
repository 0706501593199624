"""Before a launch, on every node in one probe: its GPU count (for --nproc-per-node auto) and
the stale processes that would break the launch (a rank of an earlier run, anything holding
the master port on the head or a GPU), ended with --kill-stale."""

from __future__ import annotations

from dataclasses import dataclass, field

from clusterprep.errors import NodeError
from clusterprep.fleet import Fleet
from clusterprep.inventory import Node
from clusterprep.launch.model import Process
from clusterprep.launch.plan import MARKER
from clusterprep.smoke.collective import MARKER as SMOKE_MARKER

PREFLIGHT_TIMEOUT = 30.0


@dataclass
class Preflight:
    gpus: dict[str, int] = field(default_factory=dict)
    stale: list[Process] = field(default_factory=list)
    survivors: list[Process] = field(default_factory=list)
    unreachable: dict[str, NodeError] = field(default_factory=dict)
    interrupted: bool = False


async def preflight(fleet: Fleet, nodes: list[Node], port: int, kill: bool,
                    grace: float) -> Preflight:
    """Every node's GPU count and stale processes (ended when `kill`); the master `port`
    matters on the head (the first of `nodes`) only."""
    head = nodes[0].name
    answers, interrupted = await fleet.probe(
        "launch_preflight", lambda node: {
            "port": port if node.name == head else None, "kill": kill, "grace": grace,
            "markers": [f"{MARKER}=", f"{SMOKE_MARKER}="]},
        timeout=PREFLIGHT_TIMEOUT, nodes=nodes)
    found = Preflight(interrupted=interrupted)
    for answer in answers:
        if answer.data is None:
            assert answer.error is not None
            found.unreachable[answer.node] = answer.error
            continue
        found.gpus[answer.node] = answer.data["gpus"]
        stale = {p["pid"]: Process(answer.node, p["pid"], p["command"], p["state"], p["why"])
                 for p in answer.data["stale"]}
        found.stale += stale.values()
        found.survivors += [stale[pid] for pid in answer.data["survivors"]]
    return found
