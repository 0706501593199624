"""`clusterprep up`, `plan` and `down`: the setup steps over every node, or their undoing."""

from __future__ import annotations

import argparse
from typing import Any

from clusterprep.cli import common
from clusterprep.recipe import load_recipe
from clusterprep.steps import STEP_NAMES
from clusterprep.steps.runner import run_down, run_steps, select_steps


def add_parsers(commands: Any, options: argparse.ArgumentParser) -> None:
    recipe_options = common.recipe_options()
    selection = argparse.ArgumentParser(add_help=False)
    selection.add_argument("--only", type=_step_list, metavar="STEP,...",
                           help=f"run only these steps ({','.join(STEP_NAMES)})")
    selection.add_argument("--skip", type=_step_list, metavar="STEP,...",
                           help="run every step but these")

    up = commands.add_parser(
        "up", parents=[options, recipe_options, selection, common.lock_options()],
        help="set up every node as the recipe says (idempotent, resumable)",
        description="Run the setup steps in order (" + ", ".join(STEP_NAMES) + "): each probes "
                    "every node, changes only what differs, then verifies. A node that is down "
                    "or fails does not stop the others; run `up` again to finish the job.")
    up.set_defaults(handler=cmd_up, dry_run=False)

    plan = commands.add_parser(
        "plan", parents=[options, recipe_options, selection],
        help="show what `up` would change on each node, changing nothing")
    plan.set_defaults(handler=cmd_up, dry_run=True)

    down = commands.add_parser(
        "down", parents=[options, recipe_options, common.lock_options()],
        help="undo a step on every node (shell: remove the ~/.bashrc block)")
    down.add_argument("what", choices=["shell"], help="what to undo")
    down.set_defaults(handler=cmd_down)


def _step_list(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in STEP_NAMES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown step {', '.join(unknown) or repr(text)} (steps: {', '.join(STEP_NAMES)})")
    return names


def cmd_up(args: argparse.Namespace) -> int:
    """`up` and `plan` (args.dry_run): the steps over every node, then the summary."""
    from clusterprep.render import jsonout, steps_console, steps_json
    recipe = load_recipe(args.recipe, args.shared_dir)
    steps = select_steps(args.only, args.skip, recipe)
    inventory = common.inventory(args)

    async def work() -> int:
        progress = None if args.json else steps_console.StepProgress(steps, inventory.names)
        try:
            async with common.open_fleet(args, inventory) as fleet:
                async with common.holding_lock(args, fleet, not args.dry_run,
                                               recipe.shared_dir):
                    result = await run_steps(fleet, recipe, steps, dry_run=args.dry_run,
                                             timeout=args.timeout, listener=progress)
        finally:
            if progress is not None:
                progress.close()
        if args.json:
            jsonout.emit(steps_json.up_document(result, inventory.warnings))
        else:
            steps_console.summary(result)
        return common.exit_status(result)

    return common.run_async(work)


def cmd_down(args: argparse.Namespace) -> int:
    from clusterprep.render import steps_console, steps_json
    recipe = load_recipe(args.recipe, args.shared_dir)
    inventory = common.inventory(args)
    return common.over_fleet(
        args, inventory, lambda fleet: run_down(fleet, recipe, timeout=args.timeout),
        common.shown(args, lambda result: steps_json.up_document(result, inventory.warnings),
                     steps_console.down_summary), locked=True)
