"""Through Slurm against through SSH: `run true` and `check` at 64 and 256 simulated nodes.

One run, the same nodes: the simulated cluster of tests/cluster.py (one sshd per node) with a
real Slurm on it (tests/slurmcluster.py: slurmctld here, one slurmd inside every node), and
an allocation of all nodes, as after `salloc`. Each command is the whole clusterprep process,
one untimed run first, then the median of --repeat; SSH with host keys learned and the
`ssh -G` cache warm (a user's second command). Measured per command: wall time; head CPU
(clusterprep and the processes it waits for: srun, or nothing but itself over SSH); the CPU
of slurmctld (on a real cluster a controller machine of its own, not the head); and the
nodes' CPU per node (their sshd or slurmd and everything under them, via a cpuacct cgroup).

At 256 nodes the launch tree is measured twice: Slurm's default TreeWidth (50: srun reaches
50 slurmds, which forward to the rest) and TreeWidth=256 (srun reaches every slurmd itself).

Then one stream from the head to one node (what `weights sync` sends the first node of its
chain): --stream-mb MiB through srun's stdin against SSH's, and `sbcast` of a file of the same
size (to every node of a 4-node allocation: its fan-out is its own), with the head's CPU.

Usage (as root): python3 benchmarks/bench_slurm.py [--sizes 64 256] [--repeat 3]
                 [--stream-mb 256]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

from bench_check import RECIPE
from benchkit import NodeCpu, clusterprep, timed, timed_with_cpu
from cluster import SimCluster
from slurmcluster import SlurmCluster

from clusterprep.fleet import Fleet
from clusterprep.fleet.choose import backend_for
from clusterprep.fleet.options import SlurmOptions
from clusterprep.inventory import parse_nodes_file

# Median wall s, head CPU s, slurmctld CPU s, node CPU s per node (None: no cpuacct cgroup).
Timing = tuple[float, float, float, float | None]


def busy_share(seconds: float = 2.0) -> float:
    """The share of this machine's CPU time that was busy over the next `seconds`."""
    def sample() -> tuple[int, int]:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
        return sum(fields), fields[3] + fields[4]  # all, idle + iowait

    total0, idle0 = sample()
    time.sleep(seconds)
    total1, idle1 = sample()
    return 1 - (idle1 - idle0) / max(1, total1 - total0)


def settle(limit: float = 120.0) -> float:
    """Wait (at most `limit` s) until the machine is quiet: a cluster's start leaves the
    load average high for minutes, so the CPU's idle time is what is watched. The busy share
    last seen."""
    deadline = time.monotonic() + limit
    while (busy := busy_share()) > 0.25 and time.monotonic() < deadline:
        pass
    return busy


def process_cpu(pid: int | None) -> float:
    """CPU seconds a running process has used (its threads included)."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(sim: SimCluster, tree_width: int, repeat: int, work: Path, ssh_too: bool,
            quiet: list[float]) -> dict[str, Timing]:
    with SlurmCluster(sim, tree_width=tree_width) as slurm:
        job = slurm.allocate()
        quiet.append(settle())
        env_slurm = {"SLURM_CONF": str(slurm.conf)}
        recipe = work / f"recipe{len(sim.nodes)}.toml"
        recipe.write_text(RECIPE.format(shared=sim.shared))
        check = ["-r", str(recipe), "--python", "/usr/bin/python3", "--json"]
        ssh = ["-n", str(sim.nodes_file), "-F", str(sim.ssh_config)]
        through = ["--slurm-job", job, "-n", str(sim.nodes_file)]
        size = len(sim.nodes)
        bare = ["srun", f"--jobid={job}", f"--nodes={size}", f"--ntasks={size}",
                "--ntasks-per-node=1", "--overlap", "/bin/true"]
        commands = {
            # Slurm's own floor: a step of /bin/true, no clusterprep and no task script.
            f"srun /bin/true alone (TreeWidth {tree_width})": ((bare, dict(os.environ)),
                                                              env_slurm),
            f"run true, srun (TreeWidth {tree_width})": (clusterprep("run", *through, "--json",
                                                                     "true"), env_slurm),
            f"check, srun (TreeWidth {tree_width})": (clusterprep("check", *through, *check),
                                                      env_slurm),
        }
        if ssh_too:
            commands.update({"run true, SSH": (clusterprep("run", *ssh, "--json", "true"), {}),
                             "check, SSH": (clusterprep("check", *ssh, *check), {})})
        nodes = NodeCpu(sim)
        pids = slurm.daemon_pids()
        for name, pid in pids.items():
            if name != "slurmctld" and nodes.group is not None:
                (nodes.group / "cgroup.procs").write_text(f"{pid}\n")
        try:
            return {name: timed_runs(argv, {**env, **extra}, repeat, nodes, len(sim.nodes),
                                     pids.get("slurmctld"))
                    for name, ((argv, env), extra) in commands.items()}
        finally:
            nodes.close()


def timed_runs(argv: list[str], env: dict[str, str], repeat: int, nodes: NodeCpu, size: int,
               slurmctld: int | None) -> Timing:
    timed(argv, env)  # warm the page cache and the ssh -G cache
    walls, heads, controller, per_node = [], [], [], []
    for _ in range(repeat):
        before, ctld = nodes.seconds(), process_cpu(slurmctld)
        wall, head = timed_with_cpu(argv, env)
        after = nodes.seconds()
        walls.append(wall)
        heads.append(head)
        controller.append(process_cpu(slurmctld) - ctld)
        if before is not None and after is not None:
            per_node.append((after - before) / size)
    return (statistics.median(walls), statistics.median(heads), statistics.median(controller),
            statistics.median(per_node) if per_node else None)


def head_cpu() -> float:
    """CPU seconds of this process and the children it waited for."""
    own, children = (resource.getrusage(who) for who in (resource.RUSAGE_SELF,
                                                         resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


async def one_stream(sim: SimCluster, job: str | None, mib: int) -> tuple[float, float]:
    """Seconds and head CPU seconds to stream `mib` MiB to node02's `cat > /dev/null`."""
    inventory = parse_nodes_file(sim.nodes_file)
    slurm = SlurmOptions(job) if job else None
    chunk = os.urandom(1 << 20)

    async def stream() -> AsyncIterator[bytes]:
        for _ in range(mib):
            yield chunk

    async with Fleet(inventory, backend_for(inventory, slurm=slurm)) as fleet:
        transport = await fleet.transport(inventory.nodes[1])
        await transport.run("true")  # connection (or allocation check) outside the timing
        cpu, started = head_cpu(), time.monotonic()
        result = await transport.run("cat > /dev/null", stdin_stream=stream())
        assert result.ok, result
        return time.monotonic() - started, head_cpu() - cpu


