"""The command line: one function per command that parses, calls the core, and renders.

Exit status: 0 when every node succeeded, 1 when any node failed, 2 for bad input or setup
(the message names the file, line or node), 130 when the user interrupted.

Renderers built on rich are imported inside the commands that use them: importing them all
would add a tenth of a second to every invocation, `clusterprep run` included.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, Protocol, TypeVar

from clusterprep import __version__, tracking
from clusterprep.check.inspect import inspect
from clusterprep.check.model import CheckReport
from clusterprep.errors import ClusterprepError, RecipeError, UsageError
from clusterprep.fleet import HOST_KEY_POLICIES, Fleet, FleetResult, SshOptions
from clusterprep.inventory import Inventory, load_inventory
from clusterprep.localfiles import write_atomically
from clusterprep.recipe import DEFAULT_RECIPE, load_recipe
from clusterprep.recipe import read_text as read_recipe_text
from clusterprep.render import console, jsonout
from clusterprep.steps import STEP_NAMES
from clusterprep.steps.runner import run_down, run_steps, select_steps
from clusterprep.survey import survey
from clusterprep.transfer.broadcast import sync
from clusterprep.transfer.manifest import build as build_manifest
from clusterprep.transfer.spec import RepoRef, WeightsSpec, parse_repo_option
from clusterprep.transfer.stage import FAILED as STAGE_FAILED
from clusterprep.transfer.stage import local_hub_cache, stage
from clusterprep.transfer.progress import NodeBytesListener
from clusterprep.transfer.verify import verify as verify_weights

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
    _add_setup_commands(commands, common)
    _add_check_command(commands, common)
    _add_wandb_commands(commands, common)
    _add_weights_commands(commands, common)
    return parser


def _recipe_options() -> argparse.ArgumentParser:
    recipe_options = argparse.ArgumentParser(add_help=False)
    group = recipe_options.add_argument_group("recipe options")
    group.add_argument("-r", "--recipe", metavar="NAME|FILE", default=None,
                       help=f"built-in recipe name or TOML file (default: {DEFAULT_RECIPE})")
    group.add_argument("--shared-dir", metavar="DIR", default=None,
                       help="the shared folder (over $SHAREDDIR and the recipe's [shared] dir)")
    return recipe_options


def _add_check_command(commands: Any, common: argparse.ArgumentParser) -> None:
    check = commands.add_parser(
        "check", parents=[common, _recipe_options()],
        help="run the install checks on every node and show how nodes differ",
        description="Run the recipe's install checks on every node, inside the env, and "
                    "fingerprint every node (packages and their builds, torch/CUDA/NCCL, "
                    "driver, GPUs, environment variables, shadowing packages, clock) in one "
                    "round trip each. Exit 0 only when every check passes everywhere and no "
                    "difference between nodes is critical.")
    check.add_argument("--python", metavar="PATH", default=None,
                       help="the interpreter to check on each node (default: the env's)")
    check.add_argument("--html", metavar="FILE", default=None,
                       help="also write a self-contained HTML report to FILE")
    check.set_defaults(handler=cmd_check)


def _add_wandb_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    wandb = commands.add_parser(
        "wandb", help="log every node into Weights & Biases, verify it, log out",
        description="Weights & Biases on every node. The W&B server is the recipe's [wandb] "
                    "host, else $WANDB_BASE_URL, else https://api.wandb.ai.")
    actions = wandb.add_subparsers(dest="wandb_command", required=True, metavar="ACTION")
    recipe_options = _recipe_options()

    login = actions.add_parser(
        "login", parents=[common, recipe_options], help="put the API key into every node's netrc",
        description="Write the W&B API key into every node's $NETRC or ~/.netrc (mode 0600), "
                    "as `wandb login` does, keeping every other entry. The key comes from "
                    f"{tracking.KEY_SOURCES}; never from the command line. It travels to the "
                    "nodes on the SSH channel's stdin only.")
    login.add_argument("--key-file", metavar="FILE",
                       help="read the key from FILE (its first and only word)")
    login.set_defaults(handler=cmd_wandb_login)

    verify = actions.add_parser(
        "verify", parents=[common, recipe_options], help="prove every node can log to W&B",
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
                             f"project, else {tracking.DEFAULT_PROJECT})")
    verify.set_defaults(handler=cmd_wandb_verify, mode=None)

    logout = actions.add_parser(
        "logout", parents=[common, recipe_options],
        help="remove the W&B entry from every node's netrc",
        description="Remove the W&B server's entry from every node's netrc; every other entry "
                    "stays as it was.")
    logout.set_defaults(handler=cmd_wandb_logout)


def _add_weights_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    weights_options = argparse.ArgumentParser(add_help=False, parents=[_recipe_options()])
    group = weights_options.add_argument_group("weights options")
    group.add_argument("--repo", action="append", type=_repo_option, metavar="ID[@REV]",
                       help="a Hugging Face repo every node needs (repeatable); default: the "
                            "recipe's [weights] repos")
    group.add_argument("--staging", metavar="DIR",
                       help="the staging hub cache; default: the recipe's [weights] staging, "
                            "else SHARED/hf-hub")
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


def _add_setup_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    recipe_options = _recipe_options()
    step_names = ",".join(STEP_NAMES)
    selection = argparse.ArgumentParser(add_help=False)
    selection.add_argument("--only", type=_step_list, metavar="STEP,...",
                           help=f"run only these steps ({step_names})")
    selection.add_argument("--skip", type=_step_list, metavar="STEP,...",
                           help="run every step but these")

    up = commands.add_parser(
        "up", parents=[common, recipe_options, selection],
        help="set up every node as the recipe says (idempotent, resumable)",
        description="Run the setup steps in order (" + ", ".join(STEP_NAMES) + "): each probes "
                    "every node, changes only what differs, then verifies. A node that is down "
                    "or fails does not stop the others; run `up` again to finish the job.")
    up.set_defaults(handler=cmd_up, dry_run=False)

    plan = commands.add_parser(
        "plan", parents=[common, recipe_options, selection],
        help="show what `up` would change on each node, changing nothing")
    plan.set_defaults(handler=cmd_up, dry_run=True)

    down = commands.add_parser(
        "down", parents=[common, recipe_options],
        help="undo a step on every node (shell: remove the ~/.bashrc block)")
    down.add_argument("what", choices=["shell"], help="what to undo")
    down.set_defaults(handler=cmd_down)

    recipe = commands.add_parser("recipe", help="show a recipe, or write one to edit")
    actions = recipe.add_subparsers(dest="action", required=True, metavar="ACTION")
    show = actions.add_parser("show", help="print a recipe (default: the built-in one)")
    show.add_argument("name", nargs="?", default=None, metavar="NAME|FILE")
    show.set_defaults(handler=cmd_recipe_show)
    init = actions.add_parser("init", help="write the default recipe to FILE, to edit")
    init.add_argument("file", metavar="FILE")
    init.add_argument("--force", action="store_true", help="overwrite FILE if it exists")
    init.set_defaults(handler=cmd_recipe_init)


def _step_list(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in STEP_NAMES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown step {', '.join(unknown) or repr(text)} (steps: {', '.join(STEP_NAMES)})")
    return names


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


class _Outcome(Protocol):
    ok: bool
    interrupted: bool


def _exit_status(outcome: _Outcome) -> int:
    """130 when the user interrupted, else 0 when every node succeeded, else 1."""
    if outcome.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_OK if outcome.ok else EXIT_FAILED


def _run_async(work: Callable[[], Coroutine[Any, Any, int]]) -> int:
    try:
        return asyncio.run(work())
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


Result = TypeVar("Result", bound=_Outcome)


def _over_fleet(args: argparse.Namespace, inventory: Inventory,
                gather: Callable[[Fleet], Awaitable[Result]],
                show: Callable[[Result], None]) -> int:
    """The shape of most commands: `gather` a result over the nodes' connections, close them,
    `show` the result, and exit as it says (`_exit_status`)."""

    async def work() -> int:
        async with Fleet(inventory, _ssh_options(args)) as fleet:
            result = await gather(fleet)
        show(result)
        return _exit_status(result)

    return _run_async(work)


def _shown(args: argparse.Namespace, document: Callable[[Result], dict[str, Any]],
           table: Callable[[Result], None]) -> Callable[[Result], None]:
    """Show a result as `document` with --json, else as `table` for people."""

    def show(result: Result) -> None:
        if args.json:
            jsonout.emit(document(result))
        else:
            table(result)

    return show


def cmd_nodes(args: argparse.Namespace) -> int:
    inventory = _inventory(args)
    return _over_fleet(
        args, inventory, lambda fleet: survey(fleet, timeout=args.timeout),
        _shown(args, lambda result: jsonout.nodes_document(result, inventory.warnings),
               console.nodes_table))


def cmd_run(args: argparse.Namespace) -> int:
    command = " ".join(args.command_words)
    if not command.strip():
        raise UsageError("the command to run is empty")
    if args.stream and args.json:
        raise UsageError("--stream and --json cannot be used together")
    inventory = _inventory(args)
    printer = console.LinePrinter() if args.stream else None

    def table(outcome: FleetResult) -> None:
        if printer is not None:
            printer.flush()
            console.failure_summary(outcome)
        else:
            console.grouped_output(outcome)

    return _over_fleet(
        args, inventory,
        lambda fleet: fleet.run(command, timeout=args.timeout, on_output=printer),
        _shown(args, lambda outcome: jsonout.run_document(outcome, inventory.warnings), table))


def cmd_up(args: argparse.Namespace) -> int:
    """`up` and `plan` (args.dry_run): the steps over every node, then the summary."""
    from clusterprep.render import steps_console, steps_json
    recipe = load_recipe(args.recipe, args.shared_dir)
    steps = select_steps(args.only, args.skip, recipe)
    inventory = _inventory(args)

    async def work() -> int:
        progress = None if args.json else steps_console.StepProgress(steps, inventory.names)
        try:
            async with Fleet(inventory, _ssh_options(args)) as fleet:
                result = await run_steps(fleet, recipe, steps, dry_run=args.dry_run,
                                         timeout=args.timeout, listener=progress)
        finally:
            if progress is not None:
                progress.close()
        if args.json:
            jsonout.emit(steps_json.up_document(result, inventory.warnings))
        else:
            steps_console.summary(result)
        return _exit_status(result)

    return _run_async(work)


def cmd_down(args: argparse.Namespace) -> int:
    from clusterprep.render import steps_console, steps_json
    recipe = load_recipe(args.recipe, args.shared_dir)
    inventory = _inventory(args)
    return _over_fleet(
        args, inventory, lambda fleet: run_down(fleet, recipe, timeout=args.timeout),
        _shown(args, lambda result: steps_json.up_document(result, inventory.warnings),
               steps_console.down_summary))


def cmd_check(args: argparse.Namespace) -> int:
    from clusterprep.render import check_console, html
    recipe = load_recipe(args.recipe, args.shared_dir)
    inventory = _inventory(args)

    def show(report: CheckReport) -> None:
        if args.html:
            write_atomically(Path(args.html), html.check_page(report).encode())
        if args.json:
            jsonout.emit(jsonout.check_document(report, inventory.warnings))
            return
        check_console.check_report(report)
        if args.html:
            console.note(f"report written to {args.html}")

    return _over_fleet(
        args, inventory,
        lambda fleet: inspect(fleet, recipe.checks, python=args.python or recipe.env.python,
                              shared=recipe.shared_dir, timeout=args.timeout),
        show)


def _wandb_settings(args: argparse.Namespace) -> tracking.WandbSettings:
    """The recipe's [wandb] settings; without a usable recipe (login needs none), defaults."""
    if args.recipe is None and args.shared_dir is None:
        try:
            return load_recipe(None, None).wandb
        except RecipeError:
            return tracking.WandbSettings()
    return load_recipe(args.recipe, args.shared_dir).wandb


