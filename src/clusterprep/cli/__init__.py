"""The command line: one module per command (`cli/NAME.py` for `clusterprep NAME`), each of
which parses its options, calls the core, and renders the result.

Exit status: 0 when every node succeeded, 1 when any node failed, 2 for bad input or setup
(the message names the file, line or node), 130 when the user interrupted.

Renderers built on rich are imported inside the commands that use them: importing them all
would add a tenth of a second to every invocation, `clusterprep run` included.
"""

from __future__ import annotations

import argparse
import sys

from clusterprep import __version__, suggest
from clusterprep.cli import check, common, launch, nodes, recipe, run, smoke, up, wandb, weights
from clusterprep.errors import ClusterprepError
from clusterprep.render import console


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clusterprep",
        description="Prepare a multi-node GPU cluster for distributed training, "
                    "and prove every node is ready and identical.",
        epilog="exit status: 0 done on every node; 1 a node failed, or something critical "
               "was found; 2 bad input (options, recipe, nodes file); 75 another clusterprep "
               "is changing the cluster (see --lock-wait); 130 interrupted (Ctrl-C)")
    parser.add_argument("--version", action="version", version=f"clusterprep {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    options = common.common_options()
    nodes.add_parser(commands, options)
    run.add_parser(commands, options)
    up.add_parsers(commands, options)
    recipe.add_parser(commands)
    check.add_parser(commands, options)
    wandb.add_parser(commands, options)
    weights.add_parser(commands, options)
    smoke.add_parser(commands, options)
    launch.add_parser(commands, options)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    suggest.remember(parser, args)
    try:
        return args.handler(args)
    except ClusterprepError as e:
        console.error(str(e))
        return e.exit_code


if __name__ == "__main__":
    sys.exit(main())
