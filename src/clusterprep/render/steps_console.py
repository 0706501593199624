"""`up`, `plan` and `down` on a terminal: live progress, then a nodes-by-steps table and causes.

Nodes whose row is identical are folded into one row (`node[01-16]`), as `clush -b` does, so
the table stays readable on a thousand nodes. Progress is a live display on a terminal and
plain lines otherwise (logs, CI).
"""

from __future__ import annotations

import sys
import time

from rich.console import Console
from rich.live import Live
from rich.table import Table

from clusterprep.fleet.gather import fold
from clusterprep.steps.base import (
    CHANGED, FAILED, OK, SKIPPED, WOULD_CHANGE, Outcome, Step,
)
from clusterprep.steps.runner import Listener, UpResult

_STYLE = {OK: "green", CHANGED: "cyan", FAILED: "red", SKIPPED: "yellow", WOULD_CHANGE: "cyan"}


def _console() -> Console:
    return Console(highlight=False, width=None if sys.stdout.isatty() else 200)


class StepProgress(Listener):
    """Live nodes-by-steps progress on a terminal; one plain line per finished step otherwise."""

    def __init__(self, steps: list[Step], nodes: int) -> None:
        self.console = Console(stderr=True, highlight=False)
        self.steps = steps
        self.nodes = nodes
        self.rows: dict[str, str] = {s.name: "waiting" for s in steps}
        self.started = 0.0
        self.live: Live | None = None
        if self.console.is_terminal:
            self.live = Live(self._table(), console=self.console, transient=True,
                             refresh_per_second=4)
            self.live.start()

    def _table(self) -> Table:
        table = Table.grid(padding=(0, 2))
        for step in self.steps:
            table.add_row(step.name, self.rows[step.name])
        return table

    def step_started(self, step: Step, nodes: int) -> None:
        self.started = time.monotonic()
        self.rows[step.name] = f"[bold]running on {nodes} node{'s' if nodes != 1 else ''}...[/]"
        if self.live is not None:
            self.live.update(self._table())

    def step_finished(self, step: Step, outcomes: dict[str, Outcome]) -> None:
        counts: dict[str, int] = {}
        for outcome in outcomes.values():
            counts[outcome.state] = counts.get(outcome.state, 0) + 1
        seconds = time.monotonic() - self.started
        text = ", ".join(f"{n} {state}" for state, n in counts.items()) + f" ({seconds:.1f} s)"
        self.rows[step.name] = text
        if self.live is not None:
            self.live.update(self._table())
        else:
            self.console.print(f"{step.name}: {text}", markup=False)

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()


def summary(result: UpResult) -> None:
    """The final table (ok / changed / failed / skipped per node and step), then the causes."""
    console = _console()
    verb = "plan" if result.dry_run else "up"
    table = Table(title=f"clusterprep {verb}: {len(result.nodes)} node{'s' if len(result.nodes) != 1 else ''}, "
                  f"recipe {result.recipe}")
    table.add_column("nodes")
    for step in result.steps:
        table.add_column(step)
    rows: dict[tuple[str, ...], list[str]] = {}
    for node in result.nodes:
        key = tuple(result.outcome(step, node).state for step in result.steps)
        rows.setdefault(key, []).append(node)
    for states, nodes in rows.items():
        cells = [f"[{_STYLE.get(s, 'white')}]{s}[/]" for s in states]
        table.add_row(fold(nodes), *cells)
    console.print(table)
    details(console, result)
    if result.dry_run:
        console.print(f"{result.changes} change{'s' if result.changes != 1 else ''} to make"
                      if result.changes else "nothing to do")
    failed = result.failed_nodes
    if failed:
        console.print(f"[red]{len(failed)} of {len(result.nodes)} nodes failed: {fold(failed)}[/]"
                      " (run `clusterprep up` again once fixed: it resumes)")
    if result.interrupted:
        console.print("[yellow]interrupted by the user[/]")


def details(console: Console, result: UpResult) -> None:
    """Why: every failed, skipped, changed or would-change outcome, grouped by message."""
    for step in result.steps:
        groups: dict[tuple[str, str], list[str]] = {}
        for node in result.nodes:
            outcome = result.outcome(step, node)
            if outcome.state in (FAILED, SKIPPED, CHANGED, WOULD_CHANGE):
                groups.setdefault((outcome.state, outcome.message), []).append(node)
        for (state, message), nodes in groups.items():
            style = _STYLE.get(state, "white")
            console.print(f"[{style}]{step} {state}[/] {fold(nodes)}: ", end="")
            console.print(message, markup=False, soft_wrap=True)


def down_summary(result: UpResult) -> None:
    console = _console()
    for step in result.steps:
        groups: dict[tuple[str, str], list[str]] = {}
        for node in result.nodes:
            outcome = result.outcome(step, node)
            groups.setdefault((outcome.state, outcome.message), []).append(node)
        for (state, message), nodes in groups.items():
            console.print(f"[{_STYLE.get(state, 'white')}]{step} {state}[/] {fold(nodes)}: ",
                          end="")
            console.print(message, markup=False, soft_wrap=True)
