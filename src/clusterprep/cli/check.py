"""`clusterprep check`: the install checks and a fingerprint of every node, and their drift."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from clusterprep.activation import activate_script, interpreter_script
from clusterprep.check.inspect import inspect
from clusterprep.check.model import CheckReport
from clusterprep.cli import common
from clusterprep.fleet import Fleet
from clusterprep.localfiles import write_atomically
from clusterprep.recipe import load_recipe
from clusterprep.render import console, jsonout
from clusterprep.weights.load import WithLoads, then_load


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
    check.add_argument("--no-load", action="store_true",
                       help="skip the recipe's [[weights.load]] commands (run by default when "
                            "it has them: a ready node loads every model, offline)")
    check.set_defaults(handler=cmd_check)


def cmd_check(args: argparse.Namespace) -> int:
    from clusterprep.render import check_console, html
    from clusterprep.render.weights import load_document, load_table
    recipe = load_recipe(args.recipe, args.shared_dir)
    inventory = common.inventory(args)
    activate = (activate_script(recipe.env) if args.python is None
                else interpreter_script(args.python))

    loads = () if args.no_load or recipe.weights is None else recipe.weights.loads

    def show(result: WithLoads[CheckReport]) -> None:
        report = result.report
        if args.html:
            write_atomically(Path(args.html), html.check_page(report).encode())
        if args.json:
            jsonout.emit({**jsonout.check_document(report, inventory.warnings), "ok": result.ok,
                          "loads": load_document(result.loads) if result.loads else None})
            return
        check_console.check_report(report)
        if result.loads is not None:
            load_table(result.loads)
        if args.html:
            console.note(f"report written to {args.html}")

    async def gather(fleet: Fleet) -> WithLoads[CheckReport]:
        checked = inspect(fleet, recipe.checks, python=args.python or recipe.env.python,
                          activate=activate, shared=recipe.shared_dir,
                          timeout=args.timeout, gpu_diag=args.gpu_diag)
        if not loads:
            return WithLoads(await checked)
        return await then_load(checked, fleet, loads, None, activate=activate,
                               cwd=recipe.repo.path if recipe.repo else None,
                               timeout=args.timeout, ready=_fingerprinted)

    return common.over_fleet(args, inventory, gather, show)


def _fingerprinted(report: CheckReport) -> set[str]:
    """The nodes whose env started for the fingerprint: where a load can say something new."""
    return {node.node for node in report.nodes if node.error is None}
