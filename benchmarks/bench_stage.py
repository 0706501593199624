#!/usr/bin/env python3
"""Benchmark `clusterprep weights stage --from-cache` against the tutorial's `cp -r`.

The tutorial stages weights with `cp -r ~/.cache/huggingface/hub $SHAREDDIR/...`, which checks
nothing. `weights stage` copies each needed blob aside, hashes it as it copies (sha256, and the
git blob sha1 for small files), fsyncs it, renames it, and records the revision. Compared, on a
hub cache of SIZE MB in 4 blobs, each into a fresh folder, median of REPEAT:
  cp -r             : the tutorial's copy
  cp -r + sha256sum : the copy, then the check a careful person would add
  stage             : clusterprep weights stage --from-cache (cold: nothing staged yet)
  stage again       : the same command once the repo is staged (it finds it present)
The source stays in the page cache throughout (it was just written): these are copy-and-hash
costs, not disk reads.

Usage: python3 benchmarks/bench_stage.py [--size-mb 1024] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import hubcache  # noqa: E402  (needs the sys.path line above)

REPO = "bench/stage"


def timed(argv: list[str], env: dict[str, str] | None = None) -> float:
    started = time.monotonic()
    subprocess.run(argv, check=True, env=env, stdout=subprocess.DEVNULL)
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-stage-"))
    try:
        source = work / "hub"
        part = args.size_mb * hubcache.MB // 4
        hubcache.add_revision(source, REPO, "main", "e" * 40, {
            f"model-{i:05d}-of-00004.safetensors": os.urandom(part) for i in range(4)})
        env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), HOME=str(work))
        stage = [sys.executable, "-m", "clusterprep", "weights", "stage", "--from-cache",
                 str(source), "--repo", REPO, "--staging"]
        blobs = source / ("models--" + REPO.replace("/", "--")) / "blobs"
        figures: dict[str, list[float]] = {}
        for run in range(args.repeat):
            target = work / f"copy-{run}"
            figures.setdefault("cp -r", []).append(timed(["cp", "-r", str(source), str(target)]))
            shutil.rmtree(target)
            figures.setdefault("cp -r + sha256sum", []).append(
                timed(["cp", "-r", str(source), str(target)]) +
                timed(["sha256sum", *map(str, (target / blobs.relative_to(source)).iterdir())]))
            shutil.rmtree(target)
            staging = work / f"staging-{run}"
            figures.setdefault("stage", []).append(timed([*stage, str(staging)], env))
            figures.setdefault("stage again", []).append(timed([*stage, str(staging)], env))
            shutil.rmtree(staging)
        base = statistics.median(figures["cp -r"])
        print(f"{args.size_mb} MB in 4 blobs, median of {args.repeat}, "
              f"load {os.getloadavg()[0]:.2f}")
        print("| way | seconds | / cp -r |\n|---|---:|---:|")
        for way, seconds in figures.items():
            median = statistics.median(seconds)
            print(f"| {way} | {median:.2f} | {median / base:.2f} |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
