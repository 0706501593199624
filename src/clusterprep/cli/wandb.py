"""`clusterprep wandb login|verify|logout`: Weights & Biases on every node, the key never shown."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Callable
from typing import Any

from clusterprep import wandb
from clusterprep.cli import common
from clusterprep.errors import RecipeError
from clusterprep.recipe import load_recipe


def add_parser(commands: Any, options: argparse.ArgumentParser) -> None:
    parser = commands.add_parser(
        "wandb", help="log every node into Weights & Biases, verify it, log out",
        description="Weights & Biases on every node. The W&B server is the recipe's [wandb] "
                    "host, else $WANDB_BASE_URL, else https://api.wandb.ai.")
    actions = parser.add_subparsers(dest="wandb_command", required=True, metavar="ACTION")
    recipe_options = common.recipe_options()

    login = actions.add_parser(
        "login", parents=[options, recipe_options, common.lock_options()],
        help="put the API key into every node's netrc",
        description="Write the W&B API key into every node's $NETRC or ~/.netrc (mode 0600), "
                    "as `wandb login` does, keeping every other entry. The key comes from "
                    f"{wandb.KEY_SOURCES}; never from the command line. It travels to the "
                    "nodes on the SSH channel's stdin only.")
    login.add_argument("--key-file", metavar="FILE",
                       help="read the key from FILE (its first and only word)")
    login.set_defaults(handler=cmd_wandb_login)

    verify = actions.add_parser(
        "verify", parents=[options, recipe_options], help="prove every node can log to W&B",
        description="On every node, inside the env: wandb imports, finds the login, and logs "
                    "one metric in a run named after the node. Online when the W&B server "
                    "answers from here, else offline (WANDB_MODE=offline).")
    mode = verify.add_mutually_exclusive_group()
    mode.add_argument("--online", dest="mode", action="store_const", const="online",
                      help="log to the W&B server (the tutorial's check); fail if it is "
                           "unreachable")
    mode.add_argument("--offline", dest="mode", action="store_const", const="offline",
                      help="log an offline run on every node, without the server")
    verify.add_argument("--python", default=None, metavar="PATH",
                        help="the interpreter on the nodes (default: the env's)")
    verify.add_argument("--project", default=None, metavar="NAME",
                        help="W&B project of the check runs (default: the recipe's [wandb] "
                             f"project, else {wandb.DEFAULT_PROJECT})")
    verify.set_defaults(handler=cmd_wandb_verify, mode=None)

    logout = actions.add_parser(
        "logout", parents=[options, recipe_options, common.lock_options()],
        help="remove the W&B entry from every node's netrc",
        description="Remove the W&B server's entry from every node's netrc; every other entry "
                    "stays as it was.")
    logout.set_defaults(handler=cmd_wandb_logout)


def _settings(args: argparse.Namespace) -> wandb.WandbSettings:
    """The recipe's [wandb] settings; without a usable recipe (login needs none), defaults."""
    if args.recipe is None and args.shared_dir is None:
        try:
            return load_recipe(None, None).wandb
        except RecipeError:
            return wandb.WandbSettings()
    return load_recipe(args.recipe, args.shared_dir).wandb


def _env_python(args: argparse.Namespace) -> str | None:
    """The recipe env's python, whose wandb decides each node's server; None without one."""
    try:
        return load_recipe(args.recipe, args.shared_dir).env.python
    except RecipeError:
        return None


def _show_netrc(args: argparse.Namespace) -> Callable[[wandb.NetrcReport], None]:
    from clusterprep.render import wandb as wandb_render
    return common.shown(args, wandb_render.netrc_document, wandb_render.netrc_table)


def cmd_wandb_login(args: argparse.Namespace) -> int:
    url = _settings(args).resolve_base_url(os.environ)
    prompt = _hidden_prompt if sys.stdin.isatty() else None
    key, _ = wandb.read_api_key(args.key_file, os.environ, prompt)
    os.environ.pop("WANDB_API_KEY", None)  # no copy for the processes we start (ssh -G, ...)
    inventory = common.inventory(args)
    return common.over_fleet(args, inventory,
                             lambda fleet: wandb.login(fleet, key, url, _env_python(args),
                                                       timeout=args.timeout),
                             _show_netrc(args), locked=True)


def _hidden_prompt() -> str:
    return getpass.getpass("W&B API key (https://wandb.ai/authorize; input hidden): ")


def cmd_wandb_logout(args: argparse.Namespace) -> int:
    url = _settings(args).resolve_base_url(os.environ)
    inventory = common.inventory(args)
    return common.over_fleet(args, inventory,
                             lambda fleet: wandb.logout(fleet, url, _env_python(args),
                                                        timeout=args.timeout),
                             _show_netrc(args), locked=True)


def cmd_wandb_verify(args: argparse.Namespace) -> int:
    from clusterprep.render import wandb as wandb_render
    if args.python is None:
        recipe = load_recipe(args.recipe, args.shared_dir)
        settings, python = recipe.wandb, recipe.env.python
    else:
        settings, python = _settings(args), args.python
    project = args.project or settings.project
    url = settings.resolve_base_url(os.environ)
    inventory = common.inventory(args)
    mode, note = wandb.choose_mode(args.mode, url or wandb.CLOUD_URL)
    return common.over_fleet(
        args, inventory,
        lambda fleet: wandb.verify(fleet, url=url, project=project, mode=mode,
                                   python=python, note=note, timeout=args.timeout),
        common.shown(args, wandb_render.verify_document, wandb_render.verify_table))
