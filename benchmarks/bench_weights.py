#!/usr/bin/env python3
"""Benchmark `clusterprep weights sync`: on shaped links against a star and rsync, with a node
failing mid-transfer, with one slow node and several chains; unshaped against a chain of `nc`
hops with `tee` and `sha256sum` (the anchor), with the CPU it costs the head and the nodes; and
a sync with nothing to do on 64 nodes.

Needs root, iproute2 (`ip`, `tc`), OpenSSH, rsync, curl, netcat-openbsd (`nc`). Shaped nodes
are `shapednet.ShapedCluster`'s (network namespaces made for the run and removed after it);
unshaped ones are `tests/cluster.py`'s (one sshd per node in its own namespaces).

Sections (`--only`, comma-separated; all by default):
  shaped   N = 2, 4, 8 on SIZE MB: chain (the first node reads the staging itself: all nodes
           see it), chain --from-head (the head sends it over SSH), star (every node pulls
           every file from the head's HTTP server at once: `cp` from an NFS server shares one
           link the same way), rsync (the head runs `rsync -a` to every node at once)
  failure  8 shaped nodes; node 4's receiver killed (kill -9) half way: when do the others end
  slow     8 shaped nodes, node 2's link at a third of the others': 1 chain against 2 and 4
  unshaped N = 2, 4, 8 simulated nodes, caches on each node's own tmpfs, UNSHAPED_MB: sync's
           wall time and CPU (head beyond its start-up, nodes through a cpuacct cgroup), the
           first node reading the staging, and with --from-head; against the anchor: `nc`
           hops, `tee` into the cache file, `sha256sum`, the first node reading the staging,
           started over ssh from the last node back
  noop     a sync with nothing to do on 64 simulated nodes
  fallback 3 shaped nodes that cannot reach each other (each still reaches the head)

Usage: sudo python3 benchmarks/bench_weights.py [--rate-mbit 300] [--size-mb 512]
       [--nodes 2,4,8] [--unshaped-mb 512] [--only SECTIONS]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import json
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchkit import NodeCpu, clusterprep
from shapednet import ShapedCluster, sh

ROOT = Path(__file__).resolve().parent.parent
WORK = Path("/tmp/cpbench")
REPO = "bench/weights"
COMMIT = "c" * 40
GIB = 1 << 30


def log(text: str) -> None:
    print(f"{text} (load {os.getloadavg()[0]:.2f})", flush=True)


# -- the weights ---------------------------------------------------------------------------

def stage(folder: Path, size_mb: int) -> Path:
    """SIZE MB of random weights in 4 blobs, laid out in the hub layout and staged there."""
    staging = folder / f"staging-{size_mb}"
    repo = staging / ("models--" + REPO.replace("/", "--"))
    if (staging / ".complete").exists():
        return staging
    shutil.rmtree(staging, ignore_errors=True)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    (repo / "blobs").mkdir()
    for i in range(4):
        data = os.urandom(size_mb * (1 << 20) // 4)
        name = hashlib.sha256(data).hexdigest()
        (repo / "blobs" / name).write_bytes(data)
        link = repo / "snapshots" / COMMIT / f"model-{i:05d}-of-00004.safetensors"
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(f"../../blobs/{name}")
    staged_in_place(staging)
    (staging / ".complete").write_text("")
    return staging


def staged_in_place(staging: Path) -> None:
    """A cache laid out by hand counts as staged once `weights stage` has checked and
    recorded it where it lies (and hashed it, into the staging's hash cache)."""
    argv, env = clusterprep("weights", "stage", "--from-cache", str(staging), "--staging",
                            str(staging), "--repo", REPO)
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)


def staged_size(staging: Path) -> int:
    return sum(p.stat().st_size for p in (staging / ("models--" + REPO.replace("/", "--"))
                                          / "blobs").iterdir())


