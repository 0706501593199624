"""`clusterprep smoke`: the five phases in order, stopping at the first that fails."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from clusterprep.fleet import Fleet
from clusterprep.smoke.collective import (
    DEFAULT_SIZES,
    CollectiveListener,
    CollectivePlan,
    run_collective,
)
from clusterprep.smoke.handover import hand_over
from clusterprep.smoke.links import check_links
from clusterprep.smoke.model import (
    COLLECTIVE,
    HANDOVER,
    LINKS,
    PHASES,
    RENDEZVOUS,
    NamesResult,
    PhaseResult,
    SmokeReport,
)
from clusterprep.smoke.names import check_names
from clusterprep.smoke.rendezvous import check_rendezvous

BACKENDS = ("auto", "nccl", "gloo")


@dataclass(frozen=True)
class SmokeOptions:
    """What the command line decides; defaults are the command's."""

    python: str
    exports: dict[str, str] = field(default_factory=dict)
    master_port: int = 29500
    pairs_up_to: int = 16
    link_seconds: float = 3.0
    backend: str = "auto"
    sizes: tuple[int, ...] | None = None
    iters: int = 20
    warmup: int = 5
    min_busbw: float | None = None
    timeout: float = 300.0
    dial_timeout: float = 10.0
    hostfile: Path = Path("hostfile")
    last_phase: str = HANDOVER


class SmokeListener(CollectiveListener):
    """Told as each phase starts and ends; does nothing by default (renderers override)."""

    def phase_started(self, name: str) -> None:
        """Phase `name` begins."""

    def phase_finished(self, result: PhaseResult) -> None:
        """A phase has ended, passed or not."""


async def smoke(fleet: Fleet, options: SmokeOptions,
                listener: SmokeListener | None = None) -> SmokeReport:
    listener = listener or SmokeListener()
    report = SmokeReport(fleet.inventory.names, last_phase=options.last_phase)
    wanted = PHASES[:PHASES.index(options.last_phase) + 1]

    def keep(result: PhaseResult) -> bool:
        report.phases.append(result)
        listener.phase_finished(result)
        return result.ok and len(report.phases) < len(wanted)

    listener.phase_started(PHASES[0])
    names = await check_names(fleet, timeout=options.dial_timeout * 3)
    if not keep(names):
        return report
    backend = _backend(options.backend, names)
    listener.phase_started(RENDEZVOUS)
    if not keep(await check_rendezvous(fleet, names.master, options.master_port,
                                       options.dial_timeout)):
        return report
    listener.phase_started(LINKS)
    if not keep(await check_links(fleet, names, backend=backend,
                                  pairs_up_to=options.pairs_up_to,
                                  seconds=options.link_seconds,
                                  dial_timeout=options.dial_timeout)):
        return report
    nproc = {node: max(1, names.gpus.get(node, 0)) for node in fleet.inventory.names}
    listener.phase_started(COLLECTIVE)
    plan = CollectivePlan(
        master=names.master, port=options.master_port, backend=backend, nproc=nproc,
        python=options.python, exports=options.exports,
        sizes=options.sizes or DEFAULT_SIZES[backend], iters=options.iters,
        warmup=options.warmup, timeout=options.timeout, min_busbw=options.min_busbw)
    if not keep(await run_collective(fleet, plan, listener)):
        return report
    listener.phase_started(HANDOVER)
    keep(hand_over(fleet.inventory.nodes, names.master, options.master_port, nproc,
                   options.hostfile))
    return report


def _backend(choice: str, names: NamesResult) -> str:
    """`auto`: nccl when every node has a GPU, gloo otherwise."""
    if choice != "auto":
        return choice
    return "nccl" if names.gpus and all(names.gpus.values()) else "gloo"
