"""`clusterprep launch` for people and scripts: every node's lines live, prefixed by node (and
rank where torch names it); then the story: the first failure, its last lines, the other
endings as its consequences, the teardown and what the sweep found on every node; `--json`:
the same as one object (also the launch's summary.json)."""

from __future__ import annotations

import dataclasses
import re
import shlex
import sys
from typing import Any, TextIO

from clusterprep import suggest
from clusterprep.fleet.gather import fold
from clusterprep.launch.gang import LaunchListener
from clusterprep.launch.model import (
    EXITED,
    HUNG,
    LOST,
    OOM,
    SIGNALLED,
    STOPPED,
    UNSTARTED,
    Ending,
    LaunchReport,
    Process,
)

SHOWN_LINES = 12  # of the first failure's last lines, on the terminal (all in the log)
# torchrun's line when a worker failed ("... api.py:1002] failed (exitcode: 1) local_rank:
# 0 (pid: 12) of binary: ..."), and its failure box's lines that matter
_AGENT_FAILED = re.compile(r"multiprocessing/api\.py:\d+\] failed \(exitcode: ")
_SUMMARY = re.compile(r"^\s*(rank|exitcode|host)\s*:")


class LiveLines(LaunchListener):
    """Each node's output as it comes, `node01 r3 | text`; the first failure on stderr."""

    def __init__(self, out: TextIO) -> None:
        self.out = out

    def line(self, node: str, rank: int | None, text: str) -> None:
        where = node if rank is None else f"{node} r{rank}"
        print(f"{where} | {text}", file=self.out, flush=True)

    def failed(self, ending: Ending) -> None:
        print(f"launch: {_who(ending)} {how(ending)}: ending the run on every node",
              file=sys.stderr, flush=True)


def how(ending: Ending) -> str:
    """How a node's launcher ended, in words."""
    if ending.how in (EXITED, SIGNALLED, OOM) and ending.code is None:
        said = f"killed by signal {ending.signal}"
    elif ending.how in (EXITED, SIGNALLED, OOM):
        said = f"exited {ending.code}"
    else:
        said = {HUNG: "hung", LOST: "lost its session", STOPPED: "stopped by the teardown",
                UNSTARTED: "could not be reached: nothing was started"}[ending.how]
    return said if not ending.detail or ending.detail in said else f"{said}; {ending.detail}"


def story_lines(tail: list[str]) -> list[str]:
    """A failure's last lines worth reading: what the rank said before torchrun's own
    traceback and failure box, then the box's rank and exit code lines."""
    agent = next((i for i, line in enumerate(tail) if _AGENT_FAILED.search(line)), None)
    if agent is None:
        return tail[-SHOWN_LINES:]
    summary = [line for line in tail[agent:] if _SUMMARY.match(line)]
    return tail[:agent][-SHOWN_LINES:] + summary


def _who(ending: Ending) -> str:
    return ending.node if ending.rank is None else f"{ending.node} (rank {ending.rank})"


def _process(process: Process) -> str:
    why = f": {process.why}" if process.why else ""
    return f"pid {process.pid} ({process.command[:120]}, {process.state}){why}"


def relaunch(report: LaunchReport, *words: str, without: tuple[str, ...] = ()) -> str:
    """The launch again as it ran, with `words` added and the nodes `without` left out too,
    quoted to paste."""
    excluded = sorted({*report.excluded, *without})
    exclude = ("--exclude", fold(excluded)) if excluded else ()
    return (suggest.command("launch", *report.again, *exclude, *words) + " -- "
            + shlex.join(report.argv))


def _without(report: LaunchReport, nodes: list[str], when: str = "") -> str:
    """What to do about nodes that failed: relaunch without them, while some node is left."""
    if set(report.nodes) <= set(nodes):
        return f"launch again{when}: " + relaunch(report)
    them = "it" if len(nodes) == 1 else "them"
    return f"relaunch without {them}{when}: " + relaunch(report, without=tuple(nodes))


