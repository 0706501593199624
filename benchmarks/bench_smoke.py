#!/usr/bin/env python3
"""Benchmark `clusterprep smoke` against what users would run instead (issue 12).

Three parts, each compared in the same run:
  phases     : phases 1-3 without throughput (`smoke --until links --link-seconds 0`) on 64
               simulated nodes (tests/cluster.py) against `clusterprep run true` on the same
               nodes; whole processes, first contact, median of --repeat. Target: <= 2x.
  links      : every ring link's MB/s from `smoke --until links` against `iperf3` on the same
               link, all ring links at once in both cases, on shapednet.ShapedCluster's shaped
               links (300 Mbit/s; node 2 at 100 Mbit/s), prefix cps, subnet 10.202.0. Target:
               each link within 10 % of iperf3, and the slow node named.
  collective : the busbw of smoke's gloo all_reduce against a plain torchrun script doing the
               same all_reduce by hand (benchmarks/plain_allreduce.py, launched with ssh on
               each node), same 3 simulated nodes, alternating, median of --repeat.

Needs root, iproute2, OpenSSH, iperf3 (Debian package), and the torch env of tests/torchenv.py.
No GPU here: the nccl line the issue asks for is not measured.

Usage: python3 benchmarks/bench_smoke.py [--parts phases,links,collective] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchkit import ROOT, NodeCpu, clusterprep
from cluster import SimCluster
from shapednet import ShapedCluster
from torchenv import ENV as TORCH_ENV

RECIPE = '[shared]\ndir = "{shared}"\n[env]\nbackend = "venv"\nname = "torch"\n' \
         'python = "3.11"\nprefix = "{prefix}"\n'


def load() -> str:
    return f"load {os.getloadavg()[0]:.2f}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        return s.getsockname()[1]


def recipe_for(folder: Path, shared: Path) -> Path:
    recipe = folder / "recipe.toml"
    recipe.write_text(RECIPE.format(shared=shared, prefix=TORCH_ENV))
    return recipe


def wall_seconds(argv: list[str], env: dict[str, str]) -> float:
    """One whole run's wall time; a failed run stops the benchmark with its problems."""
    started = time.monotonic()
    report = run_json(argv, env)
    if not report["ok"]:
        raise SystemExit(json.dumps(report.get("problems") or report, indent=1)[-3000:])
    return time.monotonic() - started


def run_json(argv: list[str], env: dict[str, str]) -> dict:
    done = subprocess.run(argv, env=env, capture_output=True, text=True)
    if not done.stdout.strip():
        raise SystemExit(f"{argv[:6]} failed ({done.returncode}): {done.stderr[-1500:]}")
    return json.loads(done.stdout)


# -- phases 1-3 against `run true` ---------------------------------------------------------

def phases(nodes: int, repeat: int, work: Path) -> None:
    with SimCluster(work / f"sim{nodes}", nodes) as sim:
        sim.learn_host_keys()
        where = ["-n", str(sim.nodes_file), "-F", str(sim.ssh_config), "--json"]
        commands = {
            "smoke": clusterprep("smoke", *where, "-r", str(recipe_for(work, sim.shared)),
                                 "--until", "links", "--link-seconds", "0"),
            "run true": clusterprep("run", *where, "true"),
        }
        for argv, env in commands.values():
            wall_seconds(argv, env)  # warm the page cache and the ssh -G cache
        walls: dict[str, list[float]] = {name: [] for name in commands}
        node_ms: dict[str, list[float]] = {name: [] for name in commands}
        cpu = NodeCpu(sim)
        try:
            for _ in range(repeat):
                for name, (argv, env) in commands.items():
                    before = cpu.seconds()
                    walls[name].append(wall_seconds(argv, env))
                    after = cpu.seconds()
                    if before is not None and after is not None:
                        node_ms[name].append((after - before) / nodes * 1000)
        finally:
            cpu.close()
    print(f"phases 1-3 at {nodes} nodes, median of {repeat}; {load()}")
    print("| command | wall (s) | ratio to run true | node CPU per node (ms) |")
    print("|---|---:|---:|---:|")
    floor = statistics.median(walls["run true"])
    for name in commands:
        wall = statistics.median(walls[name])
        per_node = f"{statistics.median(node_ms[name]):.0f}" if node_ms[name] else "-"
        print(f"| {name} | {wall:.3f} | {wall / floor:.2f} | {per_node} |  runs: "
              f"{[round(w, 2) for w in walls[name]]}")


