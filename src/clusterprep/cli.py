"""The command line: one function per command that parses, calls the core, and renders.

Exit status: 0 when every node succeeded, 1 when any node failed, 2 for bad input or setup
(the message names the file, line or node), 130 when the user interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from clusterprep import __version__
from clusterprep.errors import ClusterprepError, UsageError
from clusterprep.fleet import HOST_KEY_POLICIES, Fleet, SshOptions
from clusterprep.inventory import Inventory, load_inventory
from clusterprep.render import console, jsonout
from clusterprep.survey import survey
from clusterprep.transfer.spec import RepoRef, WeightsSpec, opensora, parse_repo_option

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def _common_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("cluster options")
    group.add_argument(
        "-n", "--nodes", metavar="NODES",
        help="nodes file, hostlist (node-[001-016]) or localhost; default: $CLUSTERPREP_NODES, "
             "./nodes.txt, ~/nodes.txt, else this machine alone")
    group.add_argument("-F", "--ssh-config", metavar="FILE", help="ssh config file, as ssh -F")
    group.add_argument("--fanout", type=_positive_int, default=64, metavar="N",
                       help="most new connections under way at once (default 64)")
    group.add_argument("--connect-timeout", type=_positive_float, default=10.0, metavar="S",
                       help="seconds to wait for a node to accept a connection (default 10)")
    group.add_argument("--timeout", type=_positive_float, default=None, metavar="S",
                       help="seconds a command may run on a node before it is killed")
    group.add_argument("--host-keys", choices=HOST_KEY_POLICIES, default=None,
                       help="host key checking; default: the ssh config's "
                            "StrictHostKeyChecking, else accept-new")
    group.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    return common


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {value:g}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clusterprep",
        description="Prepare a multi-node GPU cluster for distributed training, "
                    "and prove every node is ready and identical.")
    parser.add_argument("--version", action="version", version=f"clusterprep {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = _common_options()

    nodes = commands.add_parser(
        "nodes", parents=[common], help="show every node: reachable, round trip, OS, CPUs, GPUs")
    nodes.set_defaults(handler=cmd_nodes)

    run = commands.add_parser(
        "run", parents=[common], help="run one shell command on every node",
        description="Run one shell command on every node, in the node's login shell. "
                    "Quote it once, as for ssh: `clusterprep run 'echo $HOME >> ~/f'` "
                    "expands $HOME and ~ on each node. Use -- before a command that has "
                    "options of its own.")
    run.add_argument("command_words", nargs="+", metavar="COMMAND")
    run.add_argument("--stream", action="store_true",
                     help="print lines as they arrive, prefixed by node, instead of grouping")
    run.set_defaults(handler=cmd_run)
    _add_weights_parser(commands, common)
    return parser


def _add_weights_parser(commands: argparse._SubParsersAction, common: argparse.ArgumentParser,
                        ) -> None:
    weights_options = argparse.ArgumentParser(add_help=False)
    group = weights_options.add_argument_group("weights options")
    group.add_argument("--repo", action="append", type=_repo_option, metavar="ID[@REV]",
                       help="a Hugging Face repo every node needs (repeatable); default: the "
                            "built-in Open-Sora list")
    group.add_argument("--staging", metavar="DIR",
                       help="the staging hub cache; default: SHARED/hf-hub")
    group.add_argument("--shared-dir", metavar="DIR",
                       help="the cluster's shared folder; default: $SHAREDDIR")
    weights = commands.add_parser(
        "weights", help="stage pretrained weights once, sync them to every node, verify them")
    actions = weights.add_subparsers(dest="weights_command", required=True, metavar="ACTION")
    stage = actions.add_parser(
        "stage", parents=[weights_options], help="fill the staging cache on the head",
        description="Download what is missing into the staging cache with huggingface_hub "
                    "(it reads HF_TOKEN), or take it from a local hub cache. Skips repos "
                    "already staged whole.")
    stage.add_argument("--from-cache", nargs="?", const="", default=None, metavar="DIR",
                       help="copy from this hub cache (default: this machine's own) instead of "
                            "downloading")
    stage.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    stage.set_defaults(handler=cmd_weights_stage)
    sync = actions.add_parser(
        "sync", parents=[common, weights_options],
        help="make every node's Hugging Face cache hold the staged repos",
        description="Send each node only what its cache lacks, through a pipelined chain of "
                    "nodes (a star from here when nodes cannot reach each other). Files get "
                    "their final name only once their sha256 is right.")
    sync.add_argument("--star", action="store_true",
                      help="send to every node from here, not through the chain")
    sync.add_argument("--bwlimit", type=_positive_float, metavar="MB/S",
                      help="most megabytes per second sent from here")
    sync.set_defaults(handler=cmd_weights_sync)
    verify = actions.add_parser(
        "verify", parents=[common, weights_options],
        help="check every node's cache against the staged files, offline",
        description="Per node and repo: complete, missing files, corrupt files, extra "
                    "revisions. Exit status 1 when any file is missing or corrupt.")
    verify.add_argument("--full", action="store_true",
                        help="hash every file (default: sizes, and hashes of changed files)")
    verify.set_defaults(handler=cmd_weights_verify)


def _repo_option(text: str) -> RepoRef:
    try:
        return parse_repo_option(text)
    except ClusterprepError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except ClusterprepError as e:
        console.error(str(e))
        return EXIT_USAGE


def _inventory(args: argparse.Namespace) -> Inventory:
    inventory = load_inventory(args.nodes)
    if not args.json:
        for message in inventory.warnings:
            console.warn(message)
    return inventory


def _ssh_options(args: argparse.Namespace) -> SshOptions:
    return SshOptions(
        config_file=args.ssh_config,
        connect_timeout=args.connect_timeout,
        host_keys=args.host_keys,
        fanout=args.fanout,
    )


def _run_async(work: Callable[[], Coroutine[Any, Any, int]]) -> int:
    try:
        return asyncio.run(work())
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def cmd_nodes(args: argparse.Namespace) -> int:
    inventory = _inventory(args)

    async def work() -> int:
        async with Fleet(inventory, _ssh_options(args)) as fleet:
            reports, interrupted = await survey(fleet, timeout=args.timeout)
        if args.json:
            document = jsonout.nodes_document(reports, interrupted, inventory.warnings)
            jsonout.emit(document)
            ok = document["ok"]
        else:
            console.nodes_table(reports, interrupted)
            ok = all(r.reachable and r.error is None for r in reports)
        if interrupted:
            return EXIT_INTERRUPTED
        return EXIT_OK if ok else EXIT_FAILED

    return _run_async(work)


def cmd_run(args: argparse.Namespace) -> int:
    command = " ".join(args.command_words)
    if not command.strip():
        raise UsageError("the command to run is empty")
    if args.stream and args.json:
        raise UsageError("--stream and --json cannot be used together")
    inventory = _inventory(args)

    async def work() -> int:
        printer = console.LinePrinter() if args.stream else None
        async with Fleet(inventory, _ssh_options(args)) as fleet:
            outcome = await fleet.run(command, timeout=args.timeout, on_output=printer)
        if args.json:
            jsonout.emit(jsonout.run_document(outcome, inventory.warnings))
        elif printer is not None:
            printer.flush()
            console.failure_summary(outcome)
        else:
            console.grouped_output(outcome)
        if outcome.interrupted:
            return EXIT_INTERRUPTED
        return EXIT_OK if outcome.ok else EXIT_FAILED

    return _run_async(work)


def _weights_spec(args: argparse.Namespace) -> WeightsSpec:
    """The repos and staging cache from the options (the recipe's `[weights]` at merge)."""
    shared_text = args.shared_dir or os.environ.get("SHAREDDIR", "")
    if args.staging:
        staging = Path(args.staging).expanduser()
    elif shared_text:
        staging = Path(shared_text).expanduser() / "hf-hub"
    else:
        raise UsageError("where is the staging cache? give --staging DIR, or --shared-dir DIR "
                         "(or $SHAREDDIR) for SHARED/hf-hub")
    if not staging.is_absolute():
        raise UsageError(f"the staging cache must be an absolute path, not {staging}")
    if args.repo:
        return WeightsSpec(tuple(args.repo), staging)
    return WeightsSpec(opensora(staging.parent).repos, staging)


def cmd_weights_stage(args: argparse.Namespace) -> int:
    from clusterprep.render import weights as weights_render
    from clusterprep.transfer.stage import FAILED, local_hub_cache, stage

    spec = _weights_spec(args)
    source = None
    if args.from_cache is not None:
        source = Path(args.from_cache).expanduser() if args.from_cache else local_hub_cache()
    results = stage(spec.staging, spec.repos, from_cache=source,
                    on_file=weights_render.StageProgress(enabled=not args.json))
    if args.json:
        jsonout.emit(weights_render.stage_document(results, str(spec.staging)))
    else:
        weights_render.stage_table(results, str(spec.staging))
    return EXIT_FAILED if any(r.action == FAILED for r in results) else EXIT_OK


def cmd_weights_sync(args: argparse.Namespace) -> int:
    from clusterprep.render import weights as weights_render
    from clusterprep.transfer import manifest as manifest_module
    from clusterprep.transfer.broadcast import sync

    spec = _weights_spec(args)
    manifest = manifest_module.build(spec.staging, spec.repos)
    inventory = _inventory(args)

    async def work() -> int:
        progress = weights_render.SyncProgress()
        progress.enabled = progress.enabled and not args.json
        async with Fleet(inventory, _ssh_options(args)) as fleet:
            try:
                report = await sync(fleet, manifest, listener=progress, chain=not args.star,
                                    bwlimit=args.bwlimit * 1e6 if args.bwlimit else None,
                                    timeout=args.timeout)
            finally:
                progress.stop()
        if args.json:
            jsonout.emit(weights_render.sync_document(report))
        else:
            weights_render.sync_summary(report)
        if report.interrupted:
            return EXIT_INTERRUPTED
        return EXIT_OK if report.ok else EXIT_FAILED

    return _run_async(work)


def cmd_weights_verify(args: argparse.Namespace) -> int:
    from clusterprep.render import weights as weights_render
    from clusterprep.transfer import manifest as manifest_module
    from clusterprep.transfer.verify import verify

    spec = _weights_spec(args)
    manifest = manifest_module.build(spec.staging, spec.repos)
    inventory = _inventory(args)

    async def work() -> int:
        async with Fleet(inventory, _ssh_options(args)) as fleet:
            report = await verify(fleet, manifest, full=args.full, timeout=args.timeout)
        if args.json:
            jsonout.emit(weights_render.verify_document(report))
        else:
            weights_render.verify_table(report)
        if report.interrupted:
            return EXIT_INTERRUPTED
        return EXIT_OK if report.ok else EXIT_FAILED

    return _run_async(work)


if __name__ == "__main__":
    sys.exit(main())
