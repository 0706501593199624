"""What people read on a terminal: tables, grouped outputs, live lines, failure summaries."""

from __future__ import annotations

import sys
from typing import BinaryIO

from functools import cache
from typing import TYPE_CHECKING

from clusterprep.fleet import CommandResult, FleetResult
from clusterprep.fleet.gather import fold, group_outputs
from clusterprep.nodes import Survey

if TYPE_CHECKING:
    from rich.console import Console

# rich is imported on first use: `clusterprep run` on a healthy cluster never needs it, and
# its import is a tenth of a second of every invocation.


# emoji=False everywhere: what nodes report is never markup, and a PCI bus id such as
# 0000:AB:00.0 holds rich's emoji code `:ab:`.


@cache
def stderr_console() -> Console:
    from rich.console import Console

    return Console(stderr=True, highlight=False, emoji=False)


def stdout_console() -> Console:
    from rich.console import Console

    # Piped output is read by people too (logs, CI): don't wrap tables at rich's default 80.
    return Console(highlight=False, emoji=False, width=None if sys.stdout.isatty() else 200)


def note(message: str) -> None:
    print(message, file=sys.stderr)


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)


def node_problem(console: Console, node: str, problem: str) -> None:
    """One line under a table: the node in red, then what went wrong there, as plain text."""
    from rich.markup import escape
    console.print(f"[red]{escape(node)}[/]: " + escape(problem), soft_wrap=True)


def node_problems(console: Console, problems: list[tuple[str, str]]) -> None:
    """(node, problem) lines under a table, nodes with the same problem folded into one line
    (`node[01-64]: ...`), in the order each problem first appears."""
    nodes_by_problem: dict[str, list[str]] = {}
    for node, problem in problems:
        nodes_by_problem.setdefault(problem, []).append(node)
    for problem, nodes in nodes_by_problem.items():
        node_problem(console, fold(nodes), problem)


def nodes_table(result: Survey) -> None:
    from rich.markup import escape
    from rich.table import Table

    console = stdout_console()
    reports = result.reports
    table = Table(title=f"{len(reports)} node{'s' if len(reports) != 1 else ''}")
    slurm = any(r.slurm_state is not None for r in reports)
    columns = ["node", "head", *(["slurm"] if slurm else []), "reachable", "rtt ms", "hostname",
               "os", "cpus", "gpus"]
    for column in columns:
        table.add_column(column, justify="right" if column in ("rtt ms", "cpus", "gpus")
                         else "left")
    for r in reports:
        gpus = escape(f"{r.gpus} x {r.gpu_model}") if r.gpus else "0"
        table.add_row(
            escape(r.node),
            "*" if r.head else "",
            *([escape(r.slurm_state or "-")] if slurm else []),
            "[green]yes[/]" if r.reachable else "[red]no[/]",
            f"{r.rtt_ms:.1f}" if r.rtt_ms is not None else "-",
            escape(r.hostname or "-"),
            escape(r.os or "-"),
            str(r.cpus) if r.cpus is not None else "-",
            gpus,
        )
    console.print(table)
    node_problems(console, [(r.node, f"{r.error.kind}: {r.error.message}")
                            for r in reports if r.error is not None])
    if result.interrupted:
        console.print("[yellow]interrupted: nodes not yet answered are shown as unreachable[/]")


def grouped_output(outcome: FleetResult, out: BinaryIO | None = None) -> None:
    """Identical outputs once, under their folded node set (as `clush -b`), then failures."""
    out = out or sys.stdout.buffer
    for group in group_outputs(outcome.results):
        header = f"{group.folded} ({len(group.nodes)})"
        rule = "-" * max(16, min(len(header), 78))
        out.write(f"{rule}\n{header}\n{rule}\n".encode())
        _write_block(out, group.stdout)
        _write_block(out, group.stderr)
    out.flush()
    failure_summary(outcome)


def _write_block(out: BinaryIO, data: bytes) -> None:
    if data:
        out.write(data if data.endswith(b"\n") else data + b"\n")


def failure_summary(outcome: FleetResult) -> None:
    """Which nodes failed and why, folded by identical cause; nothing when all succeeded."""
    causes: dict[str, list[str]] = {}
    for r in outcome.results:
        if not r.ok:
            causes.setdefault(_cause(r), []).append(r.node)
    if not causes and not outcome.interrupted:
        return
    stderr_console().print()
    failed = sum(len(nodes) for nodes in causes.values())
    stderr_console().print(f"[red]{failed} of {len(outcome.results)} nodes failed[/]")
    for cause, nodes in causes.items():
        stderr_console().print(f"  {fold(nodes)}: {cause}", soft_wrap=True, markup=False)
    if outcome.interrupted:
        stderr_console().print("[yellow]interrupted by the user[/]")


def _cause(result: CommandResult) -> str:
    if result.error is not None:
        return f"{result.error.kind}: {result.error.message}"
    return f"exit code {result.exit_code}"


class LinePrinter:
    """`--stream`: each complete line as it arrives, prefixed by its node."""

    def __init__(self, out: BinaryIO | None = None, err: BinaryIO | None = None) -> None:
        self._streams = {"stdout": out or sys.stdout.buffer, "stderr": err or sys.stderr.buffer}
        self._partial: dict[tuple[str, str], bytes] = {}

    def __call__(self, node: str, stream: str, chunk: bytes) -> None:
        data = self._partial.pop((node, stream), b"") + chunk
        *lines, rest = data.split(b"\n")
        if rest:
            self._partial[(node, stream)] = rest
        target = self._streams[stream]
        prefix = node.encode() + b": "
        target.write(b"".join(prefix + line + b"\n" for line in lines))
        target.flush()

    def flush(self) -> None:
        """Print what is left of lines without a final newline."""
        for (node, stream), rest in self._partial.items():
            self._streams[stream].write(node.encode() + b": " + rest + b"\n")
            self._streams[stream].flush()
        self._partial.clear()
