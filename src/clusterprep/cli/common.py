"""What every command's module shares: the common options, the exit statuses, and the shape
of a command that gathers a result over the fleet and shows it."""

from __future__ import annotations

import argparse
import asyncio
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, Protocol, TypeVar

from clusterprep import settings
from clusterprep.errors import UsageError
from clusterprep.fleet import HOST_KEY_POLICIES, Fleet, SshOptions
from clusterprep.fleet.choose import backend_for
from clusterprep.fleet.gather import fold
from clusterprep.fleet.options import SlurmOptions
from clusterprep.fleet.options import HUNG_AFTER
from clusterprep.fleet.slurm_inventory import load_slurm_inventory
from clusterprep.inventory import Inventory, load_inventory
from clusterprep.lock import ClusterLock
from clusterprep.recipe import DEFAULT_RECIPE
from clusterprep.render import console, jsonout

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def common_options() -> argparse.ArgumentParser:
    """The options every command that reaches nodes takes."""
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("cluster options")
    group.add_argument(
        "-n", "--nodes", metavar="NODES",
        help="nodes file, hostlist (node-[001-016]) or localhost; default: $CLUSTERPREP_NODES, "
             "./nodes.txt, ~/nodes.txt, else this machine alone")
    group.add_argument("-F", "--ssh-config", metavar="FILE", help="ssh config file, as ssh -F")
    group.add_argument("--fanout", type=positive_int, default=64, metavar="N",
                       help="most SSH connections being opened at once (sshd drops bursts "
                            "beyond its MaxStartups); once open, commands run on every node "
                            "at once whatever N (default 64; no use through Slurm)")
    group.add_argument("--connect-timeout", type=positive_float, default=10.0, metavar="S",
                       help="seconds to wait for a node to accept a connection (default 10)")
    group.add_argument("--timeout", type=positive_float, default=None, metavar="S",
                       help="seconds a command may run on a node before it is killed")
    group.add_argument("--hung-after", type=positive_float, default=HUNG_AFTER, metavar="S",
                       help="seconds a node may send nothing and answer no keepalive before it "
                            f"is cut out as hung (default {HUNG_AFTER:g})")
    group.add_argument("--host-keys", choices=HOST_KEY_POLICIES, default=None,
                       help="host key checking; default: the ssh config's "
                            "StrictHostKeyChecking, else accept-new")
    group.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    slurm = common.add_argument_group(
        "Slurm options", "Inside an allocation (SLURM_JOB_ID set) with no nodes named, the "
        "allocation's nodes are reached through Slurm: one srun job step per command.")
    slurm.add_argument("--slurm", action="store_true",
                       help="reach the nodes through Slurm (srun), not SSH: the nodes named "
                            "by -n, or the allocation's")
    slurm.add_argument("--slurm-job", metavar="ID", type=slurm_job_id, default=None,
                       help="the allocation to run in (implies --slurm); default: the one "
                            "this shell runs inside, else a new one for the named nodes")
    return common


def recipe_options() -> argparse.ArgumentParser:
    """`-r/--recipe` and `--shared-dir`, for the commands a recipe drives."""
    options = argparse.ArgumentParser(add_help=False)
    group = options.add_argument_group("recipe options")
    group.add_argument("-r", "--recipe", metavar="NAME|FILE", default=None,
                       help=f"built-in recipe name or TOML file (default: {DEFAULT_RECIPE})")
    group.add_argument("--shared-dir", metavar="DIR", default=None,
                       help="the shared folder (over $SHAREDDIR and the recipe's [shared] dir)")
    return options


