"""What the benchmarks share: the simulated cluster, and timing a whole command."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "src"))


def clusterprep(*args: str) -> tuple[list[str], dict[str, str]]:
    """The argv and environment that run this checkout's clusterprep as a user would."""
    return ([sys.executable, "-m", "clusterprep", *args],
            {**os.environ, "PYTHONPATH": str(ROOT / "src")})


def timed(argv: list[str], env: dict[str, str] | None = None) -> float:
    """Wall seconds of one whole process; a failure stops the benchmark with its stderr."""
    return timed_with_cpu(argv, env)[0]


def timed_with_cpu(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the process and the children it waited for)."""
    started = time.monotonic()
    process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    stderr = process.stderr.read() if process.stderr else ""
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.monotonic() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"{argv[:4]} failed ({process.returncode}): {stderr[-800:]}")
    return elapsed, usage.ru_utime + usage.ru_stime


class NodeCpu:
    """CPU seconds the simulated nodes spend (their sshd, shells and probes), through a
    cpuacct cgroup holding every node's sshd listener: what a session forks inherits it.

    On a real cluster each node spends this on its own CPUs; here every node shares the
    benchmark machine's few cores with the head, so it shows how much of a wall time is the
    simulation's. `seconds()` is None where no cpuacct cgroup can be made.
    """

    ROOT = Path("/sys/fs/cgroup/cpuacct")

    def __init__(self, sim) -> None:
        self.group = self.ROOT / f"clusterprep-bench-{os.getpid()}-{id(sim)}"
        self.pids = [node.pid for node in sim.nodes if node.pid]
        try:
            self.group.mkdir()
            for pid in self.pids:
                (self.group / "cgroup.procs").write_text(f"{pid}\n")
        except OSError:
            self.group = None

    def seconds(self) -> float | None:
        if self.group is None:
            return None
        return int((self.group / "cpuacct.usage").read_text()) / 1e9

    def close(self) -> None:
        if self.group is None:
            return
        for pid in (self.group / "cgroup.procs").read_text().split():
            try:
                (self.ROOT / "cgroup.procs").write_text(f"{pid}\n")
            except OSError:
                pass  # exited meanwhile
        try:
            self.group.rmdir()
        except OSError:
            pass