def sync_argv(nodes_file: Path, ssh_config: Path, staging: Path, *extra: str) -> list[str]:
    return clusterprep("weights", "sync", "-n", str(nodes_file), "-F", str(ssh_config),
                       "--staging", str(staging), "--repo", REPO, "--json", *extra)[0]


def timed_sync(argv: list[str], expect_ok: bool = True) -> tuple[float, float, dict]:
    """(wall seconds, the head's CPU seconds: the process and every child it waited for, the
    JSON report) of one whole `sync`."""
    env = clusterprep()[1]
    started = time.monotonic()
    process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               cwd=str(WORK))
    out = process.stdout.read() if process.stdout else b""
    err = process.stderr.read() if process.stderr else b""
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.monotonic() - started
    report = json.loads(out) if out.strip() else {}
    if expect_ok and (os.waitstatus_to_exitcode(status) != 0 or not report.get("ok")):
        raise RuntimeError(f"sync failed: {out[-1500:]!r} {err[-1500:]!r}")
    return seconds, usage.ru_utime + usage.ru_stime, report


# -- shaped links --------------------------------------------------------------------------

def wipe_shaped(net: ShapedCluster) -> None:
    for k in range(1, net.n + 1):
        for folder in ("hub", "xdg", "star", "rsync"):
            shutil.rmtree(net.home(k) / folder, ignore_errors=True)


def shaped_sync(net: ShapedCluster, staging: Path, *extra: str,
                expect_ok: bool = True) -> tuple[float, dict]:
    argv = net.in_head(*sync_argv(net.nodes_file, net.ssh_config, staging, *extra))
    seconds, _, report = timed_sync(argv, expect_ok)
    return seconds, report


def chain_span(report: dict) -> float:
    """Seconds the slowest node's receiver ran: the transfer, without the command's start."""
    return max(n["seconds"] for n in report["nodes"] if n["seconds"] is not None)


def run_star(net: ShapedCluster, staging: Path) -> float:
    """Every node pulls every staged blob from the head's HTTP server at once."""
    files = [p.relative_to(staging) for p in staging.rglob("*")
             if p.is_file() and "blobs" in p.parts]
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


def shaped(counts: list[int], rate_mbit: int, staging: Path, ideal: float) -> list[dict]:
    rows = []
    for n in counts:
        with ShapedCluster(WORK / "shaped", n, rate_mbit) as net:
            row: dict = {"n": n}
            for way, extra in (("chain", []), ("chain_from_head", ["--from-head"])):
                wipe_shaped(net)
                row[way], report = shaped_sync(net, staging, *extra)
                row[way + "_span"] = chain_span(report)
                log(f"N={n} {way}: {row[way]:.1f} s ({row[way] / ideal:.2f} x S/B), the "
                    f"transfer {row[way + '_span']:.1f} s ({row[way + '_span'] / ideal:.2f})")
            for way, measure in (("star", run_star), ("rsync", run_rsync)):
                wipe_shaped(net)
                row[way] = measure(net, staging)
                log(f"N={n} {way}: {row[way]:.1f} s ({row[way] / ideal:.2f} x S/B)")
            wipe_shaped(net)
            rows.append(row)
    return rows


def node_receiver(net: ShapedCluster, k: int) -> int | None:
    """The pid of node k's receiver: the process in its network namespace whose command
    reads the receiver probe's length."""
    from clusterprep import probes

    reads = b"read(%d)" % len(probes.load("hfreceive").encode())
    for pid in sh("ip", "netns", "pids", f"{net.prefix}-n{k}", check=False).stdout.split():
        try:
            if reads in Path(f"/proc/{pid}/cmdline").read_bytes():
                return int(pid)
        except OSError:
            continue
    return None


