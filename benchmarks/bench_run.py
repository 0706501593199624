"""Run one command on every node: clusterprep against pdsh, clush and GNU parallel + ssh.

All tools run against the same simulated cluster (tests/cluster.py: one real sshd per node,
each in its own namespaces on its own loopback address), in one run, with the same ssh config
and the same known_hosts (learned before timing, so every tool does the same key checks).

- "first contact": the whole process, new SSH connections to every node, `true` on each.
- "repeated step": a second command over clusterprep's already open connections (in-process),
  which is what every step after the first costs inside one `clusterprep up`.

Usage (as root): python3 benchmarks/bench_run.py [--sizes 64 256] [--repeat 3]
Prints a markdown table; each figure is the median of --repeat runs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from benchkit import clusterprep, timed
from cluster import SimCluster

from clusterprep.fleet import Fleet, SshOptions
from clusterprep.inventory import parse_nodes_file


def contenders(sim: SimCluster) -> dict[str, tuple[list[str], dict[str, str] | None]]:
    config, nodes = str(sim.ssh_config), str(sim.nodes_file)
    names = ",".join(node.name for node in sim.nodes)
    return {
        "clusterprep run": clusterprep("run", "-n", nodes, "-F", config, "true"),
        "pdsh -R ssh (fanout 32, its default)": (
            ["pdsh", "-R", "ssh", "-w", "^" + nodes, "true"],
            {**os.environ, "PDSH_SSH_ARGS": f"-F {config} -x %h"}),
        "clush (fanout 64, its default)": (["clush", "-w", names, "-o", f"-F {config}", "true"],
                                           None),
        "parallel -j 64 ssh": (["parallel", "--will-cite", "-j", "64", "-a", nodes,
                                "ssh", "-F", config, "{}", "true"], None),
        "parallel ssh (as the tutorial: one job per CPU)": (
            ["parallel", "--will-cite", "-a", nodes, "ssh", "-F", config, "{}", "true"], None),
    }


async def repeated_step(sim: SimCluster, repeat: int) -> float:
    inventory = parse_nodes_file(sim.nodes_file)
    async with Fleet(inventory, SshOptions(config_file=str(sim.ssh_config))) as fleet:
        first = await fleet.run("true")
        assert first.ok, [r.error for r in first.results if not r.ok]
        times = []
        for _ in range(repeat):
            started = time.monotonic()
            outcome = await fleet.run("true")
            times.append(time.monotonic() - started)
            assert outcome.ok
    return statistics.median(times)


def measure(size: int, repeat: int, work: Path) -> dict[str, float]:
    with SimCluster(work / f"cluster{size}", size) as sim:
        sim.start()
        sim.learn_host_keys()
        results = {}
        for name, (argv, env) in contenders(sim).items():
            if shutil.which(argv[0]) is None:
                continue
            results[name] = statistics.median(timed(argv, env) for _ in range(repeat))
        results["clusterprep repeated step (open connections)"] = asyncio.run(
            repeated_step(sim, max(repeat, 5)))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-run-", dir="/tmp") as work:
        table = {size: measure(size, args.repeat, Path(work)) for size in args.sizes}
    print(f"load average before/after: {os.getloadavg()[0]:.2f} (1 min)")
    header = "| tool | " + " | ".join(f"{s} nodes (s)" for s in args.sizes) + " | " + \
        " | ".join(f"clusterprep / tool at {s}" for s in args.sizes) + " |"
    print(header)
    print("|" + "---|" * (1 + 2 * len(args.sizes)))
    ours = {size: table[size]["clusterprep run"] for size in args.sizes}
    for name in table[args.sizes[0]]:
        cells = [f"{table[s][name]:.3f}" for s in args.sizes]
        ratios = [f"{ours[s] / table[s][name]:.2f}" if "clusterprep" not in name else "-"
                  for s in args.sizes]
        print(f"| {name} | " + " | ".join(cells + ratios) + " |")


if __name__ == "__main__":
    main()
