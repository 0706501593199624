"""What `weights sync|verify` show of `[[weights.place]]`, after their own report: one row per
placement and outcome, nodes folded (`node[01-63]`); in `--json`, a `placements` list."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from rich.markup import escape
from rich.table import Table

from clusterprep.fleet.gather import fold
from clusterprep.render.console import stderr_console, stdout_console
from clusterprep.weights.placement import FAILED, PlacementReport, WithPlacements

Report = TypeVar("Report")


def table_with(table: Callable[[Report], None]) -> Callable[[WithPlacements[Report]], None]:
    """`table` of the report, then the placements' table."""

    def show(result: WithPlacements[Report]) -> None:
        table(result.report)
        placement_table(result.placements)

    return show


def document_with(document: Callable[[Report], dict[str, Any]]
                  ) -> Callable[[WithPlacements[Report]], dict[str, Any]]:
    """`document` of the report, with the placements, and `ok` for both."""

    def build(result: WithPlacements[Report]) -> dict[str, Any]:
        return {**document(result.report), "ok": result.ok,
                "placements": placement_document(result.placements)}

    return build


def placement_table(report: PlacementReport) -> None:
    if not report.results:
        return
    table = Table(title="files placed at paths of the code")
    for column in ("path", "a link to", "nodes", "state"):
        table.add_column(column, overflow="fold")
    for result in report.results:
        groups: dict[tuple[str, str | None], list[str]] = {}
        for node in result.nodes:
            groups.setdefault((node.state, node.reason), []).append(node.node)
        for (state, reason), nodes in groups.items():
            # What nodes said, and paths, are text, never markup.
            shown = f"[red]{state}[/]: {escape(reason or '')}" if state == FAILED \
                else f"[green]{state}[/]"
            placed = result.placement
            leads_to = f"{placed.repo.id}: {placed.file}" + (
                f", in {result.cache}" if result.cache else "")
            table.add_row(escape(str(placed.at)), escape(leads_to), fold(nodes), shown)
    stdout_console().print(table)
    failed = sorted({n.node for r in report.results for n in r.nodes if n.state == FAILED})
    if failed:
        stderr_console().print(f"[red]{len(failed)} nodes lack a placed file:[/] {fold(failed)}",
                   soft_wrap=True)


def placement_document(report: PlacementReport) -> list[dict[str, Any]]:
    return [{"at": str(r.placement.at), "repo": r.placement.repo.id,
             "revision": r.placement.repo.revision, "file": r.placement.file,
             "cache": r.cache, "link": r.link, "ok": r.ok,
             "nodes": [{"node": n.node, "state": n.state, "reason": n.reason}
                       for n in r.nodes]}
            for r in report.results]
