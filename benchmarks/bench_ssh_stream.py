"""One SSH stream from the head to a node: throughput and head CPU per cipher, against OpenSSH.

What `weights sync` sends over SSH (the head to the first node of the chain, or to every node
of the star) is one such stream. clusterprep's connections (asyncssh) are timed with each
cipher it offers, its own first choice marked; `ssh NODE 'cat >/dev/null'` (what scp and
rsync ride on) with OpenSSH's own choice is the yardstick. One simulated node; head and node
share this machine's CPUs, so absolute rates are the machine's, the ratios are the point.

Usage (as root): python3 benchmarks/bench_ssh_stream.py [--mib 256] [--repeat 3]
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
from pathlib import Path

import asyncssh
from benchkit import timed_with_cpu
from cluster import SimCluster

from clusterprep.fleet.ssh import ENCRYPTION_ALGORITHMS

CHUNK = 1 << 20


async def asyncssh_stream(node, key: Path, cipher: str, mib: int) -> tuple[float, float]:
    """(seconds, head CPU seconds) to send `mib` MiB to `cat >/dev/null` over asyncssh."""
    data = os.urandom(CHUNK)
    async with asyncssh.connect(node.address, node.port, username="root", config=None,
                                client_keys=[str(key)], known_hosts=None,
                                encryption_algs=[cipher]) as connection:
        process = await connection.create_process("cat >/dev/null", encoding=None)
        started, before = time.monotonic(), resource.getrusage(resource.RUSAGE_SELF)
        for _ in range(mib):
            process.stdin.write(data)
            await process.stdin.drain()
        process.stdin.write_eof()
        await process.wait_closed()
        after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return time.monotonic() - started, cpu


def openssh_stream(sim: SimCluster, node, source: Path) -> tuple[float, float]:
    """(seconds, CPU seconds of the ssh client) for the same bytes through OpenSSH's client."""
    with source.open("rb") as stdin:
        argv = sim.ssh_argv(node.name, "cat >/dev/null")
        started = time.monotonic()
        process = subprocess.Popen(argv, stdin=stdin, stdout=subprocess.DEVNULL)
        _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"ssh failed: {argv}")
    return time.monotonic() - started, usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-stream-", dir="/tmp") as work:
        with SimCluster(Path(work) / "cluster", 1) as sim:
            sim.start()
            sim.learn_host_keys()
            node = sim.nodes[0]
            source = Path(work) / "source"
            source.write_bytes(os.urandom(CHUNK) * args.mib)
            timed_with_cpu(["cat", str(source)])  # into the page cache
            senders = {"OpenSSH client (its default cipher)":
                       lambda: openssh_stream(sim, node, source)}
            for cipher in ["chacha20-poly1305@openssh.com", "aes128-gcm@openssh.com",
                           "aes256-gcm@openssh.com"]:
                mark = " (clusterprep's first choice)" if cipher == ENCRYPTION_ALGORITHMS[0] else ""
                senders[f"clusterprep/asyncssh, {cipher}{mark}"] = (
                    lambda cipher=cipher: asyncio.run(
                        asyncssh_stream(node, sim.client_key, cipher, args.mib)))
            runs: dict[str, list[tuple[float, float]]] = {name: [] for name in senders}
            for _ in range(args.repeat):  # interleaved, so that a busy moment hits all alike
                for name, send in senders.items():
                    runs[name].append(send())
            rows = [(name, statistics.median(s for s, _ in got),
                     statistics.median(c for _, c in got)) for name, got in runs.items()]
    size = args.mib * CHUNK
    base = rows[0][1]
    print(f"machine: {os.cpu_count()} CPUs; {args.mib} MiB of random bytes, one stream; "
          f"median of {args.repeat}")
    print("| sender | MB/s | time vs OpenSSH | sender CPU (s) |")
    print("|---|---:|---:|---:|")
    for name, seconds, cpu in rows:
        print(f"| {name} | {size / seconds / 1e6:.0f} | {seconds / base:.2f} | {cpu:.2f} |")


if __name__ == "__main__":
    main()
