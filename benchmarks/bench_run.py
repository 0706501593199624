"""Run one command on every node: clusterprep against pdsh, clush and GNU parallel + ssh.

All tools run against the same simulated cluster (tests/cluster.py: one real sshd per node,
each in its own namespaces on its own loopback address), in one run, with the same ssh config
and the same known_hosts (learned before timing, so every tool does the same key checks).

- "first contact": the whole process, new SSH connections to every node, `true` on each.
  clusterprep keeps OpenSSH's `ssh -G` answers while the ssh config is unchanged (see
  fleet/sshcache.py), so it is measured both ways: as a user's second command finds it (the
  cache filled by an earlier run) and with no cache at all.
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

from benchkit import clusterprep, timed_with_cpu
from cluster import SimCluster

from clusterprep.fleet import Fleet, SshOptions
from clusterprep.fleet.choose import backend_for
from clusterprep.inventory import parse_nodes_file


def contenders(sim: SimCluster) -> dict[str, tuple[list[str], dict[str, str] | None]]:
    config, nodes = str(sim.ssh_config), str(sim.nodes_file)
    names = ",".join(node.name for node in sim.nodes)
    argv, env = clusterprep("run", "-n", nodes, "-F", config, "true")
    cold = {**env, "XDG_CACHE_HOME": str(sim.root / "no-cache")}  # emptied before each run
    return {
        "clusterprep run": (argv, env),
        "clusterprep run, no ssh -G cache": (
            ["bash", "-c", 'rm -rf "$XDG_CACHE_HOME"; exec "$@"', "cold", *argv], cold),
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
    async with Fleet(inventory, backend_for(inventory, SshOptions(config_file=str(sim.ssh_config)))) as fleet:
        first = await fleet.run("true")
        assert first.ok, [r.error for r in first.results if not r.ok]
        times = []
        for _ in range(repeat):
            started = time.monotonic()
            outcome = await fleet.run("true")
            times.append(time.monotonic() - started)
            assert outcome.ok
    return statistics.median(times)


def measure(size: int, repeat: int, work: Path) -> dict[str, tuple[float, float | None]]:
    """Per tool: median (wall s, CPU s of the tool's processes on the head)."""
    with SimCluster(work / f"cluster{size}", size) as sim:
        sim.start()
        sim.learn_host_keys()
        results: dict[str, tuple[float, float | None]] = {}
        for name, (argv, env) in contenders(sim).items():
            if shutil.which(argv[0]) is None:
                continue
            timed_with_cpu(argv, env)  # untimed: page cache, and clusterprep's ssh -G cache
            runs = [timed_with_cpu(argv, env) for _ in range(repeat)]
            results[name] = (statistics.median(r[0] for r in runs),
                             statistics.median(r[1] for r in runs))
        results["clusterprep repeated step (open connections)"] = (
            asyncio.run(repeated_step(sim, max(repeat, 5))), None)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-run-", dir="/tmp") as work:
        table = {size: measure(size, args.repeat, Path(work)) for size in args.sizes}
    print(f"machine: {os.cpu_count()} CPUs; load average after: {os.getloadavg()[0]:.2f}")
    print("| tool | " + " | ".join(
        f"{s} nodes: wall s | clusterprep / tool | head CPU s" for s in args.sizes) + " |")
    print("|---|" + "---:|---:|---:|" * len(args.sizes))
    for name in table[args.sizes[0]]:
        cells = []
        for size in args.sizes:
            wall, cpu = table[size][name]
            ours = table[size]["clusterprep run"][0]
            ratio = f"{ours / wall:.2f}" if not name.startswith("clusterprep") else "-"
            cells += [f"{wall:.3f}", ratio, f"{cpu:.2f}" if cpu is not None else "-"]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
