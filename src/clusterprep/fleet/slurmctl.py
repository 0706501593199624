"""What Slurm says about an allocation and its nodes, asked through Slurm's own clients.

`squeue`, `sinfo`, `scontrol`, `salloc` and `scancel` find the cluster as they do for the user
(`SLURM_CONF`, the installed slurm.conf), so clusterprep needs no settings of its own for Slurm.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass

from clusterprep.errors import SlurmError
from clusterprep.fleet.transport import UNREACHABLE, NodeError

CLIENT_TIMEOUT = 60.0  # seconds for one Slurm client command (slurmctld may be busy)

# sinfo's long states (%T) in which a node runs a new job step. A trailing `*` (not
# responding), and every other state (down, drained, draining, fail, ...), means it will not.
_USABLE = frozenset({"allocated", "mixed", "idle", "completing", "planned", "reserved"})


@dataclass(frozen=True)
class NodeState:
    """One node as `sinfo` describes it."""

    name: str
    state: str             # sinfo's long state: idle, allocated, mixed, drained, down*, ...
    address: str           # NodeAddr: where other nodes reach it
    reason: str | None     # why an admin or Slurm took it out of service

    @property
    def usable(self) -> bool:
        return self.state.rstrip("~#!%$@^-") in _USABLE

    def error(self) -> NodeError:
        """Why no task is started on this node, and what to do."""
        why = f" ({self.reason})" if self.reason else ""
        return NodeError(UNREACHABLE, f"Slurm reports {self.name} {self.state}{why}: not used; "
                                      f"see `scontrol show node {self.name}`")


def available() -> bool:
    """Whether Slurm's client commands are installed here."""
    return shutil.which("srun") is not None


def client(*argv: str, timeout: float = CLIENT_TIMEOUT) -> str:
    """Run one Slurm client command; its stdout. Raises SlurmError with its own message."""
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              errors="replace", timeout=timeout, env=os.environ)
    except FileNotFoundError as e:
        raise SlurmError(f"{argv[0]} not found: is Slurm's client (slurm-client) installed?") \
            from e
    except subprocess.TimeoutExpired as e:
        raise SlurmError(f"`{' '.join(argv)}` gave no answer in {timeout:g} s "
                         "(is slurmctld running?)") from e
    if done.returncode != 0:
        message = done.stderr.strip().splitlines()[-1:] or [f"exit status {done.returncode}"]
        raise SlurmError(f"`{' '.join(argv[:2])} ...` failed: {message[0]}")
    return done.stdout


def hostnames(hostlist: str) -> list[str]:
    """`node[01-03]` -> node01, node02, node03, in Slurm's own order."""
    return client("scontrol", "show", "hostnames", hostlist).split()


def job_nodes(job: str) -> list[str]:
    """The nodes of a running job, in Slurm's order. Raises SlurmError naming the job's state
    when it is not running (pending, completed, unknown)."""
    try:
        out = client("squeue", "--noheader", f"--jobs={job}", "--format=%T|%N")
    except SlurmError as e:
        raise SlurmError(f"Slurm job {job}: {e}") from e
    line = out.strip().splitlines()[:1]
    if not line:
        raise SlurmError(f"Slurm job {job} is not running (no longer in squeue)")
    state, _, nodelist = line[0].partition("|")
    if state != "RUNNING":
        raise SlurmError(f"Slurm job {job} is {state.lower()}, not running: its nodes cannot "
                         "be used yet")
    return hostnames(nodelist)


def node_states(names: list[str]) -> dict[str, NodeState]:
    """Each named node's state, address and reason (nodes Slurm does not know are absent)."""
    out = client("sinfo", "--noheader", "--Node", f"--nodes={','.join(names)}",
                 "--format=%N|%T|%o|%E")
    states = {}
    for line in out.splitlines():
        fields = line.split("|", 3)
        if len(fields) == 4:
            name, state, address, reason = fields
            states[name] = NodeState(name, state, address,
                                     None if reason.strip() in ("", "none") else reason.strip())
    return states


def allocate(names: list[str], wait: float) -> str:
    """A new allocation of exactly these nodes, without a shell; its job id. The job survives
    a node's failure (--no-kill), so one bad node never ends it for the others."""
    try:
        done = subprocess.run(
            ["salloc", "--no-shell", "--no-kill", f"--nodes={len(names)}",
             f"--nodelist={','.join(names)}", f"--immediate={max(1, round(wait))}",
             "--job-name=clusterprep"],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace",
            timeout=wait + CLIENT_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise SlurmError(f"salloc failed: {e}") from e
    granted = re.search(r"Granted job allocation (\d+)", done.stderr + done.stdout)
    if done.returncode != 0 or granted is None:
        why = (done.stderr.strip().splitlines() or ["no allocation granted"])[-1]
        raise SlurmError(f"cannot allocate {len(names)} node(s) now: {why}")
    return granted.group(1)


def release(job: str) -> None:
    """End an allocation clusterprep made itself."""
    try:
        client("scancel", job)
    except SlurmError:
        pass  # already gone


def cancel_step(step: str) -> None:
    """Kill a job step (`JOB.STEP`) on every node: its tasks and all their processes."""
    try:
        client("scancel", "--signal=KILL", step)
    except SlurmError:
        pass  # the step ended on its own meanwhile


def find_step(job: str, name: str) -> str | None:
    """The id (`JOB.STEP`) of the job's step called `name`, if it runs."""
    try:
        out = client("squeue", "--noheader", "--steps", f"--jobs={job}", "--format=%i|%j")
    except SlurmError:
        return None
    for line in out.splitlines():
        step, _, step_name = line.partition("|")
        if step_name.strip() == name:
            return step.strip()
    return None
