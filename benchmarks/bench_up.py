"""`clusterprep up` on 1 node vs 16 nodes of the simulated cluster (venv backend, local
wheelhouse, local git repository): the whole setup, first run and second (nothing-to-do) run.

Run as root from the repository root: `python3 benchmarks/bench_up.py [--nodes 16] [--repeat 3]`.
Prints a markdown table; the target is 16-node time <= 1.5 x 1-node time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import cluster  # noqa: E402
import setupkit  # noqa: E402


def timed_up(sim: cluster.SimCluster, recipe: Path, home: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HOME": str(home)}
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "clusterprep", "up", "-n", str(sim.nodes_file),
                           "-F", str(sim.ssh_config), "-r", str(recipe), "--json"],
                          env=env, capture_output=True, text=True)
    seconds = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"up failed on {len(sim)} nodes:\n{done.stdout}\n{done.stderr}")
    return seconds


def measure(n: int, work: Path, repeat: int) -> tuple[float, float]:
    """Median seconds of a first `up` (fresh shared folder and homes) and of a second one."""
    wheelhouse = setupkit.make_wheelhouse(work / "wheelhouse")
    firsts, seconds = [], []
    for i in range(repeat):
        base = work / f"n{n}-{i}"
        repo = base / "upstream"
        rev = setupkit.make_git_repo(repo)
        home = base / "home"
        home.mkdir()
        with cluster.SimCluster(base / "cluster", n) as sim:
            recipe = setupkit.venv_recipe(base / "venv.toml", sim.shared, repo, rev, wheelhouse)
            firsts.append(timed_up(sim, recipe, home))
            seconds.append(timed_up(sim, recipe, home))
    return statistics.median(firsts), statistics.median(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    problem = cluster.check_environment()
    if problem:
        raise SystemExit(problem)
    with tempfile.TemporaryDirectory(prefix="bench-up-") as tmp:
        one = measure(1, Path(tmp), args.repeat)
        many = measure(args.nodes, Path(tmp), args.repeat)
    print(f"| `clusterprep up` (venv, median of {args.repeat}) | 1 node | {args.nodes} nodes "
          f"| ratio |")
    print("|---|---:|---:|---:|")
    for label, a, b in (("first run (installs)", one[0], many[0]),
                        ("second run (nothing to do)", one[1], many[1])):
        print(f"| {label} | {a:.2f} s | {b:.2f} s | {b / a:.2f} |")
    print(f"\nmachine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}")


if __name__ == "__main__":
    main()
