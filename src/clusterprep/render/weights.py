"""What `weights stage|sync|verify` show: live progress on a terminal, then a summary table;
or one JSON document with `--json`. Renderers only read the result objects."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rich.progress import (BarColumn, DownloadColumn, Progress, TaskID, TextColumn,
                           TransferSpeedColumn)
from rich.markup import escape
from rich.table import Table

from clusterprep import suggest
from clusterprep.fleet.gather import fold
from clusterprep.render.console import stderr_console, stdout_console
from clusterprep.weights.load import LoadReport, Report, WithLoads
from clusterprep.weights.receiver import NodeSync
from clusterprep.weights.sync import SyncReport
from clusterprep.weights.progress import NodeBytesListener
from clusterprep.weights.spec import RepoRef
from clusterprep.weights.stage import StageResult
from clusterprep.weights.verify import VerifyReport

_err = stderr_console()


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


class NodeBytesProgress(NodeBytesListener):
    """One bar per node (bytes received of a sync's stream, or hashed by `verify --full`), on
    stderr, on a terminal."""

    MAX_BARS = 16  # beyond that, one bar for the slowest node would say as much

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled and _err.is_terminal
        self._progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                  DownloadColumn(), TransferSpeedColumn(), console=_err,
                                  transient=True)
        self._tasks: dict[str, TaskID] = {}

    def planned(self, nodes: dict[str, int], total_bytes: int) -> None:
        if not self.enabled:
            return
        self._progress.start()
        for node, size in list(nodes.items())[: self.MAX_BARS]:
            self._tasks[node] = self._progress.add_task(node, total=max(size, 1))

    def advanced(self, node: str, done_bytes: int) -> None:
        if node in self._tasks:
            self._progress.update(self._tasks[node], completed=done_bytes)

    def finished(self, node: str) -> None:
        if node in self._tasks:
            self._progress.update(self._tasks[node], visible=False)

    def stop(self) -> None:
        if self.enabled:
            self._progress.stop()


class StageProgress:
    """`weights stage --from-cache`: one line per copied file, on stderr, on a terminal.
    (Downloads show huggingface_hub's own progress bars.)"""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and _err.is_terminal

    def __call__(self, repo: RepoRef, path: str, copied_bytes: int) -> None:
        if self.enabled:
            _err.print(f"{repo.id}: {path} ({_size(copied_bytes)} copied so far)",
                       highlight=False, markup=False)


def stage_table(results: list[StageResult], staging: str) -> None:
    table = Table(title=f"staging cache {staging}")
    for column in ("repo", "revision", "commit", "action", "files", "bytes"):
        table.add_column(column)
    for r in results:
        action = f"[red]{r.action}[/]: {escape(r.error)}" if r.error else r.action
        table.add_row(r.repo.id, r.repo.revision, (r.commit or "-")[:12], action,
                      str(r.files) if r.files else "-", _size(r.bytes) if r.bytes else "-")
    out = stdout_console()
    out.print(table)
    hashed = sum(r.hashed for r in results)
    if hashed:
        seconds = sum(r.seconds for r in results)
        out.print(f"checked in place: {_size(hashed)} hashed against the blobs' names in "
                  f"{seconds:.1f} s", highlight=False)


def stage_document(results: list[StageResult], staging: str) -> dict[str, Any]:
    return {
        "ok": all(r.error is None for r in results),
        "staging": staging,
        "repos": [{"repo": r.repo.id, "revision": r.repo.revision, "commit": r.commit,
                   "action": r.action, "files": r.files, "bytes": r.bytes,
                   "hashed_bytes": r.hashed, "seconds": round(r.seconds, 3), "error": r.error}
                  for r in results],
    }


def sync_summary(report: SyncReport) -> None:
    out = stdout_console()
    table = Table(title=f"weights sync: {len(report.manifest.files)} files, "
                        f"{_size(report.manifest.total_bytes)} staged")
    for column in ("node", "cache", "status", "files written", "bytes"):
        table.add_column(column)
    for n in report.nodes:
        table.add_row(n.node, n.cache or "-", _sync_status(n), str(n.files_written),
                      _size(n.bytes_received) if n.bytes_received else "-")
    out.print(table)
    if report.mode is None:
        out.print("nothing to send: every reachable node holds the staged files")
    else:
        out.print(_sent_line(report), soft_wrap=True)
    for link in report.broken_links:
        _err.print(f"[yellow]warning:[/] the chain split where a node could not pass the "
                   f"stream on: {escape(link)}", soft_wrap=True)
    for change in report.reforms:
        _err.print(f"[yellow]re-formed:[/] {escape(change)}", soft_wrap=True)
    failed = [n for n in report.nodes if not n.ok]
    if failed:
        full = [n.node for n in failed if n.disk_full]
        hint = ("make room in the caches of " + fold(full) + ", then " if full else "") + \
            f"run `{suggest.command('weights', 'sync')}` again to finish"
        _err.print(f"[red]{len(failed)} of {len(report.nodes)} nodes failed:[/] "
                   f"{escape(fold([n.node for n in failed]))}; {escape(hint)}", soft_wrap=True)


def _sync_status(n: NodeSync) -> str:
    if n.error is not None:
        return f"[red]{n.error.kind}[/]: {escape(n.error.message)}"
    if n.failed:
        lines = [f"{f.path}: {_size(f.unwritten)} not written into {f.where}: {f.reason}"
                 if f.where else f"{f.path}: {f.reason}" for f in n.failed]
        if n.disk_full and n.free_at_start is not None:
            lines.append(f"disk full: {n.cache} had {_size(n.free_at_start)} free when the "
                         "sync began")
        return "[red]failed[/]: " + escape("\n".join(lines))
    if n.files_needed == 0:
        return "[green]up to date[/]"
    return "[green]synced[/]"


def _sent_line(report: SyncReport) -> str:
    firsts = [chain[0] for chain in report.chains]
    readers = [node for node in firsts if node in report.staging_readers]
    source = "read from the staging by " + fold(readers) if readers else "sent from here"
    if report.mode == "chain":
        chain = report.chains[0]
        shape = (", passed down one chain (" + " -> ".join(chain) + ")" if len(chain) <= 8
                 else f", passed down one chain of {len(chain)} nodes")
    elif report.mode == "chains":
        shape = f", passed down {len(report.chains)} chains led by {fold(firsts)}"
    else:
        shape = ", to each node alone (a star)" if len(firsts) > 1 else ""
    amount = _size(report.source_bytes)
    if report.source_bytes < report.planned_bytes:
        amount += f" of the {_size(report.planned_bytes)} planned"
    rate = report.source_bytes / report.seconds if report.seconds else 0
    return (f"{amount} {source}{shape}, in {report.seconds:.1f} s ({_size(int(rate))}/s)")


def sync_document(report: SyncReport) -> dict[str, Any]:
    return {
        "ok": report.ok, "interrupted": report.interrupted, "mode": report.mode,
        "chains": report.chains, "staging_readers": report.staging_readers,
        "reforms": report.reforms, "broken_links": report.broken_links,
        "planned_bytes": report.planned_bytes, "sent_bytes": report.source_bytes,
        "seconds": round(report.seconds, 3), "staged_files": len(report.manifest.files),
        "staged_bytes": report.manifest.total_bytes,
        "nodes": [{"node": n.node, "cache": n.cache, "ok": n.ok, "files_needed": n.files_needed,
                   "files_written": n.files_written, "bytes_received": n.bytes_received,
                   "failed": [{"path": f.path, "reason": f.reason,
                               "unwritten_bytes": f.unwritten, "where": f.where}
                              for f in n.failed],
                   "disk_full": n.disk_full, "free_bytes_at_start": n.free_at_start,
                   "blocked_seconds": n.blocked,
                   "seconds": round(n.seconds, 3) if n.seconds is not None else None,
                   "error": n.error.as_dict() if n.error else None}
                  for n in report.nodes],
    }


def verify_table(report: VerifyReport) -> None:
    out = stdout_console()
    table = Table(title="weights verify (" + ("full hashes" if report.full else "sizes") + ")")
    for column in ("node", "repo", "state", "details"):
        table.add_column(column)
    for n in report.nodes:
        if n.error is not None:
            table.add_row(n.node, "-", "[red]unreachable[/]" if n.error.kind != "probe-failed"
                          else "[red]error[/]", f"{n.error.kind}: {n.error.message}")
            continue
        for r in n.repos:
            details = [f"missing {p}" for p in r.missing]
            details += [f"corrupt {p} ({why})" for p, why in r.corrupt]
            if r.extra_revisions:
                details.append("extra revisions: " + ", ".join(r.extra_revisions))
            state = "[green]complete[/]" if r.complete else "[red]incomplete[/]"
            table.add_row(n.node, f"{r.repo}@{','.join(r.revisions)}", state, "\n".join(details))
    out.print(table)
    bad = [n.node for n in report.nodes if not n.complete]
    if bad:
        lacking = [n.node for n in report.nodes if not n.complete and n.error is None]
        hint = (f"run `{suggest.command('weights', 'sync')}` to send "
                f"{fold(lacking)} what is missing or corrupt" if lacking else
                f"`{suggest.command('nodes')}` shows why "
                f"{'it' if len(bad) == 1 else 'they'} cannot be reached")
        verb = "is" if len(bad) == 1 else "are"
        _err.print(f"[red]{len(bad)} of {len(report.nodes)} nodes {verb} not ready:[/] "
                   f"{escape(fold(bad))}; {escape(hint)}", soft_wrap=True)


def verify_document(report: VerifyReport) -> dict[str, Any]:
    return {
        "ok": report.ok, "interrupted": report.interrupted, "full": report.full,
        "nodes": [{
            "node": n.node, "cache": n.cache, "cache_source": n.cache_source,
            "complete": n.complete, "error": n.error.as_dict() if n.error else None,
            "repos": [{"repo": r.repo, "revisions": r.revisions, "complete": r.complete,
                       "missing": r.missing,
                       "corrupt": [{"path": p, "reason": why} for p, why in r.corrupt],
                       "extra_revisions": r.extra_revisions} for r in n.repos],
        } for n in report.nodes],
    }


def load_table(report: LoadReport) -> None:
    """Per load, the nodes where it passed (folded, with their times) or was skipped; then per
    node, each load that failed, with the loader's last lines and what to do."""
    out = stdout_console()
    title = ("huggingface_hub resolves every staged file offline, in the env (the recipe has no "
             "[[weights.load]])" if report.hub_check else "the recipe's loads, offline, in the env")
    table = Table(title=title)
    for column in ("node", "load", "state", "details"):
        table.add_column(column)
    passed: dict[tuple[str, str], list[tuple[str, float]]] = {}  # (load, state) -> nodes
    for n in report.nodes:
        for load in n.loads:
            if load.ok:
                passed.setdefault((load.name, load.state), []).append((n.node, load.seconds))
    for (name, state), where in passed.items():
        times = sorted(seconds for _, seconds in where)
        details = ("needs a GPU; none here" if state == "skipped" else
                   f"{times[0]:.1f} s" if times[0] == times[-1] else
                   f"{times[0]:.1f} to {times[-1]:.1f} s")
        table.add_row(fold(node for node, _ in where), escape(name),
                      "[green]ok[/]" if state == "ok" else state, details)
    for n in report.nodes:
        if n.error is not None:
            table.add_row(n.node, "-", "[red]error[/]",
                          escape(f"{n.error.kind}: {n.error.message}"))
        for load in n.loads:
            if not load.ok:
                details = "\n".join([*load.tail, f"next: {load.next_step}"])
                table.add_row(n.node, escape(load.name), f"[red]{load.state}[/]",
                              escape(details))
    out.print(table)
    bad = [n.node for n in report.nodes if not n.ok]
    if bad:
        _err.print(f"[red]{len(bad)} of {len(report.nodes)} nodes cannot load every model:[/] "
                   f"{fold(bad)}", soft_wrap=True)


def load_document(report: LoadReport) -> dict[str, Any]:
    return {
        "ok": report.ok, "interrupted": report.interrupted, "hub_check": report.hub_check,
        "nodes": [{
            "node": n.node, "ok": n.ok, "gpus": n.gpus,
            "error": n.error.as_dict() if n.error else None,
            "loads": [{"name": load.name, "state": load.state, "ok": load.ok,
                       "seconds": load.seconds, "tail": load.tail, "next": load.next_step}
                      for load in n.loads],
        } for n in report.nodes],
    }


def table_with_loads(table: Callable[[Report], None]) -> Callable[[WithLoads[Report]], None]:
    """`table` of the report, then the loads' table (when they ran)."""

    def show(result: WithLoads[Report]) -> None:
        table(result.report)
        if result.loads is not None:
            load_table(result.loads)

    return show


def document_with_loads(document: Callable[[Report], dict[str, Any]]
                        ) -> Callable[[WithLoads[Report]], dict[str, Any]]:
    """`document` of the report, with the loads, and `ok` for both."""

    def build(result: WithLoads[Report]) -> dict[str, Any]:
        return {**document(result.report), "ok": result.ok,
                "loads": load_document(result.loads) if result.loads else None}

    return build