# -- ring links against iperf3 -------------------------------------------------------------

def links(nodes: int, seconds: float, repeat: int, work: Path) -> None:
    with ShapedCluster(work / "shaped", nodes, 300, prefix="cps", subnet="10.202.0",
                       rates={2: 100}) as net:
        addresses = [net.node_addr(k) for k in range(1, nodes + 1)]
        nodes_file = net.work / "addresses.txt"  # addresses: the nodes resolve no names here
        nodes_file.write_text("".join(a + "\n" for a in addresses))
        config = net.work / "ssh_config_addresses"
        config.write_text(f"Host {net.subnet}.*\n  User root\n  IdentityFile {net.work}/client\n"
                          f"  IdentitiesOnly yes\n  UserKnownHostsFile {net.work}/known_hosts\n"
                          "  StrictHostKeyChecking accept-new\n  BatchMode yes\n")
        argv, env = clusterprep("smoke", "-n", str(nodes_file), "-F", str(config), "--json",
                                "--shared-dir", str(work), "--until", "links",
                                "--link-seconds", f"{seconds:g}", "--pairs-up-to", "1")
        ours: dict[tuple[str, str], list[float]] = {}
        theirs: dict[tuple[str, str], list[float]] = {}
        named: list[str] = []
        for i in range(repeat):  # alternating which goes first
            for way in ("smoke", "iperf3") if i % 2 == 0 else ("iperf3", "smoke"):
                if way == "iperf3":
                    for link, rate in iperf3_ring(net, addresses, seconds).items():
                        theirs.setdefault(link, []).append(rate)
                    continue
                report = run_json(net.in_head(*argv), env)
                measured = next(p for p in report["phases"] if p["name"] == "links")
                for link in measured["ring"]:
                    ours.setdefault((link["source"], link["target"]), []).append(
                        link["mb_per_s"])
                named.append(", ".join(f"{p['where']} ({p['cause'].split(':')[0]})"
                                       for p in report["problems"]) or "nothing")
    print(f"ring links, {seconds:g} s each, all at once (MB/s), median of {repeat} runs each, "
          f"alternating; {load()}")
    print("| link | clusterprep smoke | iperf3 | smoke / iperf3 |")
    print("|---|---:|---:|---:|")
    for link, rates in ours.items():
        a, b = statistics.median(rates), statistics.median(theirs[link])
        print(f"| {link[0]} -> {link[1]} | {a:.2f} | {b:.2f} | {a / b:.3f} |  runs: "
              f"{[round(r, 2) for r in rates]} / {[round(r, 2) for r in theirs[link]]}")
    print("named by smoke, run by run:", "; ".join(named))


