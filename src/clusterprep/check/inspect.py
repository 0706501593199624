"""Run the install checks and the fingerprint probe on every node (one round trip each), and
measure each node's clock offset from the head."""

from __future__ import annotations

import json
import time

from clusterprep import suggest
from clusterprep.answers import Misfit, read
from clusterprep.check import fingerprint
from clusterprep.check.facts import Clock, Fingerprint
from clusterprep.check.findings import find_all
from clusterprep.check.model import CheckReport, CheckSpec, NodeState
from clusterprep.errors import PROBE_FAILED, NodeError
from clusterprep.fleet import Fleet, ProbeResult


async def inspect(
    fleet: Fleet,
    checks: list[CheckSpec],
    *,
    python: str = "python3",
    activate: str | None = None,
    shared: str | None = None,
    timeout: float | None = None,
    gpu_diag: bool = False,
) -> CheckReport:
    """Check and fingerprint every node with `python` (the env's interpreter on each node);
    command checks run where the shell script `activate` (`activation.activate_script`) left
    the env active; with `gpu_diag`, DCGM's quick diagnostic runs on every node that has it.

    The probe prints the node's clock first; the head notes when that line arrives. The node's
    reading lies between the probe's start and that arrival (head time), so the offset is known
    to within half that window, which the clock finding takes into account.
    """
    await fleet.connect()
    arrivals: dict[str, float] = {}

    def first_output(node: str, stream: str, chunk: bytes) -> None:
        if stream == "stdout":
            arrivals.setdefault(node, time.time())

    sent = time.time()
    payload = {"shared": shared, "activate": activate, "gpu_diag": gpu_diag,
               "checks": [spec.as_payload() for spec in checks]}
    results, interrupted = await fleet.probe(
        "fingerprint", payload, python=python, isolated=False, timeout=timeout,
        on_output=first_output, shape=Fingerprint)
    nodes = []
    for node, result in zip(fleet.inventory.nodes, results):
        state = NodeState(node.name, node.head, error=_explained(result))
        if result.answer is not None:
            state.fingerprint, state.facts = result.data, result.answer
            state.items = fingerprint.items(result.answer)
            state.checks = result.answer.checks
            clock = _node_clock(result.command.stdout)
            if clock is not None and node.name in arrivals:
                middle = (sent + arrivals[node.name]) / 2
                state.clock_offset_s = round(clock - middle, 4)
                state.clock_uncertainty_s = round((arrivals[node.name] - sent) / 2, 4)
        nodes.append(state)
    return CheckReport(nodes, find_all(nodes), interrupted)


def _explained(result: ProbeResult) -> NodeError | None:
    """The node's error; a missing interpreter (exit 127) says what to do about it."""
    error = result.error
    if error is not None and error.kind == PROBE_FAILED and result.command.exit_code == 127:
        return NodeError(PROBE_FAILED, f"{error.message} (is the env installed there? "
                         f"`{suggest.command('up')}` builds it; --python names another "
                         "interpreter)")
    return error


def _node_clock(stdout: bytes) -> float | None:
    """The node's clock, from the probe's first line; None where something else came first
    (a startup file that prints): the fingerprint still counts, the offset is not known."""
    try:
        return read(Clock, json.loads(stdout.split(b"\n", 1)[0])).clock
    except (ValueError, Misfit):
        return None
