"""`up`, `plan` and `down` on a terminal: a live nodes-by-steps grid, then the final one and
the causes.

Nodes whose row is identical are folded into one row (`node[01-16]`), as `clush -b` does, so
the table stays readable on a thousand nodes. Progress is a live display on a terminal and
plain lines otherwise (logs, CI).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from clusterprep import suggest
from clusterprep.fleet.gather import fold
from clusterprep.render.console import stderr_console, stdout_console
from clusterprep.steps import all_steps
from clusterprep.steps.base import (
    CHANGED, FAILED, OK, SKIPPED, WOULD_CHANGE, Outcome, Step,
)
from clusterprep.steps.runner import Listener, UpResult

_STYLE = {OK: "green", CHANGED: "cyan", FAILED: "red", SKIPPED: "yellow", WOULD_CHANGE: "cyan",
          "running": "bold", "waiting": "dim"}


class StepProgress(Listener):
    """Live nodes-by-steps grid on a terminal (identical rows folded); one plain line per
    finished step otherwise."""

    def __init__(self, steps: list[Step], nodes: list[str]) -> None:
        self.console = stderr_console()
        self.steps = [step.name for step in steps]
        self.nodes = nodes
        self.states = {node: {step: "waiting" for step in self.steps} for node in nodes}
        self.started = 0.0
        self.live: Live | None = None
        if self.console.is_terminal:
            self.live = Live(self._grid(), console=self.console, transient=True,
                             refresh_per_second=4)
            self.live.start()

    def _grid(self) -> Table:
        return _grid("clusterprep up", self.nodes, self.steps,
                     lambda step, node: self.states[node][step])

    def step_started(self, step: Step, nodes: int) -> None:
        self.started = time.monotonic()
        for node in self.nodes:  # the runner leaves out nodes that failed an earlier step
            if not {FAILED, SKIPPED} & set(self.states[node].values()):
                self.states[node][step.name] = "running"
        if self.live is not None:
            self.live.update(self._grid())

    def step_finished(self, step: Step, outcomes: dict[str, Outcome]) -> None:
        counts: dict[str, int] = {}
        for node, outcome in outcomes.items():
            self.states[node][step.name] = outcome.state
            counts[outcome.state] = counts.get(outcome.state, 0) + 1
        if self.live is not None:
            self.live.update(self._grid())
        else:
            seconds = time.monotonic() - self.started
            text = ", ".join(f"{n} {state}" for state, n in counts.items())
            self.console.print(f"{step.name}: {text} ({seconds:.1f} s)", markup=False)

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()


def _grid(title: str, nodes: list[str], steps: list[str],
          state_of: Callable[[str, str], str]) -> Table:
    """Nodes by steps, each cell a state; nodes whose rows are identical share one row."""
    table = Table(title=title)
    table.add_column("nodes")
    for step in steps:
        table.add_column(step)
    rows: dict[tuple[str, ...], list[str]] = {}
    for node in nodes:
        rows.setdefault(tuple(state_of(step, node) for step in steps), []).append(node)
    for states, members in rows.items():
        table.add_row(fold(members), *(f"[{_STYLE.get(s, 'white')}]{s}[/]" for s in states))
    return table


def summary(result: UpResult) -> None:
    """The final table (ok / changed / failed / skipped per node and step), then the causes."""
    console = stdout_console()
    verb = "plan" if result.dry_run else "up"
    plural = "s" if len(result.nodes) != 1 else ""
    title = f"clusterprep {verb}: {len(result.nodes)} node{plural}, recipe {result.recipe}"
    console.print(_grid(title, result.nodes, result.steps,
                        lambda step, node: result.outcome(step, node).state))
    details(console, result)
    if result.dry_run:
        console.print(f"{result.changes} change{'s' if result.changes != 1 else ''} to make"
                      if result.changes else "nothing to do")
    failed = result.failed_nodes
    if failed:
        again = escape(suggest.command(verb, *_selection(result.steps)))
        console.print(f"[red]{len(failed)} of {len(result.nodes)} nodes failed: {fold(failed)}[/]"
                      f" (run `{again}` again once fixed: it resumes)")
    if result.interrupted:
        console.print("[yellow]interrupted by the user[/]")


def _selection(steps: list[str]) -> list[str]:
    """`--only STEPS` when the run did not run every step (the repo step only runs when the
    recipe has a [repo]: a run without it ran every step too)."""
    every = [step.name for step in all_steps()]
    if steps in (every, [name for name in every if name != "repo"]):
        return []
    return ["--only", ",".join(steps)]


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
    console = stdout_console()
    for step in result.steps:
        groups: dict[tuple[str, str], list[str]] = {}
        for node in result.nodes:
            outcome = result.outcome(step, node)
            groups.setdefault((outcome.state, outcome.message), []).append(node)
        for (state, message), nodes in groups.items():
            console.print(f"[{_STYLE.get(state, 'white')}]{step} {state}[/] {fold(nodes)}: ",
                          end="")
            console.print(message, markup=False, soft_wrap=True)
