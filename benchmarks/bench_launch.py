#!/usr/bin/env python3
"""Benchmark `clusterprep launch` against what users do today (issue 22): torchrun started on
every node at once by parallel ssh (what pdsh and `colossalai run` do: one ssh per node), side
by side in one run, on the same simulated nodes (tests/cluster.py), real torchrun + gloo.

Per launcher, one gang of one rank per node running an endless all_reduce loop, then a fault:
  start  : from the launcher's start to every rank's first line (launch overhead; target
           <= 1.2x parallel ssh).
  kill -9: one rank (on the last node) killed; seconds until no process of the run is left on
           any node (target <= 10 s).
  stop   : one rank stopped with SIGSTOP; seconds until nothing is left (clusterprep: with
           --hung-after 5; target <= --hung-after + 10 s).
  ctrl-c : SIGINT to the launcher on the head; seconds until nothing is left.
"Left" is seen from this machine, which sees every simulated node's processes: any process
whose environment holds the run's tag (a variable both launchers pass to every rank). A run
still alive after --cap seconds is ended by the benchmark and reported as "> CAP".

Needs root, OpenSSH and the torch env of tests/torchenv.py.
Usage: python3 benchmarks/bench_launch.py [--nodes 8] [--faults kill,stop,ctrl-c] [--cap 60]
       [--workload torch|raw]
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchkit import clusterprep
from cluster import SimCluster
from torchenv import ENV as TORCH_ENV

TRAIN = """\
import time
import torch
import torch.distributed as dist

dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
print(f"rank {rank} of {world} started", flush=True)
while True:
    total = torch.ones(256)
    dist.all_reduce(total)
    time.sleep(0.02)
"""
RECIPE = ('[shared]\ndir = "{shared}"\n[env]\nbackend = "venv"\nname = "torch"\n'
          'python = "3.11"\nprefix = "{prefix}"\n[shell.export]\nBENCH_TAG = "{tag}"\n')
# --workload raw: the gang without torch (`launch --raw`), for many nodes on this machine's
# memory: each rank a stdlib loop, with no collective between them, so nothing but the
# launcher ends the other ranks. What it measures is the launcher's own teardown at N nodes.
RAW_RANK = """\
import os, time
print(f"rank {os.environ['NODE_RANK']} started", flush=True)
while True:
    time.sleep(0.05)