def _show_netrc(args: argparse.Namespace) -> Callable[[tracking.NetrcReport], None]:
    from clusterprep.render import tracking as tracking_render
    return _shown(args, tracking_render.netrc_document, tracking_render.netrc_table)


def cmd_wandb_login(args: argparse.Namespace) -> int:
    url = _wandb_settings(args).resolve_base_url(os.environ)
    prompt = _hidden_prompt if sys.stdin.isatty() else None
    key, _ = tracking.read_api_key(args.key_file, os.environ, prompt)
    os.environ.pop("WANDB_API_KEY", None)  # no copy for the processes we start (ssh -G, ...)
    inventory = _inventory(args)
    return _over_fleet(args, inventory,
                       lambda fleet: tracking.login(fleet, key, url, timeout=args.timeout),
                       _show_netrc(args))


def _hidden_prompt() -> str:
    return getpass.getpass("W&B API key (https://wandb.ai/authorize; input hidden): ")


def cmd_wandb_logout(args: argparse.Namespace) -> int:
    url = _wandb_settings(args).resolve_base_url(os.environ)
    inventory = _inventory(args)
    return _over_fleet(args, inventory,
                       lambda fleet: tracking.logout(fleet, url, timeout=args.timeout),
                       _show_netrc(args))


def cmd_wandb_verify(args: argparse.Namespace) -> int:
    from clusterprep.render import tracking as tracking_render
    if args.python is None:
        recipe = load_recipe(args.recipe, args.shared_dir)
        settings, python = recipe.wandb, recipe.env.python
    else:
        settings, python = _wandb_settings(args), args.python
    project = args.project or settings.project
    url = settings.resolve_base_url(os.environ)
    inventory = _inventory(args)
    mode, note = tracking.choose_mode(args.mode, url)
    return _over_fleet(
        args, inventory,
        lambda fleet: tracking.verify(fleet, url=url, project=project, mode=mode,
                                      python=python, note=note, timeout=args.timeout),
        _shown(args, tracking_render.verify_document, tracking_render.verify_table))