def streams(mib: int, work: Path) -> dict[str, tuple[float, float]]:
    with SimCluster(work / "stream", 4) as sim:
        sim.learn_host_keys()
        found = {"SSH stdin": asyncio.run(one_stream(sim, None, mib))}
        with SlurmCluster(sim) as slurm:
            job = slurm.allocate()
            os.environ["SLURM_CONF"] = str(slurm.conf)
            found["srun stdin"] = asyncio.run(one_stream(sim, job, mib))
            source = work / "payload"
            with open(source, "wb") as f:
                for _ in range(mib):
                    f.write(os.urandom(1 << 20))
            cpu, started = head_cpu(), time.monotonic()
            subprocess.run(["sbcast", f"--jobid={job}", "--force", str(source),
                            "/tmp/clusterprep-sbcast-bench"], check=True, env=os.environ)
            found["sbcast, 4 nodes"] = (time.monotonic() - started, head_cpu() - cpu)
            for node in sim.nodes:
                node.run("rm -f /tmp/clusterprep-sbcast-bench")
    return found


def _compared(name: str) -> str:
    """The SSH row a row is compared with: `run true` for `run true` and `/bin/true`."""
    return "check" if name.startswith("check") else "run true"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--stream-mb", type=int, default=256)
    args = parser.parse_args()
    rows: list[tuple[int, str, Timing]] = []
    loads: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-slurm-", dir="/tmp") as work:
        for size in args.sizes:
            with SimCluster(Path(work) / f"cluster{size}", size) as sim:
                sim.learn_host_keys()
                widths = [50, 256] if size > 50 else [50]
                for i, width in enumerate(widths):
                    timings = measure(sim, width, args.repeat, Path(work), ssh_too=i == 0,
                                      quiet=loads)
                    rows += [(size, name, timing) for name, timing in timings.items()]
        sent = streams(args.stream_mb, Path(work)) if args.stream_mb else {}
    print(f"machine: {os.cpu_count()} CPUs; CPU busy before each set (others' work "
          "included): " + ", ".join(f"{busy:.0%}" for busy in loads)
          + f"; load average at the end: {os.getloadavg()[0]:.2f}")
    print("| nodes | command | wall s | srun / SSH | head CPU s | head CPU ms per node | "
          "slurmctld CPU s | node CPU ms per node |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    ssh = {(size, _compared(name)): t[0] for size, name, t in rows if name.endswith("SSH")}
    for size, name, (wall, head, ctld, node) in rows:
        base = ssh.get((size, _compared(name)))
        ratio = f"{wall / base:.2f}" if base and not name.endswith("SSH") else "-"
        node_text = f"{node * 1000:.1f}" if node is not None else "n/a"
        print(f"| {size} | {name} | {wall:.3f} | {ratio} | {head:.3f} | "
              f"{head / size * 1000:.2f} | {ctld:.3f} | {node_text} |")
    if sent:
        print(f"\n| {args.stream_mb} MiB from the head | s | MiB/s | head CPU s |")
        print("|---|---:|---:|---:|")
        for name, (seconds, cpu) in sent.items():
            print(f"| {name} | {seconds:.2f} | {args.stream_mb / seconds:.0f} | {cpu:.2f} |")


if __name__ == "__main__":
    main()

