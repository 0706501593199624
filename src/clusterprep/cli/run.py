"""`clusterprep run COMMAND`: one shell command on every node, outputs grouped or streamed."""

from __future__ import annotations

import argparse
from typing import Any

from clusterprep.cli import common
from clusterprep.errors import UsageError
from clusterprep.fleet import FleetResult
from clusterprep.render import console, jsonout


def add_parser(commands: Any, options: argparse.ArgumentParser) -> None:
    run = commands.add_parser(
        "run", parents=[options], help="run one shell command on every node",
        description="Run one shell command on every node, in the node's login shell. "
                    "Quote it once, as for ssh: `clusterprep run 'echo $HOME >> ~/f'` "
                    "expands $HOME and ~ on each node. Use -- before a command that has "
                    "options of its own.")
    run.add_argument("command_words", nargs="+", metavar="COMMAND")
    run.add_argument("--stream", action="store_true",
                     help="print lines as they arrive, prefixed by node, instead of grouping")
    run.set_defaults(handler=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    command = " ".join(args.command_words)
    if not command.strip():
        raise UsageError("the command to run is empty")
    if args.stream and args.json:
        raise UsageError("--stream and --json cannot be used together")
    inventory = common.inventory(args)
    printer = console.LinePrinter() if args.stream else None

    def table(outcome: FleetResult) -> None:
        if printer is not None:
            printer.flush()
            console.failure_summary(outcome)
        else:
            console.grouped_output(outcome)

    return common.over_fleet(
        args, inventory,
        lambda fleet: fleet.run(command, timeout=args.timeout, on_output=printer),
        common.shown(args, lambda outcome: jsonout.run_document(outcome, inventory.warnings),
                     table))
