"""`clusterprep smoke` on a terminal: a short table per phase, then the problems with their
next steps. (Progress lines: `smoke_progress.py`; `--json`: `smoke_json.py`; both without rich.)"""

from __future__ import annotations

from typing import Any

from rich.markup import escape
from rich.table import Table

from clusterprep.fleet.gather import fold
from clusterprep.render.console import node_problem, stdout_console
from clusterprep.render.smoke_progress import counted
from clusterprep.smoke.model import (
    CollectiveResult,
    HandoverResult,
    LinksResult,
    NamesResult,
    PhaseResult,
    RendezvousResult,
    SmokeReport,
)

ROWS = 16  # past this many rows, a table shows the rows that matter and a summary


def report_tables(report: SmokeReport) -> None:
    console = stdout_console()
    for phase in report.phases:
        make = _TABLES.get(type(phase))
        table = make(phase) if make is not None else None
        if table is not None:
            console.print(table)
        _notes(phase)
        for problem in phase.problems:
            step = f" Next: {problem.next_step}" if problem.next_step else ""
            node_problem(console, problem.where, problem.cause + "." + step)
    failed = report.failed_phase
    if report.interrupted:
        console.print(f"[yellow]smoke interrupted during {report.phases[-1].name}[/]")
    elif failed is not None:
        console.print(f"[red]smoke failed at {failed.name}[/]: the phases after it did not run")
    elif report.ok:
        console.print(f"[green]smoke passed: {counted(len(report.phases), 'phase')} on "
                      f"{counted(len(report.nodes), 'node')}[/]")


def _names(result: NamesResult) -> Table:
    table = Table(title=f"names: master address {result.master}")
    for column in ("name", "address", "alike on", "differs on"):
        table.add_column(column, overflow="fold")
    differ = [row for row in result.rows if row.others]
    rows = differ or result.rows
    for row in rows[:ROWS]:
        differs = "; ".join(f"{nodes}: {value}" for value, nodes in row.differing())
        table.add_row(escape(row.name), escape(row.address or "-"),
                      escape(fold(row.agreeing)) if row.agreeing else "-",
                      f"[red]{escape(differs)}[/]" if differs else "")
    alike = len(result.rows) - len(differ) if differ else max(0, len(rows) - ROWS)
    more = [f"{alike} more names resolve alike on every node"] if alike else []
    more += [f"{len(differ) - ROWS} more differ"] if len(differ) > ROWS else []
    table.caption = "; ".join(more) or None
    return table


def _rendezvous(result: RendezvousResult) -> Table:
    table = Table(title=f"rendezvous: {result.master}:{result.port} from every node")
    for column in ("nodes", "connect ms", "result"):
        table.add_column(column, justify="right" if column == "connect ms" else "left")
    good = [d for d in result.dials if d.ok]
    if good:
        slowest = max((d.ms or 0.0) for d in good)
        table.add_row(escape(fold(d.node for d in good)), f"<= {slowest:.1f}",
                      "[green]reached the head's listener[/]")
    for dial in result.dials:
        if not dial.ok:
            table.add_row(escape(dial.node), "-", f"[red]{escape(dial.cause)}[/]")
    return table


def _links(result: LinksResult) -> Table | None:
    if not result.ring:
        return None
    measured = result.seconds_measured > 0
    title = f"links: ring of {len(result.ring)}" + (
        f", {result.seconds_measured:g} s of traffic on every link at once" if measured else "")
    table = Table(title=title)
    for column in ("link", "connect ms", "MB/s", "verdict"):
        table.add_column(column, justify="right" if column in ("connect ms", "MB/s") else "left")
    shown = [l for l in result.ring if l.slow or not l.ok] if len(result.ring) > ROWS else \
        result.ring
    for link in shown[:ROWS]:
        verdict = ("[red]slow[/]" if link.slow else "[green]ok[/]") if link.ok else \
            f"[red]{escape(link.cause)}[/]"
        table.add_row(escape(f"{link.source} -> {link.target}"),
                      f"{link.ms:.1f}" if link.ms is not None else "-",
                      f"{link.mb_per_s:.1f}" if link.mb_per_s is not None else "-", verdict)
    notes = []
    if result.median_mb_per_s is not None:
        notes.append(f"median {result.median_mb_per_s:.1f} MB/s")
    if len(shown) < len(result.ring):
        notes.append(f"{len(result.ring) - len(shown)} more links ok")
    table.caption = "; ".join(notes) or None
    return table


