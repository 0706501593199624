#!/usr/bin/env python3
"""Benchmark `weights verify --load` on 8 nodes against 1, and `weights stage --from-cache
STAGING` (adopting a hand-copied cache in place) against `sha256sum` of the same blobs.

Loads, side by side in one run on one simulated cluster of 8 sshd nodes (the same command, with
a nodes file of the first node alone, then of all 8), median of REPEAT:
  sleep 1      : a load that waits: what the orchestration costs (one probe per node)
  hub check    : no [[weights.load]]: huggingface_hub in the env resolves the files offline
  t5 encoder   : transformers loads a tiny T5 encoder (tests/loadenv.py's env): CPU-bound
Every simulated node shares this machine's CPUs: a CPU-bound load on 8 nodes cannot take less
than 8 x its CPU time / the number of CPUs here; on a real cluster each node has its own.

Adopting: a hub cache of SIZE MB in 4 blobs (just written: read from the page cache), hashed by
`sha256sum` and adopted by `weights stage --from-cache S --staging S` (its records and hash
cache removed before each run), median of REPEAT, as seconds per GiB.

Usage: python3 benchmarks/bench_weights_load.py [--size-mb 1024] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
from pathlib import Path

from benchkit import clusterprep, timed

import cluster  # noqa: E402  (benchkit puts tests/ on sys.path)
import hubcache  # noqa: E402
import loadenv  # noqa: E402
from test_weights_load import T5_AND_GPU, staged_by_cp_r, write_recipe  # noqa: E402

LOADS = {
    "sleep 1": '[[weights.load]]\nname = "sleep"\ncommand = "sleep 1"\n',
    "hub check": "",
    "t5 encoder": T5_AND_GPU.split("[[weights.load]]\nname = \"on a GPU\"")[0],
}
GIB = 1 << 30


def loads(work: Path, repeat: int) -> None:
    env_path, why = loadenv.ensure()
    if env_path is None:
        raise SystemExit(why)
    with cluster.SimCluster(work / "cluster", 8) as sim:
        (sim.shared / "code").mkdir()
        staged_by_cp_r(env_path, sim.shared, work)
        recipes = {name: write_recipe(work / f"{i}.toml", sim.shared, env_path, text)
                   for i, (name, text) in enumerate(LOADS.items())}
        first = recipes["sleep 1"]
        for command in (["weights", "stage", "-r", str(first), "--from-cache",
                         str(sim.shared / "hf-hub")],
                        ["weights", "sync", "-r", str(first), "-n", str(sim.nodes_file),
                         "-F", str(sim.ssh_config)]):
            timed(*clusterprep(*command))
        one = work / "one-node.txt"
        one.write_text(sim.nodes_file.read_text().split()[0] + "\n")
        print(f"verify --load, median of {repeat}, load {os.getloadavg()[0]:.2f}")
        print("| load | 1 node: s | 8 nodes: s | 8 / 1 |\n|---|---:|---:|---:|")
        for name, recipe in recipes.items():
            seconds = {}
            for nodes in (one, sim.nodes_file):
                argv, env = clusterprep("weights", "verify", "--load", "-r", str(recipe),
                                        "-n", str(nodes), "-F", str(sim.ssh_config), "--json")
                seconds[nodes] = statistics.median(timed(argv, env) for _ in range(repeat))
            print(f"| {name} | {seconds[one]:.2f} | {seconds[sim.nodes_file]:.2f} | "
                  f"{seconds[sim.nodes_file] / seconds[one]:.2f} |")


def adopting(work: Path, size_mb: int, repeat: int) -> None:
    staging = work / "hub"
    part = size_mb * hubcache.MB // 4
    hubcache.add_revision(staging, "bench/adopt", "main", "e" * 40, {
        f"model-{i:05d}-of-00004.safetensors": os.urandom(part) for i in range(4)})
    blobs = sorted(map(str, (staging / "models--bench--adopt" / "blobs").iterdir()))
    argv, env = clusterprep("weights", "stage", "--from-cache", str(staging), "--staging",
                            str(staging), "--repo", "bench/adopt", "--json")
    env["HOME"] = str(work)
    figures: dict[str, list[float]] = {"sha256sum": [], "weights stage --from-cache STAGING": []}
    for _ in range(repeat):
        figures["sha256sum"].append(timed(["sha256sum", *blobs]))
        shutil.rmtree(staging / ".clusterprep-staged", ignore_errors=True)
        (staging / ".clusterprep-manifest.json").unlink(missing_ok=True)
        figures["weights stage --from-cache STAGING"].append(timed(argv, env))
    size = size_mb * hubcache.MB / GIB
    base = statistics.median(figures["sha256sum"]) / size
    print(f"\nadopting {size_mb} MB in 4 blobs in place, median of {repeat}, "
          f"load {os.getloadavg()[0]:.2f}")
    print("| way | s per GiB | / sha256sum |\n|---|---:|---:|")
    for way, seconds in figures.items():
        per_gib = statistics.median(seconds) / size
        print(f"| {way} | {per_gib:.2f} | {per_gib / base:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-load-") as tmp:
        loads(Path(tmp), args.repeat)
        adopting(Path(tmp), args.size_mb, args.repeat)


if __name__ == "__main__":
    main()
