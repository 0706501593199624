#!/usr/bin/env python3
"""Benchmark `clusterprep weights sync` (pipelined chain) against a star and rsync, on nodes
whose links are shaped with `tc`.

Needs root, iproute2 (`ip`, `tc`), OpenSSH, rsync, curl. The nodes and their shaped links are
`shapednet.ShapedCluster`'s: network namespaces made for the run and removed after it.

Compared, for N = 2, 4, 8 nodes and SIZE MB of random weights staged on the head:
  chain : clusterprep weights sync (head streams over SSH to node 1, nodes pass it on)
  star  : every node pulls every file from the head over HTTP at once (`cp` from an NFS
          server would do the same: one server link shared by N readers)
  rsync : the head runs `rsync -a` to every node at once, over ssh
Plus: a `sync` with nothing to do on 64 simulated nodes (tests/cluster.py, no shaping).

Usage: sudo python3 benchmarks/bench_weights.py [--rate-mbit 300] [--size-mb 512] [--nodes 2,4,8]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from shapednet import ShapedCluster, sh

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
WORK = Path("/tmp/cpbench")
REPO = "bench/weights"
COMMIT = "c" * 40


# -- the weights ---------------------------------------------------------------------------

def stage(size_mb: int) -> Path:
    """SIZE MB of random weights in 4 blobs, staged in the hub layout, with their sha256."""
    staging = WORK / "staging"
    repo = staging / ("models--" + REPO.replace("/", "--"))
    marker = staging / f".size-{size_mb}"
    if marker.exists():
        return staged_in_place(staging)
    shutil.rmtree(staging, ignore_errors=True)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    for i in range(4):
        part = size_mb * (1 << 20) // 4
        data = os.urandom(part)
        name = hashlib.sha256(data).hexdigest()
        (repo / "blobs").mkdir(exist_ok=True)
        (repo / "blobs" / name).write_bytes(data)
        link = repo / "snapshots" / COMMIT / f"model-{i:05d}-of-00004.safetensors"
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(f"../../blobs/{name}")
    marker.write_text("")
    return staged_in_place(staging)


def staged_in_place(staging: Path) -> Path:
    """A cache laid out by hand counts as staged once `weights stage` has checked and
    recorded it where it lies (once: after that, the repo is present)."""
    subprocess.run([sys.executable, "-m", "clusterprep", "weights", "stage", "--from-cache",
                    str(staging), "--staging", str(staging), "--repo", REPO],
                   env=dict(os.environ, PYTHONPATH=str(SRC)), check=True,
                   stdout=subprocess.DEVNULL)
    return staging


# -- the three ways ------------------------------------------------------------------------

def wipe_caches(net: ShapedCluster) -> None:
    for k in range(1, net.n + 1):
        for folder in ("hub", "xdg", "star", "rsync"):
            shutil.rmtree(net.home(k) / folder, ignore_errors=True)


def run_chain(net: ShapedCluster, staging: Path, star: bool = False) -> float:
    argv = [sys.executable, "-m", "clusterprep", "weights", "sync", "-n", str(net.nodes_file),
            "-F", str(net.ssh_config), "--staging", str(staging), "--repo", REPO, "--json"]
    if star:
        argv.append("--star")
    env = dict(os.environ, PYTHONPATH=str(SRC))
    started = time.monotonic()
    done = subprocess.run(net.in_head(*argv), capture_output=True, text=True, env=env,
                          cwd=str(WORK))
    seconds = time.monotonic() - started
    report = json.loads(done.stdout)
    if done.returncode != 0 or report["mode"] != ("star" if star else "chain"):
        raise RuntimeError(f"sync failed: {done.stdout[-2000:]} {done.stderr[-2000:]}")
    print(f"  (inside the sync: {report['seconds']:.1f} s; the rest is start-up)", flush=True)
    return seconds


def run_star(net: ShapedCluster, staging: Path) -> float:
    """Every node pulls every staged file from the head's HTTP server at once."""
    files = [p.relative_to(staging) for p in staging.rglob("*") if p.is_file()
             and p.name != "main" and "blobs" in p.parts]
    server = subprocess.Popen(net.in_head(sys.executable, "-m", "http.server", "8000",
                                          "--bind", net.head_addr, "--directory", str(staging)),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1)
        started = time.monotonic()

        def pull(k: int) -> None:
            dest = net.home(k) / "star"
            dest.mkdir(parents=True, exist_ok=True)
            for rel in files:
                sh(*net.in_node(k, "curl", "-sf", "-o", str(dest / rel.name),
                                f"http://{net.head_addr}:8000/{rel}"))

        with concurrent.futures.ThreadPoolExecutor(net.n) as pool:
            list(pool.map(pull, range(1, net.n + 1)))
        return time.monotonic() - started
    finally:
        server.kill()
        server.wait()