def _collective(result: CollectiveResult) -> Table | None:
    if not result.sizes:
        return None
    per_node = sorted(set(result.nproc.values()))
    table = Table(title=f"collective: all_reduce, {result.backend}, "
                        f"{counted(result.world, 'rank')} on {counted(len(result.nproc), 'node')} "
                        f"({'/'.join(map(str, per_node))} per node), torch {result.torch}")
    for column in ("size (B)", "count", "type", "redop", "time (us)", "algbw (GB/s)",
                   "busbw (GB/s)", "#wrong"):
        table.add_column(column, justify="right")
    for size in result.sizes:
        table.add_row(str(size.bytes), str(size.count), "float", "sum", f"{size.time_us:.1f}",
                      f"{size.algbw:.3f}", f"{size.busbw:.3f}",
                      str(size.wrong) if not size.wrong else f"[red]{size.wrong}[/]")
    return table


_TABLES: dict[type, Any] = {NamesResult: _names, RendezvousResult: _rendezvous,
                            LinksResult: _links, CollectiveResult: _collective}


def _notes(phase: PhaseResult) -> None:
    """The lines under a phase's table that are not problems."""
    console = stdout_console()
    if isinstance(phase, LinksResult) and not phase.problems and not phase.pairs_checked:
        console.print("links: a single node has no links to check")
    if isinstance(phase, LinksResult) and phase.pairs_checked:
        kind = "every pair" if phase.all_pairs else "ring neighbours only"
        ok = phase.pairs_checked - len(phase.pair_failures)
        console.print(f"links: {ok} of {phase.pairs_checked} connections ok ({kind})")
        by_label: dict[str, list[str]] = {}
        for node, label in phase.interfaces.items():
            by_label.setdefault(label, []).append(node)
        for label, nodes in by_label.items():
            verb = "connects" if len(nodes) == 1 else "connect"
            console.print(f"  {escape(fold(nodes))} {verb} from {escape(label)}",
                          soft_wrap=True)
    if isinstance(phase, CollectiveResult) and phase.swept:
        if phase.leftovers:
            left = counted(len(phase.leftovers), "process", "processes")
            were = "was" if len(phase.leftovers) == 1 else "were"
            console.print(f"collective: {left} of the run {were} still alive at its end: "
                          "noted and killed")
        else:
            console.print("collective: no process of the run is left on any node")
    if isinstance(phase, HandoverResult) and phase.hosts:
        console.print(f"hostfile: {escape(phase.hostfile)} ({counted(len(phase.hosts), 'host')}, "
                      f"{escape(phase.hosts[0])} first), for colossalai run, pdsh -w ^FILE "
                      "and clush --hostfile", soft_wrap=True)
        console.print(f"DeepSpeed's hostfile: {escape(phase.deepspeed_hostfile)} (HOST slots=N), "
                      "for deepspeed --hostfile", soft_wrap=True)
        console.print(f"launch with colossalai:\n  {escape(phase.colossalai)}", soft_wrap=True)
        console.print(f"or with deepspeed:\n  {escape(phase.deepspeed)}", soft_wrap=True)
        console.print("or with torchrun, on each node (node_rank in hostfile order):",
                      soft_wrap=True)
        for host, line in list(zip(phase.hosts, phase.torchrun))[:ROWS]:
            console.print(f"  {escape(host)}: {escape(line)}", soft_wrap=True)