"""
HUNG_AFTER = 5


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        return s.getsockname()[1]


def tagged(tag: str) -> dict[int, str]:
    """pid -> command line of every process on this machine (every node's) carrying `tag`."""
    needle = f"BENCH_TAG={tag}".encode()
    found = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            if needle in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                found[int(pid)] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(
                    b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
    return found


def until_gone(tag: str, cap: float) -> float | None:
    started = time.monotonic()
    while time.monotonic() - started < cap:
        if not tagged(tag):
            return time.monotonic() - started
        time.sleep(0.05)
    return None


class Launch:
    """One launcher's gang: its processes on the head, the time every rank said its first
    line, and the way to fault it."""

    def __init__(self, sim: SimCluster, kind: str, work: Path, raw: bool = False) -> None:
        self.sim, self.kind, self.raw = sim, kind, raw
        self.tag = secrets.token_hex(4)
        self.ranks = len(sim.nodes)
        self.first_lines = 0
        self.all_started = threading.Event()
        recipe = work / f"recipe-{self.tag}.toml"
        recipe.write_text(RECIPE.format(shared=sim.shared, prefix=TORCH_ENV, tag=self.tag))
        port = free_port()
        self.started = time.monotonic()
        if kind == "clusterprep":
            argv, env = clusterprep(
                "launch", "-n", str(sim.nodes_file), "-F", str(sim.ssh_config), "-r",
                str(recipe), "--master-port", str(port), "--hung-after", str(HUNG_AFTER),
                "--grace", "2", "--log-dir", str(work / f"logs-{self.tag}"),
                *(["--raw", "--", "python3 -u rank.py"] if raw else ["--", "train.py"]))
            self.processes = [subprocess.Popen(argv, env=env, stdout=subprocess.PIPE,
                                               stderr=subprocess.DEVNULL, text=True)]
        else:  # parallel ssh, one per node, as pdsh or colossalai run's Fabric start them
            self.processes = [subprocess.Popen(sim.ssh_argv(node.name, (
                f"cd {sim.shared} && BENCH_TAG={self.tag} NODE_RANK={rank} python3 -u rank.py"
                if raw else
                f"cd {sim.shared} && BENCH_TAG={self.tag} {TORCH_ENV}/bin/torchrun "
                f"--nnodes {self.ranks} --node_rank {rank} --master_addr node01 "
                f"--master_port {port} --nproc_per_node 1 train.py")),
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
                for rank, node in enumerate(sim.nodes)]
        for process in self.processes:
            threading.Thread(target=self._read, args=(process,), daemon=True).start()

    def _read(self, process: subprocess.Popen) -> None:
        for line in process.stdout:
            if " started" in line and "rank " in line:
                self.first_lines += 1
                if self.first_lines == self.ranks:
                    self.start_seconds = time.monotonic() - self.started
                    self.all_started.set()

    def worker_on_last_node(self) -> int:
        """The host pid of the rank on the last node (the torchrun worker: `-u train.py`)."""
        rank = self.ranks - 1
        script, variable = ("rank.py", "NODE_RANK") if self.raw else ("train.py", "RANK")
        for pid, command in tagged(self.tag).items():
            if f"-u {script}" in command and Path(f"/proc/{pid}/environ").read_bytes().split(
                    b"\0").count(f"{variable}={rank}".encode()):
                return pid
        raise SystemExit(f"{self.kind}: no rank {rank} found")

    def fault(self, fault: str) -> None:
        if fault == "ctrl-c":
            for process in self.processes:
                process.send_signal(signal.SIGINT)
        else:
            os.kill(self.worker_on_last_node(), signal.SIGKILL if fault == "kill"
                    else signal.SIGSTOP)

    def end(self) -> None:
        for pid in tagged(self.tag):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        for process in self.processes:
            process.kill()
            process.wait()


def one(sim: SimCluster, kind: str, fault: str, cap: float, work: Path,
        raw: bool) -> tuple[float, str]:
    launch = Launch(sim, kind, work, raw)
    try:
        if not launch.all_started.wait(300):
            raise SystemExit(f"{kind}: only {launch.first_lines} of {launch.ranks} ranks "
                             "started within 300 s")
        time.sleep(2)  # a few collectives in
        launch.fault(fault)
        gone = until_gone(launch.tag, cap)
        return launch.start_seconds, f"{gone:.1f} s" if gone is not None else f"> {cap:g} s"
    finally:
        launch.end()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=8)
    parser.add_argument("--faults", default="kill,stop,ctrl-c")
    parser.add_argument("--launchers", default="clusterprep,parallel-ssh")
    parser.add_argument("--cap", type=float, default=60.0)
    parser.add_argument("--workload", choices=("torch", "raw"), default="torch",
                        help="torch: torchrun + gloo all_reduce; raw: `launch --raw`, a stdlib "
                             "loop per node (no torch: many nodes fit in memory)")
    args = parser.parse_args()
    raw = args.workload == "raw"
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPUs, "
          f"load {os.getloadavg()[0]:.2f}, {args.nodes} nodes, {args.workload}", flush=True)
    print("| fault | launcher | start to every rank's first line | fault to nothing left |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="bench-launch-", dir="/tmp") as folder:
        work = Path(folder)
        with SimCluster(work / "cluster", args.nodes) as sim:
            (sim.shared / "train.py").write_text(TRAIN)
            (sim.shared / "rank.py").write_text(RAW_RANK)
            for fault in args.faults.split(","):
                for kind in args.launchers.split(","):
                    start, gone = one(sim, kind, fault, args.cap, work, raw)
                    print(f"| {fault} | {kind} | {start:.1f} s | {gone} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
