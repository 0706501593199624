"""`clusterprep check` on 1 node against 64 nodes of the simulated cluster.

The interpreter checked is the nodes' system python (a real one, with its real packages), with
two install checks; everything else (fingerprint probe, clock, drift) is the real command.
Whole process timed, first contact included; median of --repeat runs; `run true` alongside,
as the floor (a connection and a shell per node, nothing else). Also the CPU of the
fingerprint probe alone, run here as the nodes run it (same input, same python): the share of a
node's CPU that is the probe's, apart from sshd and the shell.

With `--probe-against REV`, only the probe: this checkout's and REV's, run in turns (so that
both see the same load), for the ratio of their CPU.

Usage (as root): python3 benchmarks/bench_check.py [--sizes 1 64] [--repeat 3]
                 python3 benchmarks/bench_check.py --probe-against main [--runs 40]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchkit import ROOT, NodeCpu, clusterprep, timed, timed_with_cpu
from cluster import SimCluster

from clusterprep import probes
from clusterprep.check.model import CheckSpec
from clusterprep.recipe import load_recipe

RECIPE = """
[shared]
dir = "{shared}"
[env]
backend = "venv"
name = "bench"
python = "3"
[[checks]]
name = "python"
command = "python3 --version"
expect = "^Python 3"
[[checks]]
name = "json"
import = "json"
"""


Timing = tuple[float, float, float | None]  # median wall s, head CPU s, node CPU s per node


def measure(size: int, repeat: int, work: Path) -> dict[str, Timing]:
    """`check`, and `run true` (the floor: a connection and a shell per node), each run
    `repeat` times on `size` nodes."""
    with SimCluster(work / f"cluster{size}", size) as sim:
        sim.start()
        sim.learn_host_keys()
        recipe = work / f"recipe{size}.toml"
        recipe.write_text(RECIPE.format(shared=sim.shared))
        where = ["-n", str(sim.nodes_file), "-F", str(sim.ssh_config)]
        commands = {
            "check": clusterprep("check", *where, "-r", str(recipe),
                                 "--python", "/usr/bin/python3", "--json"),
            "run true": clusterprep("run", *where, "--json", "true"),
        }
        nodes = NodeCpu(sim)
        try:
            return {name: timed_runs(argv, env, repeat, nodes, size)
                    for name, (argv, env) in commands.items()}
        finally:
            nodes.close()


def timed_runs(argv: list[str], env: dict[str, str], repeat: int, nodes: NodeCpu,
               size: int) -> Timing:
    timed(argv, env)  # warm the page cache
    walls, heads, per_node = [], [], []
    for _ in range(repeat):
        before = nodes.seconds()
        wall, head = timed_with_cpu(argv, env)
        after = nodes.seconds()
        walls.append(wall)
        heads.append(head)
        if before is not None and after is not None:
            per_node.append((after - before) / size)
    node_cpu = statistics.median(per_node) if per_node else None
    return statistics.median(walls), statistics.median(heads), node_cpu


def probe_cpu(checks: list[CheckSpec], runs: int = 20) -> float:
    """Median CPU seconds (the probe and what it starts) of the fingerprint probe run here."""
    source = probes.load("fingerprint")
    return statistics.median(probe_run(source, checks) for _ in range(runs))


def probe_run(source: str, checks: list[CheckSpec]) -> float:
    """CPU seconds of one run of the probe `source` here, as the nodes run it."""
    argv = ["bash", "-c", probes.command(source, "/usr/bin/python3", isolated=False)]
    stdin = source.encode() + json.dumps(
        {"shared": "/tmp", "checks": [c.as_payload() for c in checks]}).encode()
    process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                               env={"PATH": "/usr/bin:/bin", "HOME": "/tmp"})
    process.stdin.write(stdin)
    process.stdin.close()
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit("the fingerprint probe failed")
    return usage.ru_utime + usage.ru_stime


def probe_source_at(rev: str, work: Path) -> str:
    """The fingerprint probe as commit `rev` sends it (its own probes.load, parts inlined)."""
    tree = work / "rev"
    tree.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "src"],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return subprocess.run(
        [sys.executable, "-c", "from clusterprep import probes; "
                               "print(probes.load('fingerprint'), end='')"],
        env={**os.environ, "PYTHONPATH": str(tree / "src")}, capture_output=True, text=True,
        check=True).stdout


def compare_probes(rev: str, runs: int, work: Path) -> None:
    """This checkout's probe against `rev`'s, in turns: median CPU of each and their ratio."""
    recipe = work / "recipe.toml"
    recipe.write_text(RECIPE.format(shared=work))
    checks = load_recipe(str(recipe)).checks
    sources = {"this checkout": probes.load("fingerprint"), rev: probe_source_at(rev, work)}
    seconds: dict[str, list[float]] = {name: [] for name in sources}
    for _ in range(runs):
        for name, source in sources.items():
            seconds[name].append(probe_run(source, checks))
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    print(f"machine: {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f}")
    for name, median in medians.items():
        print(f"fingerprint probe, {name}: {median * 1000:.1f} ms of CPU (median of {runs})")
    print(f"ratio: {medians['this checkout'] / medians[rev]:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--probe-against", metavar="REV")
    parser.add_argument("--runs", type=int, default=40)
    args = parser.parse_args()
    if args.probe_against:
        with tempfile.TemporaryDirectory(prefix="bench-probe-", dir="/tmp") as work:
            compare_probes(args.probe_against, args.runs, Path(work))
        return
    with tempfile.TemporaryDirectory(prefix="bench-check-", dir="/tmp") as work:
        times = {size: measure(size, args.repeat, Path(work)) for size in args.sizes}
        recipe = Path(work) / "recipe.toml"
        recipe.write_text(RECIPE.format(shared=work))
        probe = probe_cpu(load_recipe(str(recipe)).checks)
    print(f"machine: {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f}")
    print("| command | nodes | wall (s) | ratio to 1 node | head CPU (s) | "
          "node CPU per node (ms) |")
    print("|---|---:|---:|---:|---:|---:|")
    for command in ("check", "run true"):
        base = times[args.sizes[0]][command][0]
        for size, timings in times.items():
            wall, head, node = timings[command]
            node_text = f"{node * 1000:.0f}" if node is not None else "n/a"
            print(f"| {command} | {size} | {wall:.3f} | {wall / base:.2f} | {head:.3f} | "
                  f"{node_text} |")
    print(f"fingerprint probe alone, run here: {probe * 1000:.0f} ms of CPU (median of 20)")


if __name__ == "__main__":
    main()