def report_text(report: LaunchReport) -> None:
    from rich.markup import escape

    from clusterprep.render.console import node_problem, stdout_console

    console = stdout_console()
    if report.dry_run:
        for node, line in report.commands.items():
            console.print(f"[bold]{escape(node)}[/]: " + escape(line), soft_wrap=True)
    for process in report.stale:
        state = "ended (--kill-stale)" if report.stale_killed else "in the way"
        node_problem(console, process.node, f"{_process(process)}; {state}")
    if report.blocking_stale:
        console.print("Nothing was started. End them (`kill PID` on the node), or relaunch "
                      "with --kill-stale: " + escape(relaunch(report, "--kill-stale")),
                      soft_wrap=True)
    unstarted = [e for e in report.endings if e.how == UNSTARTED]
    for ending in unstarted:
        node_problem(console, ending.node, how(ending))
    if unstarted:
        console.print("Nothing was started on any node. Bring them back, or "
                      + escape(_without(report, [e.node for e in unstarted])), soft_wrap=True)
    first = report.first_failure
    if first is not None and first.how != UNSTARTED:
        console.print(f"[red]{escape(_who(first))} failed first[/]: " + escape(how(first)),
                      soft_wrap=True)
        for line in story_lines(first.tail):
            console.print("  | " + escape(line), soft_wrap=True)
        others = [e for e in report.endings if e is not first]
        if others:
            console.print("then, as its consequences:")
        for ending in others:
            console.print(f"  {escape(_who(ending))}: " + escape(how(ending)), soft_wrap=True)
        said = _without(report, [first.node], ", once it is looked at")
        console.print(escape(said[0].upper() + said[1:]), soft_wrap=True)
    _teardown(console, report)
    if report.interrupted:
        console.print("[yellow]launch interrupted[/]: the run was ended on every node")
    elif report.ok and not report.dry_run:
        console.print(f"[green]launch done[/]: every node's launcher exited 0 "
                      f"({len(report.nodes)} nodes, {report.seconds:.1f} s)")
    if report.log_dir:
        console.print("logs: " + escape(report.log_dir), soft_wrap=True)


def _teardown(console: Any, report: LaunchReport) -> None:
    from rich.markup import escape

    from clusterprep.render.console import node_problem

    if not report.started or report.dry_run or not (report.verified or report.unverified):
        return
    ended = f" in {report.teardown_seconds:.1f} s" if report.teardown_seconds else ""
    if report.verified:
        console.print(f"verified: nothing of the run left on {escape(fold(report.verified))}"
                      + (f" (ended{ended})" if ended else ""), soft_wrap=True)
    for process in report.survivors:
        node_problem(console, process.node, f"{_process(process)} survived SIGKILL")
    for node, why in report.unverified.items():
        node_problem(console, node, f"not verified ({why}): look for processes with "
                                    f"CLUSTERPREP_LAUNCH_RUN={report.run} in their environment")


def document(report: LaunchReport, warnings: list[str]) -> dict[str, Any]:
    """The `--json` object (and summary.json): every ending, first failure first."""
    first = report.first_failure
    return {
        "ok": report.ok, "interrupted": report.interrupted, "run": report.run,
        "nodes": report.nodes, "master": report.master, "port": report.port,
        "dry_run": report.dry_run, "commands": report.commands, "log_dir": report.log_dir,
        "first_failure": dict(dataclasses.asdict(first), said=how(first)) if first else None,
        "endings": [dict(dataclasses.asdict(e), said=how(e)) for e in report.endings],
        "stale": [dataclasses.asdict(p) for p in report.stale],
        "stale_killed": report.stale_killed,
        "left": [dataclasses.asdict(p) for p in report.left],
        "survivors": [dataclasses.asdict(p) for p in report.survivors],
        "verified": report.verified, "unverified": report.unverified,
        "seconds": round(report.seconds, 3),
        "teardown_seconds": None if report.teardown_seconds is None
        else round(report.teardown_seconds, 3),
        "warnings": warnings,
    }