def _weights_spec(args: argparse.Namespace) -> WeightsSpec:
    """The recipe's [weights], with --repo and --staging over it (with both, and no -r, no
    recipe is read: staging a cache needs no shared folder)."""
    staging = Path(args.staging).expanduser() if args.staging else None
    if staging is not None and not staging.is_absolute():
        raise UsageError(f"the staging cache must be an absolute path, not {staging}")
    if staging is not None and args.repo and args.recipe is None:
        return WeightsSpec(tuple(args.repo), staging)
    spec = load_recipe(args.recipe, args.shared_dir).weights
    assert spec is not None
    return WeightsSpec(tuple(args.repo) if args.repo else spec.repos, staging or spec.staging)


def cmd_weights_stage(args: argparse.Namespace) -> int:
    from clusterprep.render import weights as weights_render
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
    return EXIT_FAILED if any(r.action == STAGE_FAILED for r in results) else EXIT_OK


async def _with_bytes_progress(
        args: argparse.Namespace,
        work: Callable[[NodeBytesListener], Awaitable[Result]]) -> Result:
    """`work` with bars of each node's bytes on a terminal (none with --json)."""
    from clusterprep.render.weights import NodeBytesProgress
    progress = NodeBytesProgress(enabled=not args.json)
    try:
        return await work(progress)
    finally:
        progress.stop()


