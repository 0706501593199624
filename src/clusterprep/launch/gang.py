"""The gang: one supervisor probe per node (`probes/launch_node.py`), held open as one
conversation (`Fleet.converse`); the first failure (a launcher that exits non-zero, a lost
session, a hung node) or Ctrl-C stops every other node; then one sweep per node verifies that
nothing of the run is left (`probes/smoke_sweep.py`, by the run's marker).

A node's supervisor ends its own run whenever it ends (its command's exit, the head's stop,
the end of its stdin), so even a head that dies leaves nothing behind on a reachable node.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from clusterprep import probes
from clusterprep.answers import Misfit, read
from clusterprep.errors import HUNG as HUNG_KIND
from clusterprep.errors import PROBE_FAILED, NodeError
from clusterprep.events import JsonLines
from clusterprep.fleet import CommandResult, Fleet
from clusterprep.interrupts import acknowledge
from clusterprep.inventory import Node
from clusterprep.launch.answers import EVENTS, Exit, Hung, Left, Line
from clusterprep.launch.logs import RunLogs
from clusterprep.launch.model import (
    EXITED,
    HUNG,
    LOST,
    OOM,
    SIGNALLED,
    STOPPED,
    Ending,
    LaunchReport,
    Process,
)
from clusterprep.launch.plan import MARKER, LaunchPlan
from clusterprep.smoke.answers import Found, Swept

TAIL_LINES = 80  # torchrun's own traceback and failure box alone are ~35
STOP_MARGIN = 15.0  # beyond the grace: the supervisor's own SIGKILL wait and its report
SWEEP_TIMEOUT = 30.0
STOP = b'{"stop": true}\n'
CAUSE_WINDOW = 5.0  # seconds: ranks that a death takes down end within this
# torchrun's failure summary names the failed rank and how it ended:
# "rank      : 3 (local_rank: 1)", "exitcode  : -9 (pid: 1234)"
_SUMMARY_RANK = re.compile(r"^\s*rank\s*:\s*(\d+)\b")
_SUMMARY_EXIT = re.compile(r"^\s*exitcode\s*:\s*(-?\d+)\b")
_LINE_RANK = re.compile(r"^\[rank(\d+)\]:")  # torch prefixes what a rank raises

# What a rank says when another rank's failure took it down: the cause is elsewhere.
_CONSEQUENCE = re.compile(
    r"Connection reset by peer|Connection closed by peer|Broken pipe|connection refused|"
    r"remote process exited|Socket Timeout|DistNetworkError|DistBackendError", re.IGNORECASE)


class LaunchListener:
    """Told of every line and ending as they arrive; does nothing by default (renderers
    override)."""

    def line(self, node: str, rank: int | None, text: str) -> None:
        """One line of a node's output; `rank` where torchrun's prefix names it."""

    def failed(self, ending: Ending) -> None:
        """The first failure heard: every other node is being stopped."""


@dataclass
class _Node:
    """What the head knows of one node's run while it lasts."""

    tail: deque[str] = field(default_factory=lambda: deque(maxlen=TAIL_LINES))
    exit: Exit | None = None
    ending: Ending | None = None
    peer_lost: bool = False


