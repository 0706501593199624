"""The command line: one function per command that parses, calls the core, and renders.

Exit status: 0 when every node succeeded, 1 when any node failed, 2 for bad input or setup
(the message names the file, line or node), 130 when the user interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from clusterprep import __version__, tracking
from clusterprep.errors import ClusterprepError, UsageError
from clusterprep.fleet import HOST_KEY_POLICIES, Fleet, SshOptions
from clusterprep.inventory import Inventory, load_inventory
from clusterprep.render import console, jsonout
from clusterprep.render import tracking as tracking_render
from clusterprep.survey import survey

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

    _add_wandb_commands(commands, common)
    return parser


def _add_wandb_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    wandb = commands.add_parser(
        "wandb", help="log every node into Weights & Biases, verify it, log out",
        description="Weights & Biases on every node. The W&B server is $WANDB_BASE_URL, "
                    "else https://api.wandb.ai.")
    actions = wandb.add_subparsers(dest="wandb_command", required=True, metavar="ACTION")

    login = actions.add_parser(
        "login", parents=[common], help="put the API key into every node's netrc",
        description="Write the W&B API key into every node's $NETRC or ~/.netrc (mode 0600), "
                    "as `wandb login` does, keeping every other entry. The key comes from "
                    f"{tracking.KEY_SOURCES}; never from the command line. It travels to the "
                    "nodes on the SSH channel's stdin only.")
    login.add_argument("--key-file", metavar="FILE",
                       help="read the key from FILE (its first and only word)")
    login.set_defaults(handler=cmd_wandb_login)

    verify = actions.add_parser(
        "verify", parents=[common], help="prove every node can log to W&B",
        description="On every node, under --python: wandb imports, finds the login, and logs "
                    "one metric in a run named after the node. Online when the W&B server "
                    "answers from here, else offline (WANDB_MODE=offline).")
    mode = verify.add_mutually_exclusive_group()
    mode.add_argument("--online", dest="mode", action="store_const", const="online",
                      help="log to the W&B server (the tutorial's check); fail if it is "
                           "unreachable")
    mode.add_argument("--offline", dest="mode", action="store_const", const="offline",
                      help="log an offline run on every node, without the server")
    verify.add_argument("--python", default="python3", metavar="PATH",
                        help="the env's python on the nodes (default python3)")
    verify.add_argument("--project", default=tracking.DEFAULT_PROJECT, metavar="NAME",
                        help=f"W&B project of the check runs (default "
                             f"{tracking.DEFAULT_PROJECT})")
    verify.set_defaults(handler=cmd_wandb_verify, mode=None)

    logout = actions.add_parser(
        "logout", parents=[common], help="remove the W&B entry from every node's netrc",
        description="Remove the W&B server's entry from every node's netrc; every other entry "
                    "stays as it was.")
    logout.set_defaults(handler=cmd_wandb_logout)


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



def _hidden_prompt() -> str:
    return getpass.getpass("W&B API key (https://wandb.ai/authorize; input hidden): ")


def _netrc_exit(args: argparse.Namespace, report: tracking.NetrcReport) -> int:
    if args.json:
        jsonout.emit(tracking_render.netrc_document(report))
    else:
        tracking_render.netrc_table(report)
    if report.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_OK if report.ok else EXIT_FAILED


def cmd_wandb_login(args: argparse.Namespace) -> int:
    url = tracking.WandbSettings().resolve_base_url(os.environ)
    prompt = _hidden_prompt if sys.stdin.isatty() else None
    key, _ = tracking.read_api_key(args.key_file, os.environ, prompt)
    os.environ.pop("WANDB_API_KEY", None)  # no copy for the processes we start (ssh -G, ...)
    inventory = _inventory(args)

    async def work() -> int:
        async with Fleet(inventory, _ssh_options(args)) as fleet:
            report = await tracking.login(fleet, key, url, timeout=args.timeout)
        return _netrc_exit(args, report)

    return _run_async(work)


def cmd_wandb_logout(args: argparse.Namespace) -> int:
    url = tracking.WandbSettings().resolve_base_url(os.environ)
    inventory = _inventory(args)

    async def work() -> int:
        async with Fleet(inventory, _ssh_options(args)) as fleet:
            report = await tracking.logout(fleet, url, timeout=args.timeout)
        return _netrc_exit(args, report)

    return _run_async(work)


def cmd_wandb_verify(args: argparse.Namespace) -> int:
    settings = tracking.WandbSettings(project=args.project)
    url = settings.resolve_base_url(os.environ)
    inventory = _inventory(args)
    mode, note = tracking.choose_mode(args.mode, url)

    async def work() -> int:
        async with Fleet(inventory, _ssh_options(args)) as fleet:
            report = await tracking.verify(fleet, url=url, project=settings.project, mode=mode,
                                           python=args.python, note=note,
                                           timeout=args.timeout)
        if args.json:
            jsonout.emit(tracking_render.verify_document(report))
        else:
            tracking_render.verify_table(report)
        if report.interrupted:
            return EXIT_INTERRUPTED
        return EXIT_OK if report.ok else EXIT_FAILED

    return _run_async(work)


if __name__ == "__main__":
    sys.exit(main())