def cmd_weights_sync(args: argparse.Namespace) -> int:
    from clusterprep.render import weights as weights_render
    spec = _weights_spec(args)
    manifest = build_manifest(spec.staging, spec.repos)
    inventory = _inventory(args)
    bwlimit = args.bwlimit * 1e6 if args.bwlimit else None
    return _over_fleet(
        args, inventory,
        lambda fleet: _with_bytes_progress(args, lambda progress: sync(
            fleet, manifest, listener=progress, chain=not args.star, bwlimit=bwlimit,
            timeout=args.timeout)),
        _shown(args, weights_render.sync_document, weights_render.sync_summary))


def cmd_weights_verify(args: argparse.Namespace) -> int:
    from clusterprep.render import weights as weights_render
    spec = _weights_spec(args)
    manifest = build_manifest(spec.staging, spec.repos)
    inventory = _inventory(args)
    return _over_fleet(
        args, inventory,
        lambda fleet: _with_bytes_progress(args, lambda progress: verify_weights(
            fleet, manifest, full=args.full, timeout=args.timeout, listener=progress)),
        _shown(args, weights_render.verify_document, weights_render.verify_table))


def cmd_recipe_show(args: argparse.Namespace) -> int:
    _, text = read_recipe_text(args.name)
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return EXIT_OK


def cmd_recipe_init(args: argparse.Namespace) -> int:
    target = Path(args.file)
    if target.exists() and not args.force:
        raise UsageError(f"{target} exists; use --force to overwrite it")
    _, text = read_recipe_text(None)
    target.write_text(text, encoding="utf-8")
    console.note(f"wrote {target}: edit it, then `clusterprep up -r {target}`")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
