"""`clusterprep weights stage|sync|verify`: pretrained weights staged once, on every node, checked."""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from clusterprep.activation import activate_script
from clusterprep.cli import common
from clusterprep.errors import UsageError
from clusterprep.lock import local_lock
from clusterprep.recipe import load_recipe
from clusterprep.render import jsonout
from clusterprep.fleet import Fleet
from clusterprep.weights import placement
from clusterprep.weights.load import then_load
from clusterprep.weights.manifest import build as build_manifest
from clusterprep.weights.progress import NodeBytesListener
from clusterprep.weights.spec import RepoRef, WeightsSpec, WeightsSpecError, parse_repo_option
from clusterprep.weights.stage import FAILED as STAGE_FAILED
from clusterprep.weights.stage import INTERRUPTED as STAGE_INTERRUPTED
from clusterprep.weights.stage import local_hub_cache, stage
from clusterprep.weights.sync import sync
from clusterprep.weights.verify import verify as verify_weights


LOCK_FILE = ".clusterprep-lock"  # in the staging cache: one `weights stage` at a time


def add_parser(commands: Any, options: argparse.ArgumentParser) -> None:
    weights_options = argparse.ArgumentParser(add_help=False, parents=[common.recipe_options()])
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
    stage_parser = actions.add_parser(
        "stage", parents=[weights_options, common.lock_options()], help="fill the staging cache on the head",
        description="Download what is missing into the staging cache with huggingface_hub "
                    "(it reads HF_TOKEN), or take it from a local hub cache: the files each "
                    "repo's allow_patterns select. A repo is staged whole or not at all: "
                    "every file is checked before it counts as staged, and a rerun keeps "
                    "what arrived whole. Skips repos already staged whole.")
    stage_parser.add_argument(
        "--from-cache", nargs="?", const="", default=None, metavar="DIR",
        help="copy from this hub cache (default: this machine's own) instead of downloading; "
             "the staging folder itself (a cache copied there by hand, as the tutorial's "
             "`cp -r`) is checked and adopted in place, nothing copied")
    stage_parser.add_argument("--json", action="store_true",
                              help="print one JSON object on stdout")
    stage_parser.set_defaults(handler=cmd_weights_stage)
    sync_parser = actions.add_parser(
        "sync", parents=[options, weights_options, common.lock_options()],
        help="make every node's Hugging Face cache hold the staged repos",
        description="Send each node only what its cache lacks, through a pipelined chain of "
                    "nodes. The first node reads the staging cache itself when it sees it "
                    "(the same folder: proved by a token), else this machine sends the bytes. "
                    "A node that fails, cannot be reached or says nothing for --hung-after "
                    "seconds is cut out and the chain re-forms around it; one that holds its "
                    "chain back reads the staging alone. Files get their final name only once "
                    "their sha256 is right. A file already on a node is trusted when it is "
                    "unchanged since clusterprep wrote and hashed it (size, mtime, ctime, "
                    "inode), else hashed.")
    sync_parser.add_argument("--star", action="store_true",
                             help="no chain: every node reads the staging itself (or gets the "
                                  "bytes from here)")
    sync_parser.add_argument("--chains", type=common.positive_int, default=1, metavar="N",
                             help="split the nodes into N chains, each reading the staging "
                                  "(default 1)")
    sync_parser.add_argument("--from-head", action="store_true",
                             help="send the bytes from here even when the nodes see the "
                                  "staging folder (when the shared filesystem is the slow part)")
    sync_parser.add_argument("--full", action="store_true",
                             help="hash every file already on the nodes, stamped or not (finds "
                                  "what a failing disk changed)")
    sync_parser.add_argument("--bwlimit", type=common.positive_float, metavar="MB/S",
                             help="most megabytes per second each chain reads from the staging")
    sync_parser.set_defaults(handler=cmd_weights_sync)
    verify = actions.add_parser(
        "verify", parents=[options, weights_options],
        help="check every node's cache against the staged files, offline",
        description="Per node and repo: complete, missing files, corrupt files, extra "
                    "revisions. Exit status 1 when any file is missing or corrupt.")
    verify.add_argument("--full", action="store_true",
                        help="hash every file (default: sizes, and hashes of changed files)")
    verify.add_argument("--load", action="store_true",
                        help="then run the recipe's [[weights.load]] commands on every node, "
                             "inside the env, in the code's folder, offline (without them: "
                             "huggingface_hub resolves every staged file offline)")
    verify.set_defaults(handler=cmd_weights_verify)