async def run_gang(fleet: Fleet, nodes: list[Node], plan: LaunchPlan, run: str,
                   report: LaunchReport, *, hung_after: float, grace: float,
                   logs: RunLogs, listener: LaunchListener) -> None:
    """Run the plan on `nodes` until it ends; the endings (first failure first), what the
    sweep found, and whether it was interrupted, into `report`."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    stop = asyncio.Event()
    states = {node.name: _Node() for node in nodes}
    source = probes.load("launch_node")

    def opening(node: Node) -> bytes:
        request = {"command": plan.command(node.name), "cwd": plan.cwd,
                   "env": plan.environment(node.name), "marker": f"{MARKER}={run}",
                   "hung_after": hung_after, "grace": grace}
        return source.encode() + json.dumps(request).encode() + b"\n"

    async def then() -> AsyncIterator[bytes]:
        await stop.wait()
        yield STOP

    def ended(name: str, ending: Ending) -> None:
        state = states[name]
        if state.ending is not None:
            return
        ending.seconds = loop.time() - start
        ending.peer_lost = state.peer_lost
        state.ending = ending
        if not ending.ok and ending.how != STOPPED and not stop.is_set():
            stop.set()
            listener.failed(ending)

    def on_event(name: str, raw: dict[str, Any]) -> None:
        state = states[name]
        kind = EVENTS.get(raw.get("event"))
        if kind is None:
            return
        try:
            event = read(kind, raw)
        except Misfit as misfit:
            error = misfit.error(name, "launch_node")
            ended(name, Ending(name, LOST, detail=f"{error.kind}: {error.message}",
                               tail=list(state.tail)))
            return
        if isinstance(event, Line):
            state.tail.append(event.text)
            state.peer_lost = state.peer_lost or bool(_CONSEQUENCE.search(event.text))
            logs.line(name, event.text)
            match = _LINE_RANK.match(event.text)
            listener.line(name, int(match.group(1)) if match else None, event.text)
        elif isinstance(event, Hung):
            ended(name, _hung(name, event.processes, list(state.tail)))
        elif isinstance(event, Exit):
            state.exit = event
            ended(name, _exited(name, list(state.tail), event))
        elif isinstance(event, Left):
            report.left += [_process(name, p) for p in event.left]
            report.survivors += [_process(name, p) for p in event.left
                                 if p.pid in event.survivors]

    def on_end(result: CommandResult) -> None:
        if states[result.node].exit is not None:
            return
        error = result.error or NodeError(PROBE_FAILED, "the node's supervisor exited "
                                          f"{result.exit_code}: " + " | ".join(
                                              result.stderr.decode(errors="replace")
                                              .strip().splitlines()[-3:]))
        ended(result.node, Ending(result.node, HUNG if error.kind == HUNG_KIND else LOST,
                                  detail=f"{error.kind}: {error.message}",
                                  tail=list(states[result.node].tail)))

    gang = asyncio.ensure_future(fleet.converse(
        probes.command(source), opening, then, on_output=JsonLines(on_event), on_end=on_end,
        nodes=nodes))
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait([gang, stopped], return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        report.interrupted = True
        acknowledge()
        stop.set()
    stopped.cancel()
    stopping = loop.time()
    if not gang.done():
        stop.set()
        await asyncio.wait([gang], timeout=grace + STOP_MARGIN)
        if not gang.done():  # a node that never answered the stop: its session is cut
            gang.cancel()
        await asyncio.gather(gang, return_exceptions=True)
    await _verify(fleet, nodes, run, report)
    if stop.is_set():
        report.teardown_seconds = loop.time() - stopping
    report.endings = _ordered([s.ending for s in states.values() if s.ending is not None])


def _process(node: str, found: Found) -> Process:
    return Process(node, found.pid, found.command, found.state)


def _exited(name: str, tail: list[str], event: Exit) -> Ending:
    rank = _last(_SUMMARY_RANK, tail)
    worker = _last(_SUMMARY_EXIT, tail)
    if event.oom:
        return Ending(name, OOM, event.code, event.signal, rank, "the kernel's OOM "
                      f"killer killed pid {', '.join(map(str, event.oom))}", tail)
    if worker is not None and worker < 0:  # torchrun exits 1 when a worker was killed
        return Ending(name, SIGNALLED, event.code, -worker, rank,
                      f"a worker was killed by signal {-worker}", tail)
    if worker is not None:  # a worker failed on its own, even if the stop came before
        return Ending(name, EXITED, event.code, event.signal, rank,
                      f"a worker exited {worker}", tail)
    if event.stopped:
        return Ending(name, STOPPED, event.code, event.signal,
                      detail="stopped by the teardown", tail=tail)
    if event.signal is not None:
        return Ending(name, SIGNALLED, None, event.signal, rank, tail=tail)
    return Ending(name, EXITED, event.code, None, rank, tail=tail)


def _last(pattern: re.Pattern[str], tail: list[str]) -> int | None:
    """The number the last line matching `pattern` gives, if any."""
    return next((int(m.group(1)) for line in reversed(tail) if (m := pattern.match(line))),
                None)


def _hung(name: str, stopped: list[Found], tail: list[str]) -> Ending:
    ranks = [p.rank for p in stopped if p.rank is not None]
    return Ending(name, HUNG, rank=ranks[0] if ranks else None, detail="stopped (state T): "
                  + ", ".join(f"pid {p.pid} ({p.command[:80]})" for p in stopped),
                  tail=tail)


def _consequence(ending: Ending) -> bool:
    return ending.how == EXITED and ending.peer_lost


def _ordered(endings: list[Ending]) -> list[Ending]:
    """The first failure first, then every other ending in the order the head learnt it.
    A failure that only names a lost peer, with another failure heard within
    CAUSE_WINDOW, is that other's consequence: the other comes first."""
    by_time = sorted(endings, key=lambda e: e.seconds or 0.0)
    failures = [e for e in by_time if not e.ok and e.how != STOPPED]
    first = failures[0] if failures else None
    if first is not None and _consequence(first):
        first = next((e for e in failures if not _consequence(e)
                      and (e.seconds or 0.0) - (first.seconds or 0.0) <= CAUSE_WINDOW), first)
    return ([first] if first else []) + [e for e in by_time if e is not first]


async def _verify(fleet: Fleet, nodes: list[Node], run: str, report: LaunchReport) -> None:
    """On every node: any process of the run still alive is named and killed; a node that
    cannot be asked is named as unverified."""
    answers, _ = await fleet.probe("smoke_sweep", {"marker": f"{MARKER}={run}"},
                                   timeout=SWEEP_TIMEOUT, nodes=nodes, shape=Swept)
    report.verified = []
    for answer in answers:
        swept: Swept | None = answer.answer
        if swept is None:
            assert answer.error is not None
            report.unverified[answer.node] = f"{answer.error.kind}: {answer.error.message}"
            continue
        report.verified.append(answer.node)
        found = {p.pid: _process(answer.node, p) for p in swept.found}
        report.left += found.values()
        report.survivors += [found[pid] for pid in swept.survivors if pid in found]