def lock_options() -> argparse.ArgumentParser:
    """`--lock-wait`, for the commands that change state and so hold the cluster lock."""
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument("--lock-wait", type=non_negative_float, default=0.0, metavar="S",
                         help="when another clusterprep is changing the cluster, wait up to S "
                              "seconds for it (default 0: stop at once, exit status 75)")
    return options


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive_float(text: str) -> float:
    value = _finite(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number above 0, got {text!r}")
    return value


def non_negative_float(text: str) -> float:
    value = _finite(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number, 0 or more, got {text!r}")
    return value


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def slurm_job_id(text: str) -> str:
    if not text.replace("_", "").isdigit():
        raise argparse.ArgumentTypeError(f"expected a Slurm job id (digits), got {text!r}")
    return text


def inventory(args: argparse.Namespace) -> Inventory:
    """The nodes the command works on; the inventory's warnings go to stderr (not with --json).

    Through Slurm with --slurm or --slurm-job, or inside an allocation when no nodes are named
    (neither -n nor $CLUSTERPREP_NODES); otherwise over SSH."""
    inside = settings.slurm_job_id()
    if args.slurm or args.slurm_job:
        loaded = load_slurm_inventory(args.nodes, args.slurm_job or inside)
    elif inside and args.nodes is None and settings.nodes_spec() is None:
        loaded = load_slurm_inventory(None, inside)
    else:
        loaded = load_inventory(args.nodes)
    if not args.json:
        for message in loaded.warnings:
            console.warn(message)
    return loaded


def ssh_options(args: argparse.Namespace) -> SshOptions:
    return SshOptions(
        config_file=args.ssh_config,
        connect_timeout=args.connect_timeout,
        host_keys=args.host_keys,
        fanout=args.fanout,
        hung_after=args.hung_after,
    )


def open_fleet(args: argparse.Namespace, nodes: Inventory) -> Fleet:
    """The fleet over the nodes: through Slurm when the inventory says so, else SSH."""
    if nodes.slurm and args.ssh_config:
        raise UsageError("-F/--ssh-config has no use through Slurm (no SSH is involved)")
    slurm = SlurmOptions(nodes.slurm_job, args.connect_timeout, args.hung_after) \
        if nodes.slurm else None
    return Fleet(nodes, backend_for(nodes, ssh_options(args), slurm))


class Outcome(Protocol):
    ok: bool
    interrupted: bool


def exit_status(outcome: Outcome) -> int:
    """130 when the user interrupted, else 0 when every node succeeded, else 1."""
    if outcome.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_OK if outcome.ok else EXIT_FAILED


def run_async(work: Callable[[], Coroutine[Any, Any, int]]) -> int:
    try:
        return asyncio.run(work())
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


Result = TypeVar("Result", bound=Outcome)


def over_fleet(args: argparse.Namespace, nodes: Inventory,
               gather: Callable[[Fleet], Awaitable[Result]],
               show: Callable[[Result], None], *, locked: bool = False,
               shared: str | None = None) -> int:
    """The shape of most commands: `gather` a result over the nodes' connections, close them,
    `show` the result, and exit as it says (`exit_status`). A command that changes state is
    `locked`: it holds every node's lock (and the `shared` folder's) while it gathers."""

    async def work() -> int:
        async with open_fleet(args, nodes) as fleet:
            async with holding_lock(args, fleet, locked, shared):
                result = await gather(fleet)
        show(result)
        return exit_status(result)

    return run_async(work)


@asynccontextmanager
async def holding_lock(args: argparse.Namespace, fleet: Fleet, locked: bool,
                       shared: str | None = None) -> AsyncIterator[None]:
    """The cluster lock for a command that changes state, else nothing to hold. Nodes whose
    lock cannot be taken (a read-only home) are said, by reason, and the command goes on."""
    if not locked:
        yield
        return
    async with ClusterLock(fleet, shared=shared, wait=args.lock_wait) as lock:
        by_reason: dict[str, list[str]] = {}
        for node, reason in lock.unlocked.items():
            by_reason.setdefault(reason, []).append(node)
        for reason, nodes in by_reason.items():
            them = "it" if len(nodes) == 1 else "them"
            console.warn(f"{fold(nodes)} not locked ({reason}): another clusterprep could "
                         f"change {them} meanwhile")
        yield


def shown(args: argparse.Namespace, document: Callable[[Result], dict[str, Any]],
          table: Callable[[Result], None]) -> Callable[[Result], None]:
    """Show a result as `document` with --json, else as `table` for people."""

    def show(result: Result) -> None:
        if args.json:
            jsonout.emit(document(result))
        else:
            table(result)

    return show
