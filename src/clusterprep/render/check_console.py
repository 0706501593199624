"""`clusterprep check` on a terminal: a matrix of nodes by checks, then the findings, each
with what to do about it."""

from __future__ import annotations

from rich.markup import escape

from clusterprep.check.drift import no_drift
from clusterprep.check.model import CRITICAL, DRIFT, CheckReport
from clusterprep.fleet.gather import fold
from clusterprep.render.console import node_problem, stdout_console


def check_report(report: CheckReport) -> None:
    from rich.table import Table

    console = stdout_console()
    names = report.check_names
    rows = report.matrix()
    table = Table(title="install checks")
    table.add_column("node")
    for name in names or ["reached"]:  # a recipe without checks: the column says who answered
        table.add_column(name, overflow="fold")
    for row in rows:
        if row.error is not None:
            cells = [f"[red]{escape(row.error.kind)}[/]"] + [""] * max(0, len(names) - 1)
        else:
            cells = [_cell(row.checks.get(name)) for name in names] or ["yes"]
        table.add_row(escape(fold(row.nodes)) + (" *" if row.head else ""), *cells)
    if names or any(row.error for row in rows):
        console.print(table)
    for row in rows:
        nodes = fold(row.nodes)
        if row.error is not None:
            node_problem(console, nodes, f"{row.error.kind}: {row.error.message}")
        for c in row.checks.values():
            if not c.ok:
                node_problem(console, nodes, f"{c.name}: {c.message or ''}")
    _findings(report)


def _cell(result) -> str:
    if result is None:
        return "-"
    value = escape((result.value or "").strip()[:40])
    return f"[green]ok[/] {value}" if result.ok else f"[red]FAIL[/] {value}"


def _findings(report: CheckReport) -> None:
    console = stdout_console()
    if not report.findings:
        compared, words = no_drift(report.nodes)
        console.print(f"[{'green' if compared else 'yellow'}]{words}[/]")
        return
    critical = sum(1 for f in report.findings if f.severity == CRITICAL)
    count = len(report.findings)
    console.print(f"\n{count} finding{'s' if count != 1 else ''} ({critical} critical)")
    for finding in report.findings:
        colour = "red" if finding.severity == CRITICAL else "yellow"
        verb = ("differs" if len(finding.nodes) == 1 else "differ") if finding.kind == DRIFT \
            else "unwell"
        console.print(f"[{colour}]{finding.severity}[/] {escape(finding.item)}: "
                      f"{escape(fold(finding.nodes))} {verb}", soft_wrap=True)
        for value, nodes in finding.values.items():
            marker = "reference" if value == finding.reference else "         "
            console.print(f"    {marker} {escape(fold(nodes))}: {escape(value)}",
                          soft_wrap=True)
        console.print(f"    [bold]advice[/]    {escape(finding.advice)}", soft_wrap=True)