def failure(rate_mbit: int, staging: Path, size: int, ideal: float) -> dict:
    """8 nodes; node 4's receiver is killed once it holds about half of the stream."""
    with ShapedCluster(WORK / "shaped", 8, rate_mbit) as net:
        wipe_shaped(net)
        argv = net.in_head(*sync_argv(net.nodes_file, net.ssh_config, staging))
        started = time.monotonic()
        process = subprocess.Popen(argv, env=clusterprep()[1], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True, cwd=str(WORK))
        hub = net.home(4) / "hub"
        killed_at = None
        while process.poll() is None and killed_at is None:
            held = sum(p.stat().st_size for p in hub.rglob("*") if p.is_file()) \
                if hub.exists() else 0
            pid = node_receiver(net, 4) if held >= size // 2 else None
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
                killed_at = time.monotonic() - started
            time.sleep(0.05)
        out, err = process.communicate()
        seconds = time.monotonic() - started
        report = json.loads(out)
        healthy = [n for n in report["nodes"] if n["node"] != "n4"]
        if not all(n["ok"] for n in healthy) or killed_at is None:
            raise RuntimeError(f"failure run: killed at {killed_at}: {out[-2000:]} {err[-800:]}")
        wipe_shaped(net)
        others = max(n["seconds"] for n in healthy)
        result = {"all_s": round(seconds, 1), "others_s": round(others, 1),
                  "others_x_ideal": round(others / ideal, 2),
                  "all_x_ideal": round(seconds / ideal, 2), "killed_at_s": round(killed_at, 1),
                  "reforms": report["reforms"], "n4": report["nodes"][3]["error"]}
        log(f"8 nodes, n4 killed: {json.dumps(result)}")
        return result


