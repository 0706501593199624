"""`clusterprep smoke`: the five phases in order, stopping at the first that fails.

Phases 1-3 are stages of one probe per node (`probes/smoke_node.py`), started once and held
open as a conversation until the links are measured; the collective launches torchrun, and the
hand-over writes on this machine.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path

from clusterprep.fleet import Fleet
from clusterprep.interrupts import acknowledge
from clusterprep.smoke.collective import (
    DEFAULT_SIZES,
    CollectiveListener,
    CollectivePlan,
    run_collective,
)
from clusterprep.smoke.conversation import Conversation, finish_all, start_all, stop_all
from clusterprep.smoke.handover import hand_over
from clusterprep.smoke.links import check_links
from clusterprep.smoke.model import (
    HANDOVER,
    PHASES,
    CollectiveResult,
    HandoverResult,
    LinksResult,
    NamesResult,
    PhaseResult,
    RendezvousResult,
    SmokeReport,
)
from clusterprep.smoke.names import check_names
from clusterprep.smoke.rendezvous import SETUP_TIMEOUT, check_rendezvous

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


class _Run:
    """One smoke run: the report so far, and the phases still wanted."""

    def __init__(self, fleet: Fleet, options: SmokeOptions, listener: SmokeListener) -> None:
        self.fleet = fleet
        self.options = options
        self.listener = listener
        self.report = SmokeReport(fleet.inventory.names, last_phase=options.last_phase)
        self.wanted = PHASES[:PHASES.index(options.last_phase) + 1]

    async def phase(self, blank: PhaseResult, work: Awaitable[PhaseResult],
                    conversations: list[Conversation] | None = None) -> PhaseResult | None:
        """Run one phase; its result when the next phase should follow, else None. Ctrl-C
        during phases 1-3 stops the node probes and marks the phase interrupted."""
        self.listener.phase_started(blank.name)
        started = time.monotonic()
        try:
            result = await work
        except asyncio.CancelledError:
            if conversations is None:
                raise
            await stop_all(conversations)
            acknowledge()
            result = blank
            result.interrupted = True
        result.seconds = time.monotonic() - started
        self.report.phases.append(result)
        self.listener.phase_finished(result)
        return result if result.ok and len(self.report.phases) < len(self.wanted) else None


async def smoke(fleet: Fleet, options: SmokeOptions,
                listener: SmokeListener | None = None) -> SmokeReport:
    run = _Run(fleet, options, listener or SmokeListener())
    conversations = start_all(fleet, fleet.inventory.nodes, "smoke_node")
    try:
        names = await _node_phases(run, conversations)
    finally:
        await finish_all(conversations, SETUP_TIMEOUT)
    if names is None:
        return run.report
    nproc = {node: max(1, names.gpus.get(node, 0)) for node in fleet.inventory.names}
    backend = _backend(options.backend, names)
    plan = CollectivePlan(
        master=names.master, port=options.master_port, backend=backend, nproc=nproc,
        python=options.python, exports=options.exports,
        sizes=options.sizes or DEFAULT_SIZES[backend], iters=options.iters,
        warmup=options.warmup, timeout=options.timeout, min_busbw=options.min_busbw)
    if await run.phase(CollectiveResult(), run_collective(fleet, plan, run.listener)) is None:
        return run.report
    await run.phase(HandoverResult(), _hand_over(fleet, names, options, nproc))
    return run.report


async def _node_phases(run: _Run, conversations: list[Conversation]) -> NamesResult | None:
    """Names, rendezvous and links; the names when the collective should follow."""
    options = run.options
    # The first answer waits for every connection to open too, at most --fanout at a time.
    first = SETUP_TIMEOUT + 0.1 * len(conversations)
    names = await run.phase(NamesResult(), check_names(run.fleet, conversations, first),
                            conversations)
    if not isinstance(names, NamesResult):
        return None
    if await run.phase(RendezvousResult(), check_rendezvous(
            conversations, names.master, options.master_port, options.dial_timeout),
            conversations) is None:
        return None
    if await run.phase(LinksResult(), check_links(
            conversations, names, backend=_backend(options.backend, names),
            pairs_up_to=options.pairs_up_to, seconds=options.link_seconds,
            dial_timeout=options.dial_timeout), conversations) is None:
        return None
    return names


async def _hand_over(fleet: Fleet, names: NamesResult, options: SmokeOptions,
                     nproc: dict[str, int]) -> HandoverResult:
    return hand_over(fleet.inventory.nodes, names.master, options.master_port, nproc,
                     options.hostfile)


def _backend(choice: str, names: NamesResult) -> str:
    """`auto`: nccl when every node has a GPU, gloo otherwise."""
    if choice != "auto":
        return choice
    return "nccl" if names.gpus and all(names.gpus.values()) else "gloo"
