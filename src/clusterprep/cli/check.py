"""`clusterprep check`: the install checks and a fingerprint of every node, and their drift."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from clusterprep.activation import activate_script, interpreter_script
from clusterprep.check.inspect import inspect
from clusterprep.check.model import CheckReport
from clusterprep.cli import common
from clusterprep.localfiles import write_atomically
from clusterprep.recipe import load_recipe
from clusterprep.render import console, jsonout


def add_parser(commands: Any, options: argparse.ArgumentParser) -> None:
    check = commands.add_parser(
        "check", parents=[options, common.recipe_options()],
        help="run the install checks on every node and show how nodes differ",
        description="Run the recipe's install checks on every node, inside the env, and "
                    "fingerprint every node (packages and their builds, torch/CUDA/NCCL, NCCL "
                    "plugins, InfiniBand ports and interfaces, limits, driver, GPUs and their "
                    "health, environment variables, shadowing packages, clock) in one round "
                    "trip each. Every finding says what to do. Exit 0 only when every check "
                    "passes everywhere and nothing critical was found.")
    check.add_argument("--python", metavar="PATH", default=None,
                       help="the interpreter to check on each node, its folder first on "
                            "PATH for the command checks (default: the env's, activated)")
    check.add_argument("--html", metavar="FILE", default=None,
                       help="also write a self-contained HTML report to FILE")
    check.add_argument("--gpu-diag", action="store_true",
                       help="also run DCGM's quick diagnostic (dcgmi diag -r 1, seconds to a "
                            "minute per node) where dcgmi is installed")
    check.set_defaults(handler=cmd_check)


def cmd_check(args: argparse.Namespace) -> int:
    from clusterprep.render import check_console, html
    recipe = load_recipe(args.recipe, args.shared_dir)
    inventory = common.inventory(args)
    activate = (activate_script(recipe.env) if args.python is None
                else interpreter_script(args.python))

    def show(report: CheckReport) -> None:
        if args.html:
            write_atomically(Path(args.html), html.check_page(report).encode())
        if args.json:
            jsonout.emit(jsonout.check_document(report, inventory.warnings))
            return
        check_console.check_report(report)
        if args.html:
            console.note(f"report written to {args.html}")

    return common.over_fleet(
        args, inventory,
        lambda fleet: inspect(fleet, recipe.checks, python=args.python or recipe.env.python,
                              activate=activate, shared=recipe.shared_dir,
                              timeout=args.timeout, gpu_diag=args.gpu_diag),
        show)