def iperf3_ring(net: ShapedCluster, addresses: list[str],
                seconds: float) -> dict[tuple[str, str], float]:
    """Receiver-side MB/s of iperf3 on every ring link at once."""
    n = len(addresses)
    servers = [subprocess.Popen(net.in_node(k + 1, "iperf3", "-s", "-1", "-B", addresses[k],
                                            "-p", "5201"),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
               for k in range(n)]
    time.sleep(1.0)
    clients = [subprocess.Popen(net.in_node(k + 1, "iperf3", "-c", addresses[(k + 1) % n],
                                            "-B", addresses[k], "-p", "5201",
                                            "-t", f"{seconds:g}", "-J"),
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
               for k in range(n)]
    rates = {}
    for k, client in enumerate(clients):
        out, _ = client.communicate(timeout=seconds + 60)
        received = json.loads(out)["end"]["sum_received"]
        rates[(addresses[k], addresses[(k + 1) % n])] = received["bits_per_second"] / 8 / 1e6
    for server in servers:
        server.wait(timeout=30)
    return rates


# -- the collective against a plain torchrun script -----------------------------------------

def collective(nodes: int, repeat: int, work: Path, sizes: str, iters: int) -> None:
    with SimCluster(work / "sim-collective", nodes) as sim:
        sim.learn_host_keys()
        script = sim.shared / "plain_allreduce.py"
        shutil.copy(ROOT / "benchmarks" / "plain_allreduce.py", script)
        recipe = recipe_for(work, sim.shared)
        ours: dict[int, list[float]] = {}
        theirs: dict[int, list[float]] = {}
        for _ in range(repeat):
            argv, env = clusterprep("smoke", "-n", str(sim.nodes_file), "-F",
                                    str(sim.ssh_config), "-r", str(recipe), "--json",
                                    "--until", "collective", "--link-seconds", "0",
                                    "--master-port", str(free_port()), "--sizes", sizes,
                                    "--iters", str(iters), "--warmup", "5")
            report = run_json(argv, env)
            if not report["ok"]:
                raise SystemExit(json.dumps(report["problems"], indent=1))
            for size in next(p for p in report["phases"] if p["name"] == "collective")["sizes"]:
                ours.setdefault(size["bytes"], []).append(size["busbw"])
            for size, busbw in plain(sim, script, sizes, iters).items():
                theirs.setdefault(size, []).append(busbw)
    print(f"collective, gloo, {nodes} nodes x 1 rank, {iters} timed calls, median of "
          f"{repeat}; {load()}")
    print("| size (B) | smoke busbw (GB/s) | plain torchrun (GB/s) | smoke / plain |")
    print("|---:|---:|---:|---:|")
    for size in ours:
        a, b = statistics.median(ours[size]), statistics.median(theirs[size])
        print(f"| {size} | {a:.4f} | {b:.4f} | {a / b:.3f} |  runs: "
              f"{[round(r, 3) for r in ours[size]]} / {[round(r, 3) for r in theirs[size]]}")


def plain(sim: SimCluster, script: Path, sizes: str, iters: int) -> dict[int, float]:
    """The plain script on every node at once, by hand: ssh + the env's torchrun."""
    port = free_port()
    argv = [f"{TORCH_ENV}/bin/torchrun", "--nnodes", str(len(sim.nodes)), "--master_addr",
            "node01", "--master_port", str(port), "--nproc_per_node", "1"]
    runs = [subprocess.Popen(sim.ssh_argv(node.name, " ".join(
        argv + ["--node_rank", str(i), str(script), "--sizes", sizes, "--iters", str(iters)])),
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        for i, node in enumerate(sim.nodes)]
    outputs = [run.communicate(timeout=600)[0] for run in runs]
    return {int(size): float(busbw) for size, busbw in
            (line.split() for line in outputs[0].splitlines() if line.strip())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", default="phases,links,collective")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--phase-nodes", type=int, default=64)
    parser.add_argument("--link-nodes", type=int, default=6)
    parser.add_argument("--link-seconds", type=float, default=5.0)
    parser.add_argument("--collective-nodes", type=int, default=3)
    parser.add_argument("--sizes", default="1048576,16777216")
    parser.add_argument("--iters", type=int, default=20)
    args = parser.parse_args()
    parts = args.parts.split(",")
    if "links" in parts and shutil.which("iperf3") is None:
        raise SystemExit("iperf3 is missing: apt-get install iperf3")
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPUs, "
          f"{load()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-smoke-", dir="/tmp") as folder:
        work = Path(folder)
        if "phases" in parts:
            phases(args.phase_nodes, args.repeat, work)
        if "links" in parts:
            links(args.link_nodes, args.link_seconds, args.repeat, work)
        if "collective" in parts:
            collective(args.collective_nodes, args.repeat, work, args.sizes, args.iters)
    return 0


if __name__ == "__main__":
    sys.exit(main())