def run_rsync(net: ShapedCluster, staging: Path) -> float:
    started = time.monotonic()
    ssh = f"ssh -F {net.ssh_config}"
    procs = [subprocess.Popen(net.in_head("rsync", "-a", "-e", ssh, f"{staging}/",
                                          f"n{k}:{net.home(k) / 'rsync'}/"),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for k in range(1, net.n + 1)]
    for proc in procs:
        _, err = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"rsync failed: {err.decode()[-500:]}")
    return time.monotonic() - started


def noop_sync_64() -> tuple[float, float]:
    """A first sync, then one with nothing to do, on 64 simulated nodes (no shaping)."""
    sys.path.insert(0, str(ROOT / "tests"))
    import cluster
    import hubcache

    shutil.rmtree(WORK / "small-staging", ignore_errors=True)
    staging = hubcache.build_staging(WORK / "small-staging")
    sim = cluster.SimCluster(WORK / "sim64", 64)
    sim.start()
    try:
        argv = [sys.executable, "-m", "clusterprep", "weights", "sync", "-n",
                str(sim.nodes_file), "-F", str(sim.ssh_config), "--staging", str(staging),
                "--repo", "org/alpha", "--repo", "org/beta", "--json"]
        env = dict(os.environ, PYTHONPATH=str(SRC))
        times = []
        for _ in range(2):
            started = time.monotonic()
            done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=str(WORK))
            times.append(time.monotonic() - started)
            if done.returncode != 0:
                raise RuntimeError(done.stdout[-1000:] + done.stderr[-1000:])
        return times[0], times[1]
    finally:
        sim.stop()
        shutil.rmtree(WORK / "sim64", ignore_errors=True)


def fallback_check(rate_mbit: int, staging: Path) -> dict:
    """3 nodes whose bridge ports are isolated from each other (each still reaches the head):
    the chain cannot form, and sync must fall back to the star and still complete."""
    with ShapedCluster(WORK, 3, rate_mbit, isolated=True) as net:
        argv = [sys.executable, "-m", "clusterprep", "weights", "sync", "-n",
                str(net.nodes_file), "-F", str(net.ssh_config), "--staging",
                str(staging), "--repo", REPO, "--json"]
        started = time.monotonic()
        done = subprocess.run(net.in_head(*argv), capture_output=True, text=True,
                              env=dict(os.environ, PYTHONPATH=str(SRC)), cwd=str(WORK))
        report = json.loads(done.stdout)
        wipe_caches(net)
        return {"exit": done.returncode, "mode": report["mode"],
                "fallback_reason": report["fallback_reason"],
                "seconds": round(time.monotonic() - started, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate-mbit", type=int, default=300)
    parser.add_argument("--size-mb", type=int, default=512)
    parser.add_argument("--nodes", default="2,4,8")
    parser.add_argument("--skip", default="", help="comma-separated: chain,star,rsync,noop")
    parser.add_argument("--fallback-only", action="store_true",
                        help="only check the fall back to a star when nodes are isolated")
    args = parser.parse_args()
    counts = [int(x) for x in args.nodes.split(",")]
    skip = set(args.skip.split(",")) - {""}
    WORK.mkdir(exist_ok=True)
    staging = stage(args.size_mb)
    size = sum(p.stat().st_size for p in staging.rglob("*") if p.is_file() and not p.is_symlink())
    rate = args.rate_mbit * 1e6 / 8
    ideal = size / rate
    if args.fallback_only:
        print(json.dumps(fallback_check(args.rate_mbit, staging)))
        return 0
    print(f"# {size / 1e6:.0f} MB staged, links {args.rate_mbit} Mbit/s: S/B = {ideal:.1f} s; "
          f"load before: {os.getloadavg()[0]:.2f}", flush=True)
    results = []
    for n in counts:
        with ShapedCluster(WORK, n, args.rate_mbit) as net:
            row = {"n": n}
            for way, fn in (("chain", run_chain), ("star", run_star), ("rsync", run_rsync)):
                if way in skip:
                    continue
                wipe_caches(net)
                row[way] = fn(net, staging)
                print(f"N={n} {way}: {row[way]:.1f} s ({row[way] / ideal:.2f} x S/B), "
                      f"load {os.getloadavg()[0]:.2f}", flush=True)
            results.append(row)
            wipe_caches(net)
    if "noop" not in skip:
        first, noop = noop_sync_64()
        print(f"64 nodes: first sync {first:.2f} s, sync with nothing to do {noop:.2f} s",
              flush=True)
    print(json.dumps({"size": size, "rate_mbit": args.rate_mbit, "ideal_s": ideal,
                      "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
