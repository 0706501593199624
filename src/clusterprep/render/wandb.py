"""`clusterprep wandb`: a table per node on the terminal, or one JSON object.

Nothing here ever holds the key: the reports it reads were scrubbed by the core.
"""

from __future__ import annotations

from typing import Any

from clusterprep.render.console import node_problems, stdout_console
from clusterprep.render.jsonout import _error
from clusterprep.wandb import NetrcReport, VerifyReport

_STATUS_STYLE = {"unchanged": "dim", "added": "green", "replaced": "yellow",
                 "removed": "yellow", "absent": "dim"}


def netrc_table(report: NetrcReport) -> None:
    from rich.markup import escape
    from rich.table import Table

    console = stdout_console()
    table = Table(title=f"wandb {report.action}: netrc entry for "
                        f"{', '.join(report.machines) or 'the W&B server'}")
    for column in ("node", "result", "netrc", "server (said by)"):
        table.add_column(column)
    for change in report.changes:
        if change.error is not None:
            result = f"[red]failed[/] ({change.error.kind})"
        else:
            style = _STATUS_STYLE.get(change.status or "", "")
            result = f"[{style}]{change.status}[/]" if style else str(change.status)
            if change.mode_fixed:
                result += ", mode set to 0600"
        server = f"{change.server} ({change.server_source})" if change.server else "-"
        table.add_row(change.node, result, escape(change.path or "-"), escape(server))
    console.print(table)
    node_problems(console, [(c.node, f"{c.error.kind}: {c.error.message}")
                            for c in report.changes if c.error is not None])
    if report.interrupted:
        console.print("[yellow]interrupted: nodes not yet answered are shown as failed[/]")


def netrc_document(report: NetrcReport) -> dict[str, Any]:
    return {
        "ok": report.ok,
        "interrupted": report.interrupted,
        "action": report.action,
        "machines": report.machines,
        "nodes": [
            {"node": c.node, "status": c.status, "path": c.path, "mode_fixed": c.mode_fixed,
             "machine": c.machine, "server": c.server, "server_source": c.server_source,
             "error": _error(c.error)}
            for c in report.changes
        ],
    }


def verify_table(report: VerifyReport) -> None:
    from rich.markup import escape
    from rich.table import Table

    console = stdout_console()
    if report.note:
        console.print("[yellow]note:[/] " + escape(report.note), soft_wrap=True)
    table = Table(title=f"wandb verify ({report.mode}, project {report.project}, "
                        f"{report.url or 'each node its own W&B server'})")
    for column in ("node", "ok", "wandb", "server (said by)", "login found in", "netrc mode",
                   "run"):
        table.add_column(column)
    for check in report.checks:
        table.add_row(
            check.node,
            "[green]yes[/]" if check.ok else "[red]no[/]",
            check.wandb_version or "-",
            escape(f"{check.server} ({check.server_source})" if check.server else "-"),
            escape(check.login_source or "-"),
            check.netrc_mode or "-",
            escape(check.run_url or check.run_dir or "-"),
        )
    console.print(table)
    node_problems(console, [(check.node, problem) for check in report.checks
                            for problem in check.problems + (
                                [f"{check.error.kind}: {check.error.message}"]
                                if check.error is not None else [])])
    if report.interrupted:
        console.print("[yellow]interrupted by the user[/]")


def verify_document(report: VerifyReport) -> dict[str, Any]:
    return {
        "ok": report.ok,
        "interrupted": report.interrupted,
        "url": report.url,
        "project": report.project,
        "mode": report.mode,
        "note": report.note,
        "nodes": [
            {"node": c.node, "ok": c.ok, "python": c.python, "wandb": c.wandb_version,
             "server": c.server, "server_source": c.server_source,
             "login_source": c.login_source, "netrc": c.netrc_path,
             "netrc_mode": c.netrc_mode, "run_dir": c.run_dir, "run_url": c.run_url,
             "problems": c.problems, "error": _error(c.error)}
            for c in report.checks
        ],
    }
