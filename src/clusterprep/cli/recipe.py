"""`clusterprep recipe show|init`: print a recipe, or write the default one to edit."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from clusterprep import suggest
from clusterprep.cli import common
from clusterprep.errors import UsageError
from clusterprep.localfiles import write_atomically
from clusterprep.recipe import read_text
from clusterprep.render import console


def add_parser(commands: Any) -> None:
    recipe = commands.add_parser("recipe", help="show a recipe, or write one to edit")
    actions = recipe.add_subparsers(dest="action", required=True, metavar="ACTION")
    show = actions.add_parser("show", help="print a recipe (default: the built-in one)")
    show.add_argument("name", nargs="?", default=None, metavar="NAME|FILE")
    show.set_defaults(handler=cmd_recipe_show)
    init = actions.add_parser("init", help="write the default recipe to FILE, to edit")
    init.add_argument("file", metavar="FILE")
    init.add_argument("--force", action="store_true", help="overwrite FILE if it exists")
    init.set_defaults(handler=cmd_recipe_init)


def cmd_recipe_show(args: argparse.Namespace) -> int:
    _, text = read_text(args.name)
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return common.EXIT_OK


def cmd_recipe_init(args: argparse.Namespace) -> int:
    target = Path(args.file)
    if target.exists() and not args.force:
        raise UsageError(f"{target} exists; use --force to overwrite it")
    _, text = read_text(None)
    write_atomically(target, text.encode("utf-8"))
    up = suggest.command("up", "-r", str(target.resolve()))
    console.note(f"wrote {target}: edit it, then `{up}`")
    return common.EXIT_OK