def slow_node(rate_mbit: int, staging: Path, ideal: float) -> list[dict]:
    """8 nodes, node 2 on a link of a third of the rate: one chain against 2 and 4, the
    staging read by the nodes (here: a local disk, so a node reading it alone uses no link)
    and sent by the head (over its link, as an NFS server's)."""
    rows = []
    with ShapedCluster(WORK / "shaped", 8, rate_mbit, rates={2: rate_mbit // 3}) as net:
        for extra in ([], ["--chains", "2"], ["--chains", "4"], ["--from-head"],
                      ["--from-head", "--chains", "2"]):
            wipe_shaped(net)
            seconds, report = shaped_sync(net, staging, *extra)
            times = sorted(n["seconds"] for n in report["nodes"] if n["node"] != "n2")
            row = {"options": " ".join(extra) or "(default)", "all_s": round(seconds, 1),
                   "n2_s": round(next(n["seconds"] for n in report["nodes"]
                                      if n["node"] == "n2"), 1),
                   "others_s": [round(t, 1) for t in times],
                   "median_other_x_ideal": round(times[len(times) // 2] / ideal, 2),
                   "reforms": report["reforms"]}
            log(f"8 nodes, n2 at {rate_mbit // 3} Mbit/s: {json.dumps(row)}")
            rows.append(row)
        wipe_shaped(net)
    return rows


def fallback(rate_mbit: int, staging: Path) -> dict:
    """3 nodes whose bridge ports are isolated from each other (each still reaches the head):
    no link can form, every node is fed from the source, and the sync completes."""
    with ShapedCluster(WORK / "shaped", 3, rate_mbit, isolated=True) as net:
        wipe_shaped(net)
        seconds, report = shaped_sync(net, staging, "--from-head")
        wipe_shaped(net)
        result = {"seconds": round(seconds, 1), "broken_links": report["broken_links"]}
        log(f"isolated nodes: {result}")
        return result


# -- unshaped: the anchor and the CPU per GiB ------------------------------------------------

def unshaped(counts: list[int], staging: Path) -> list[dict]:
    sys.path.insert(0, str(ROOT / "tests"))
    import cluster

    size = staged_size(staging)
    blobs = sorted((staging / ("models--" + REPO.replace("/", "--")) / "blobs").iterdir())
    rows = []
    for n in counts:
        sim = cluster.SimCluster(WORK / f"sim{n}", n)
        sim.start()
        cpu = NodeCpu(sim)
        try:
            for node in sim.nodes:  # each node's cache on its own tmpfs: see the docstring
                node.run("mkdir -p .cache anchor && mount -t tmpfs tmpfs .cache && "
                         "mount -t tmpfs tmpfs anchor", check=True)
            argv = sync_argv(sim.nodes_file, sim.ssh_config, staging)
            before = cpu.seconds()
            wall, head, report = timed_sync(argv)
            node_cpu = cpu.seconds() - before
            assert report["staging_readers"] and report["mode"] == "chain", report
            before = cpu.seconds()
            _, head_idle, idle = timed_sync(argv)  # nothing to do: the start-up alone
            node_idle = cpu.seconds() - before
            assert idle["mode"] is None
            wipe = "rm -rf .cache/huggingface .cache/clusterprep"
            for node in sim.nodes:
                node.run(wipe, check=True)
            wall_from_head, head_from_head, _ = timed_sync(argv + ["--from-head"])
            for node in sim.nodes:  # room in memory for the anchor's copies
                node.run(wipe, check=True)
            before = cpu.seconds()
            anchor_wall = anchor(sim, blobs)
            anchor_cpu = cpu.seconds() - before
            row = {
                "n": n, "sync_s": round(wall, 2), "anchor_s": round(anchor_wall, 2),
                "ratio": round(wall / anchor_wall, 2),
                "head_cpu_s_per_gib": round((head - head_idle) / (size / GIB), 2),
                "head_startup_cpu_s": round(head_idle, 2),
                "from_head_s": round(wall_from_head, 2),
                "from_head_head_cpu_s_per_gib": round((head_from_head - head_idle)
                                                      / (size / GIB), 2),
                "node_cpu_s_per_gib": round((node_cpu - node_idle) / n / (size / GIB), 2),
                "anchor_node_cpu_s_per_gib": round(anchor_cpu / n / (size / GIB), 2),
                "blocked": {x["node"]: x["blocked_seconds"] for x in report["nodes"]},
            }
            log(f"unshaped N={n}: " + json.dumps(row))
            rows.append(row)
        finally:
            cpu.close()
            sim.stop()
            shutil.rmtree(WORK / f"sim{n}", ignore_errors=True)
    return rows


def anchor(sim, blobs: list[Path]) -> float:
    """What an operator would build from C tools: every node runs `nc -l | tee >(nc next)
    FILE | sha256sum` (the first node reads the staged files instead), started over ssh from
    the last node back (each node's `nc` to the next one needs it listening); seconds until
    the last node has hashed the last byte."""
    port = 47000
    commands = []
    for i, node in enumerate(sim.nodes):
        source = ("cat " + " ".join(shlex.quote(str(b)) for b in blobs) if i == 0
                  else f"nc -d -l {node.address} {port}")
        after = sim.nodes[i + 1] if i + 1 < len(sim.nodes) else None
        passing = f" >(nc -N {after.address} {port})" if after else ""
        commands.append(f"{source} | tee{passing} anchor/weights | sha256sum > anchor/sha")
    ssh = ["ssh", "-F", str(sim.ssh_config)]
    started = time.monotonic()
    processes = []
    for node, command in reversed(list(zip(sim.nodes, commands))):
        processes.append(subprocess.Popen([*ssh, node.name, f"bash -c {shlex.quote(command)}"]))
        if node is not sim.nodes[0]:
            _wait_listening(node.address, port)
    for process in processes:
        if process.wait() != 0:
            raise RuntimeError("the anchor chain failed")
    seconds = time.monotonic() - started
    expected = hashlib.sha256()
    for blob in blobs:
        expected.update(blob.read_bytes())
    for node in sim.nodes:
        got = node.run("cut -d' ' -f1 anchor/sha && rm -f anchor/weights", check=True).stdout
        if got.strip() != expected.hexdigest():
            raise RuntimeError(f"the anchor chain delivered wrong bytes to {node.name}")
    return seconds


def _wait_listening(address: str, port: int) -> None:
    import socket

    key = f"{int.from_bytes(socket.inet_aton(address), 'little'):08X}:{port:04X}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with open("/proc/net/tcp") as f:
            if any(line.split()[1] == key and line.split()[3] == "0A" for line in f):
                return
        time.sleep(0.01)
    raise RuntimeError(f"nc did not listen on {address}:{port}")


def noop_sync_64(repeat: int = 3) -> dict:
    """A first sync, then syncs with nothing to do, each beside `run true` on the same 64
    simulated nodes (no shaping), after the load of the one before has settled."""
    sys.path.insert(0, str(ROOT / "tests"))
    import cluster
    import hubcache

    shutil.rmtree(WORK / "small-staging", ignore_errors=True)
    staging = hubcache.build_staging(WORK / "small-staging")
    sim = cluster.SimCluster(WORK / "sim64", 64)
    sim.start()
    try:
        argv = clusterprep("weights", "sync", "-n", str(sim.nodes_file), "-F",
                           str(sim.ssh_config), "--staging", str(staging), "--repo",
                           "org/alpha", "--repo", "org/beta", "--json")[0]
        run_true = clusterprep("run", "-n", str(sim.nodes_file), "-F", str(sim.ssh_config),
                               "--json", "true")[0]
        first, _, _ = timed_sync(argv)
        again: list[float] = []
        plain: list[float] = []
        for _ in range(repeat):
            settle()
            seconds, _, report = timed_sync(argv)
            assert report["mode"] is None
            again.append(seconds)
            settle()
            plain.append(timed_sync(run_true)[0])
        noop, true = statistics.median(again), statistics.median(plain)
        log(f"64 nodes: first sync {first:.2f} s; median of {repeat}: sync with nothing to do "
            f"{noop:.2f} s {sorted(round(s, 2) for s in again)}, run true {true:.2f} s "
            f"{sorted(round(s, 2) for s in plain)}")
        return {"first": first, "noop": noop, "run_true": true}
    finally:
        sim.stop()
        shutil.rmtree(WORK / "sim64", ignore_errors=True)


def settle(below: float = 1.5, longest: float = 60.0) -> None:
    """Wait, up to `longest` seconds, for the 1-minute load to fall below `below`."""
    deadline = time.monotonic() + longest
    while os.getloadavg()[0] >= below and time.monotonic() < deadline:
        time.sleep(2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate-mbit", type=int, default=300)
    parser.add_argument("--size-mb", type=int, default=512)
    parser.add_argument("--unshaped-mb", type=int, default=512)
    parser.add_argument("--nodes", default="2,4,8")
    parser.add_argument("--only", default="shaped,failure,slow,unshaped,noop,fallback")
    args = parser.parse_args()
    counts = [int(x) for x in args.nodes.split(",")]
    only = set(args.only.split(","))
    WORK.mkdir(exist_ok=True)
    results: dict = {}
    staging = stage(WORK, args.size_mb)
    size = staged_size(staging)
    ideal = size / (args.rate_mbit * 1e6 / 8)
    log(f"# {size / 1e6:.0f} MB staged, links {args.rate_mbit} Mbit/s: S/B = {ideal:.1f} s")
    if "shaped" in only:
        results["shaped"] = shaped(counts, args.rate_mbit, staging, ideal)
    if "failure" in only:
        results["failure"] = failure(args.rate_mbit, staging, size, ideal)
    if "slow" in only:
        results["slow"] = slow_node(args.rate_mbit, staging, ideal)
    if "fallback" in only:
        results["fallback"] = fallback(args.rate_mbit, staging)
    if "unshaped" in only:
        results["unshaped"] = unshaped(counts, stage(WORK, args.unshaped_mb))
    if "noop" in only:
        results["noop"] = noop_sync_64()
    print(json.dumps({"size": size, "rate_mbit": args.rate_mbit, "ideal_s": ideal, **results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
