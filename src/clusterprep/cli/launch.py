"""`clusterprep launch`: the training run on every node as one supervised gang."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from clusterprep.cli import common
from clusterprep.cli.smoke import port
from clusterprep.errors import UsageError
from clusterprep.inventory import Inventory, parse_hostlist
from clusterprep.launch.logs import write_summary
from clusterprep.launch.model import LaunchReport
from clusterprep.launch.runner import AUTO, GRACE, MASTER_PORT, LaunchOptions, launch
from clusterprep.recipe import load_recipe



def add_parser(commands: Any, options: argparse.ArgumentParser) -> None:
    parser = commands.add_parser(
        "launch", parents=[options, common.recipe_options()],
        help="run the training on every node as one supervised gang",
        usage="clusterprep launch [options] -- SCRIPT [ARGS...]  |  --raw -- COMMAND...",
        description="Start on every node, inside the recipe's env and in its repo folder (the "
                    "shared folder when the recipe has no repo), what `colossalai run` starts: "
                    "torchrun --nnodes N --node_rank R --master_addr HEAD --master_port P "
                    "--nproc_per_node G SCRIPT ARGS, the head first as in the nodes file. The "
                    "moment one node's launcher fails, its session is lost or it hangs "
                    "(--hung-after), every other node's processes are ended, and every node is "
                    "checked to have nothing of the run left. The report names the node that "
                    "failed first. Exit status 0 only when every node's launcher exited 0; 130 "
                    "on Ctrl-C, which ends the run everywhere too.")
    group = parser.add_argument_group("launch options")
    group.add_argument("--nproc-per-node", type=nproc, default=AUTO, metavar="N|auto",
                       help="ranks per node (default auto: the node's GPU count, 1 without "
                            "GPUs)")
    group.add_argument("--master-port", type=port, default=MASTER_PORT, metavar="PORT",
                       help=f"the rendezvous port on the head (default {MASTER_PORT})")
    group.add_argument("--grace", type=common.positive_float, default=GRACE,
                       metavar="S", help="seconds between SIGTERM and SIGKILL when the run is "
                                         f"ended (default {GRACE:g})")
    group.add_argument("--log-dir", metavar="DIR", default=None,
                       help="where every node's output and the summary go (default: a new "
                            "folder under ./launches/)")
    group.add_argument("--exclude", metavar="NODES", default=None,
                       help="leave these nodes out (names or a hostlist, node[02-03]); the "
                            "order is kept, the next node is the head if the head is left out")
    group.add_argument("--kill-stale", action="store_true",
                       help="end a stale process of an earlier run (or one holding the master "
                            "port or a GPU) before starting")
    group.add_argument("--dry-run", action="store_true",
                       help="print every node's exact command line; start nothing")
    group.add_argument("--raw", action="store_true",
                       help="run COMMAND as it is (no torchrun), with NNODES, NODE_RANK, "
                            "MASTER_ADDR and MASTER_PORT set")
    group.add_argument("--python", metavar="PATH", default=None,
                       help="the env's interpreter on each node (default: the recipe's); "
                            "torchrun is taken from beside it")
    parser.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- SCRIPT [ARGS...]",
                        help="the training script and its arguments (with --raw: a command)")
    parser.set_defaults(handler=cmd_launch)


def nproc(text: str) -> int | None:
    if text.strip().lower() == "auto":
        return AUTO
    return common.positive_int(text)


def excluded(spec: str | None, nodes: Inventory) -> frozenset[str]:
    """The nodes --exclude names, each one of the inventory's, and not all of them."""
    if not spec:
        return frozenset()
    names = [node.name for node in parse_hostlist(spec, "--exclude").nodes]
    unknown = [name for name in names if name not in {n.name for n in nodes.nodes}]
    if unknown:
        raise UsageError(f"--exclude names {', '.join(unknown)}, not among the nodes "
                         f"({nodes.source})")
    if len(set(names)) == len(nodes.nodes):
        raise UsageError("--exclude leaves no node to launch on")
    return frozenset(names)


def cmd_launch(args: argparse.Namespace) -> int:
    from clusterprep.render import launch as render

    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not argv:
        raise UsageError("nothing to launch: give the training script after --, as in "
                         "`clusterprep launch -- scripts/train.py CONFIG`")
    inventory = common.inventory(args)
    exclude = excluded(args.exclude, inventory)
    recipe = load_recipe(args.recipe, args.shared_dir)
    options = LaunchOptions(
        python=args.python or recipe.env.python,
        cwd=recipe.repo.path if recipe.repo else recipe.shared_dir,
        argv=tuple(argv), exports=recipe.exports, raw=args.raw, nproc=args.nproc_per_node,
        master_port=args.master_port, grace=args.grace,
        log_dir=Path(args.log_dir) if args.log_dir else None,
        exclude=exclude, kill_stale=args.kill_stale,
        dry_run=args.dry_run)
    live = render.LiveLines(sys.stderr if args.json else sys.stdout)
    document = lambda report: render.document(report, inventory.warnings)  # noqa: E731
    shown = common.shown(args, document, render.report_text)

    def show(report: LaunchReport) -> None:
        if report.log_dir is not None:
            write_summary(Path(report.log_dir), document(report))
        shown(report)

    return common.over_fleet(args, inventory, lambda fleet: launch(fleet, options, live), show)
