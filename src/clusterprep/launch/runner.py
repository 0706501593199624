"""`clusterprep launch` in order: the nodes (less --exclude), the preflight (GPUs, stale
processes), each node's command line, then the gang (unless --dry-run)."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from clusterprep.fleet import Fleet
from clusterprep.launch.gang import LaunchListener, run_gang
from clusterprep.launch.logs import RunLogs, default_folder
from clusterprep.launch.model import UNSTARTED, Ending, LaunchReport
from clusterprep.launch.plan import LaunchPlan
from clusterprep.launch.preflight import preflight
from clusterprep.smoke.names import host_name

AUTO = None  # --nproc-per-node auto: the node's GPU count, 1 on a node without GPUs
MASTER_PORT = 29500  # torchrun's and colossalai run's default
GRACE = 5.0


@dataclass(frozen=True)
class LaunchOptions:
    """What the command line decides."""

    python: str
    cwd: str
    argv: tuple[str, ...]
    exports: dict[str, str]
    raw: bool = False
    nproc: int | None = AUTO
    master_port: int = MASTER_PORT
    grace: float = GRACE
    log_dir: Path | None = None
    exclude: frozenset[str] = frozenset()
    kill_stale: bool = False
    dry_run: bool = False


def again(options: LaunchOptions) -> tuple[str, ...]:
    """The options that make a relaunch run what this one ran (what it acts on, --python
    included, suggest adds; --exclude the report keeps apart, to add to)."""
    words: list[str] = ["--raw"] if options.raw else []
    if options.nproc is not AUTO:
        words += ["--nproc-per-node", str(options.nproc)]
    if options.master_port != MASTER_PORT:
        words += ["--master-port", str(options.master_port)]
    if options.grace != GRACE:
        words += ["--grace", f"{options.grace:g}"]
    return tuple(words)


async def launch(fleet: Fleet, options: LaunchOptions,
                 listener: LaunchListener | None = None) -> LaunchReport:
    """The launch, from the preflight to the verified teardown; what happened, in a report.
    A node unreachable at the start, or a stale process in the way, starts nothing."""
    nodes = [node for node in fleet.inventory.nodes if node.name not in options.exclude]
    run = secrets.token_hex(6)
    report = LaunchReport(run, [node.name for node in nodes], master=host_name(nodes[0]),
                          port=options.master_port, argv=options.argv,
                          again=again(options), excluded=tuple(sorted(options.exclude)),
                          dry_run=options.dry_run)
    started = time.monotonic()
    found = await preflight(fleet, nodes, options.master_port,
                            options.kill_stale and not options.dry_run, options.grace)
    killed = options.kill_stale and not options.dry_run
    report.stale, report.stale_killed = found.stale, killed and not found.survivors
    report.survivors = found.survivors
    report.interrupted = found.interrupted
    if found.unreachable or found.interrupted:
        report.endings = [Ending(name, UNSTARTED, detail=f"{e.kind}: {e.message}")
                          for name, e in found.unreachable.items()]
        return report
    plan = LaunchPlan(
        nodes=tuple(report.nodes), master=report.master, port=options.master_port,
        nproc={name: options.nproc or max(1, found.gpus[name]) for name in report.nodes},
        python=options.python, cwd=options.cwd, exports=options.exports, argv=options.argv,
        raw=options.raw)
    report.commands = {name: plan.line(name) for name in report.nodes}
    if options.dry_run or report.blocking_stale:
        return report
    logs = RunLogs(options.log_dir or default_folder(run))
    logs.open()
    report.log_dir = str(logs.folder.resolve())
    try:
        await run_gang(fleet, nodes, plan, run, report, hung_after=fleet.hung_after,
                       grace=options.grace, logs=logs, listener=listener or LaunchListener())
    finally:
        logs.close()
        report.seconds = time.monotonic() - started
    return report
