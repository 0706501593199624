"""`clusterprep nodes`: every node reachable or not (and why), its round trip and its facts."""

from __future__ import annotations

import argparse
from typing import Any

from clusterprep.cli import common
from clusterprep.nodes import survey
from clusterprep.render import console, jsonout


def add_parser(commands: Any, options: argparse.ArgumentParser) -> None:
    nodes = commands.add_parser(
        "nodes", parents=[options], help="show every node: reachable, round trip, OS, CPUs, GPUs")
    nodes.set_defaults(handler=cmd_nodes)


def cmd_nodes(args: argparse.Namespace) -> int:
    inventory = common.inventory(args)
    return common.over_fleet(
        args, inventory, lambda fleet: survey(fleet, timeout=args.timeout),
        common.shown(args, lambda result: jsonout.nodes_document(result, inventory.warnings),
                     console.nodes_table))