def _repo_option(text: str) -> RepoRef:
    try:
        return parse_repo_option(text)
    except WeightsSpecError as e:
        raise argparse.ArgumentTypeError(e.detail) from e


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
    return spec.only(tuple(args.repo) if args.repo else spec.repos, staging)


def cmd_weights_stage(args: argparse.Namespace) -> int:
    from clusterprep.render import weights as weights_render
    spec = _weights_spec(args)
    source = None
    if args.from_cache is not None:
        source = Path(args.from_cache).expanduser() if args.from_cache else local_hub_cache()
    with local_lock(spec.staging / LOCK_FILE, args.lock_wait):
        results = stage(spec.staging, spec.repos, from_cache=source,
                        on_file=weights_render.StageProgress(enabled=not args.json))
    if args.json:
        jsonout.emit(weights_render.stage_document(results, str(spec.staging)))
    else:
        weights_render.stage_table(results, str(spec.staging))
    if any(r.action == STAGE_INTERRUPTED for r in results):
        return common.EXIT_INTERRUPTED
    return common.EXIT_FAILED if any(r.action == STAGE_FAILED for r in results) \
        else common.EXIT_OK


async def _with_bytes_progress(
        args: argparse.Namespace,
        work: Callable[[NodeBytesListener], Awaitable[common.Result]]) -> common.Result:
    """`work` with bars of each node's bytes on a terminal (none with --json)."""
    from clusterprep.render.weights import NodeBytesProgress
    progress = NodeBytesProgress(enabled=not args.json)
    try:
        return await work(progress)
    finally:
        progress.stop()


def cmd_weights_sync(args: argparse.Namespace) -> int:
    from clusterprep.render import placement as placement_render
    from clusterprep.render import weights as weights_render
    spec = _weights_spec(args)
    manifest = build_manifest(spec.staging, spec.repos)
    wanted = placement.targets(manifest, spec.placements)
    inventory = common.inventory(args)
    bwlimit = args.bwlimit * 1e6 if args.bwlimit else None
    return common.over_fleet(
        args, inventory,
        lambda fleet: _with_bytes_progress(args, lambda progress: placement.after(sync(
            fleet, manifest, listener=progress, chains=args.chains, star=args.star,
            from_head=args.from_head, full=args.full, bwlimit=bwlimit, timeout=args.timeout),
            fleet, spec.code, wanted, place=True, timeout=args.timeout)),
        common.shown(args, placement_render.document_with(weights_render.sync_document),
                     placement_render.table_with(weights_render.sync_summary)),
        locked=True)


def cmd_weights_verify(args: argparse.Namespace) -> int:
    from clusterprep.render import placement as placement_render
    from clusterprep.render import weights as weights_render
    spec = _weights_spec(args)
    manifest = build_manifest(spec.staging, spec.repos)
    wanted = placement.targets(manifest, spec.placements)
    inventory = common.inventory(args)
    document = placement_render.document_with(weights_render.verify_document)
    table = placement_render.table_with(weights_render.verify_table)

    def verified(fleet: Fleet, progress: NodeBytesListener) -> Awaitable[Any]:
        return placement.after(verify_weights(
            fleet, manifest, full=args.full, timeout=args.timeout, listener=progress),
            fleet, spec.code, wanted, place=False, timeout=args.timeout)

    if not args.load:
        return common.over_fleet(
            args, inventory,
            lambda fleet: _with_bytes_progress(args, lambda progress: verified(fleet, progress)),
            common.shown(args, document, table))
    recipe = load_recipe(args.recipe, args.shared_dir)
    return common.over_fleet(
        args, inventory,
        lambda fleet: _with_bytes_progress(args, lambda progress: then_load(
            verified(fleet, progress), fleet, spec.loads, manifest,
            activate=activate_script(recipe.env), cwd=str(spec.code) if spec.code else None,
            timeout=args.timeout)),
        common.shown(args, weights_render.document_with_loads(document),
                     weights_render.table_with_loads(table)))
