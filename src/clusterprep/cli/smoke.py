"""`clusterprep smoke`: prove the prepared cluster can start multi-node training together."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from clusterprep.cli import common
from clusterprep.localfiles import write_atomically
from clusterprep.recipe import load_recipe
from clusterprep.smoke.model import PHASES, SmokeReport
from clusterprep.smoke.runner import BACKENDS, SmokeOptions, smoke

DEFAULT_TIMEOUT = 300.0
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def add_parser(commands: Any, options: argparse.ArgumentParser) -> None:
    parser = commands.add_parser(
        "smoke", parents=[options, common.recipe_options()],
        help="prove the nodes can start multi-node training together",
        description="Prove, in order, stopping at the first phase that fails: names (the "
                    "master address and every node's name resolve alike on every node), "
                    "rendezvous (every node reaches the head's master port), links (every node "
                    "reaches its peers from the interface NCCL_SOCKET_IFNAME / "
                    "GLOO_SOCKET_IFNAME names; ring throughput), collective (real torchrun on "
                    "every node inside the env, an all_reduce sweep with nccl-tests' figures), "
                    "hand-over (the hostfile colossalai run reads, and the launch lines). "
                    "--timeout bounds the collective (default 300 s); nothing it started is "
                    "left running afterwards.")
    group = parser.add_argument_group("smoke options")
    group.add_argument("--master-port", type=port, default=29500, metavar="PORT",
                       help="the rendezvous port, as the launcher's --master_port (default 29500)")
    group.add_argument("--pairs-up-to", type=common.positive_int, default=16, metavar="N",
                       help="check every pair of nodes while there are at most N nodes, else "
                            "ring neighbours only (default 16)")
    group.add_argument("--link-seconds", type=seconds_or_zero, default=3.0, metavar="S",
                       help="seconds of traffic on each ring link (default 3; 0: reachability "
                            "only)")
    group.add_argument("--backend", choices=BACKENDS, default="auto",
                       help="nccl or gloo; auto: nccl when every node has a GPU (default)")
    group.add_argument("--sizes", type=sizes, default=None, metavar="LIST",
                       help="all_reduce sizes in bytes, K/M/G allowed (default: 1M,16M,256M for "
                            "nccl, 64K,1M,16M for gloo)")
    group.add_argument("--iters", type=common.positive_int, default=20, metavar="N",
                       help="timed all_reduce calls per size (default 20)")
    group.add_argument("--warmup", type=whole_or_zero, default=5, metavar="N",
                       help="untimed calls before them (default 5)")
    group.add_argument("--min-busbw", type=common.positive_float, default=None, metavar="GB/s",
                       help="fail when the largest size's busbw is under this")
    group.add_argument("--python", metavar="PATH", default=None,
                       help="the env's interpreter on each node (default: the recipe's); "
                            "torchrun is taken from beside it")
    group.add_argument("--hostfile", metavar="FILE", default="hostfile",
                       help="where to write the hostfile for colossalai run (default: ./hostfile)")
    group.add_argument("--until", choices=PHASES, default=PHASES[-1], metavar="PHASE",
                       help=f"stop after this phase ({', '.join(PHASES)}; default: all)")
    group.add_argument("--html", metavar="FILE", default=None,
                       help="also write a self-contained HTML report to FILE")
    parser.set_defaults(handler=cmd_smoke)


def port(text: str) -> int:
    value = common.positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"a port is 1 to 65535, not {value}")
    return value


def whole_or_zero(text: str) -> int:
    if text.strip() == "0":
        return 0
    try:
        return common.positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected a whole number, 0 or more, got {text!r}") \
            from None


def seconds_or_zero(text: str) -> float:
    if text.strip() in ("0", "0.0"):
        return 0.0
    try:
        return common.positive_float(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected seconds, 0 or more, got {text!r}") from None


def sizes(text: str) -> tuple[int, ...]:
    """`64K,1M,16M` -> bytes (binary units, as nccl-tests' -b/-e)."""
    found = []
    for item in text.split(","):
        match = re.fullmatch(r"\s*(\d+)\s*([KMG]?)i?B?\s*", item, re.IGNORECASE)
        if not match or int(match.group(1)) == 0:
            raise argparse.ArgumentTypeError(f"{item.strip()!r} is not a size such as 64K, 1M "
                                             "or 1048576")
        found.append(int(match.group(1)) * _UNITS[match.group(2).upper()])
    return tuple(found)


def cmd_smoke(args: argparse.Namespace) -> int:
    from clusterprep.render import smoke_json, smoke_progress

    recipe = load_recipe(args.recipe, args.shared_dir)
    inventory = common.inventory(args)
    options = SmokeOptions(
        python=args.python or recipe.env.python, exports=recipe.exports,
        master_port=args.master_port, pairs_up_to=args.pairs_up_to,
        link_seconds=args.link_seconds, backend=args.backend, sizes=args.sizes,
        iters=args.iters, warmup=args.warmup, min_busbw=args.min_busbw,
        timeout=args.timeout or DEFAULT_TIMEOUT, dial_timeout=args.connect_timeout,
        hostfile=Path(args.hostfile), last_phase=args.until)

    def tables(report: SmokeReport) -> None:
        from clusterprep.render import smoke as tables  # rich: only for people
        tables.report_tables(report)

    shown = common.shown(args, lambda report: smoke_json.document(report, inventory.warnings),
                         tables)

    def show(report: SmokeReport) -> None:
        if args.html:
            from clusterprep.render import smoke_html
            write_atomically(Path(args.html), smoke_html.smoke_page(report).encode())
        shown(report)

    return common.over_fleet(
        args, inventory, lambda fleet: smoke(fleet, options, smoke_progress.ProgressLines()),
        show)
