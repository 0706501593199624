"""What the cluster lock costs a command that changes state: taking every node's lock and
releasing it, against a step the command runs anyway (`true` on every node), over the same
open connections, in one run, on the simulated cluster (tests/cluster.py).

The lock is one more SSH channel and one more Python start per node, held for the command's
run. Here every simulated node shares this machine's CPUs, so the node CPU it adds is added
up; on real nodes it runs in parallel, each on its own CPUs.

Usage (as root): python3 benchmarks/bench_lock.py [--sizes 1 64] [--repeat 5]
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

from benchkit import NodeCpu
from cluster import SimCluster

from clusterprep.fleet import Fleet, SshOptions
from clusterprep.fleet.choose import backend_for
from clusterprep.inventory import parse_nodes_file
from clusterprep.lock import ClusterLock


async def measure(sim: SimCluster, repeat: int) -> dict[str, float]:
    """Median wall seconds of a `true` step and of a lock taken and released, and the node
    CPU seconds each cost, over connections opened beforehand."""
    inventory = parse_nodes_file(sim.nodes_file)
    cpu = NodeCpu(sim)
    walls: dict[str, list[float]] = {"step": [], "lock": []}
    cpus: dict[str, list[float]] = {"step": [], "lock": []}
    try:
        async with Fleet(inventory, backend_for(inventory, SshOptions(config_file=str(sim.ssh_config)))) as fleet:
            await fleet.run("true")  # connections open, outside the timing
            for _ in range(repeat):
                for what in ("step", "lock"):
                    before, started = cpu.seconds(), time.monotonic()
                    if what == "step":
                        await fleet.run("true")
                    else:
                        async with ClusterLock(fleet):
                            pass
                    walls[what].append(time.monotonic() - started)
                    after = cpu.seconds()
                    if before is not None and after is not None:
                        cpus[what].append(after - before)
    finally:
        cpu.close()
    result = {f"{what} s": statistics.median(values) for what, values in walls.items()}
    result.update({f"{what} node cpu s": statistics.median(values)
                   for what, values in cpus.items() if values})
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(f"load before: {os.getloadavg()[0]:.2f}")
    print("| nodes | `true` step s | lock taken + released s | ratio | node CPU ms per node: "
          "step / lock |")
    print("|---:|---:|---:|---:|---|")
    for size in args.sizes:
        root = Path(tempfile.mkdtemp(prefix=f"bench-lock-{size}-"))
        sim = SimCluster(root, size)
        sim.start()
        try:
            r = asyncio.run(measure(sim, args.repeat))
        finally:
            sim.stop()
            shutil.rmtree(root, ignore_errors=True)
        per_node = (f"{r['step node cpu s'] / size * 1000:.0f} / "
                    f"{r['lock node cpu s'] / size * 1000:.0f}"
                    if "lock node cpu s" in r else "-")
        print(f"| {size} | {r['step s']:.3f} | {r['lock s']:.3f} | "
              f"{r['lock s'] / r['step s']:.2f} | {per_node} |", flush=True)
    print(f"load after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
