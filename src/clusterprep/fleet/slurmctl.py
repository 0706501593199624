"""What Slurm says about an allocation and its nodes, asked through Slurm's own clients.

`squeue`, `sinfo`, `scontrol`, `salloc` and `scancel` find the cluster as they do for the user
(`SLURM_CONF`, the installed slurm.conf), so clusterprep needs no settings of its own for Slurm.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass

from clusterprep.errors import UNREACHABLE, NodeError, SlurmError

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


class Allocation:
    """An allocation clusterprep made for its own run, held by a `salloc` on the head that runs
    `cat` on a pipe of ours: when clusterprep ends, even by SIGKILL, the pipe closes, `cat`
    ends, and salloc gives the nodes back. The job survives a node's failure (--no-kill), so
    one bad node never ends it for the others."""

    def __init__(self, names: list[str], wait: float) -> None:
        argv = ["salloc", "--no-kill", f"--nodes={len(names)}", f"--nodelist={','.join(names)}",
                f"--immediate={max(1, round(wait))}", "--job-name=clusterprep", "cat"]
        # salloc's messages go to a file, not a pipe: a salloc whose clusterprep was killed
        # must not die of SIGPIPE on "Relinquishing job allocation" before it relinquishes.
        self._said = tempfile.TemporaryFile()
        try:
            # A session of its own: a Ctrl-C meant for clusterprep must not reach salloc first.
            self._holder = subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._said,
                start_new_session=True)
        except OSError as e:
            self._said.close()
            raise SlurmError(f"salloc failed: {e}") from e
        self.job = self._granted(wait, len(names))

    def _granted(self, wait: float, count: int) -> str:
        """The job id once salloc says it is granted; SlurmError (and salloc ended) if not."""
        deadline = time.monotonic() + wait + CLIENT_TIMEOUT
        refused = f"cannot allocate {count} node(s) within {max(1, round(wait))} s"
        hint = "`squeue` and `scontrol show reservation` show what holds them"
        while True:
            ended = self._holder.poll() is not None
            said = os.pread(self._said.fileno(), 1 << 16, 0)
            granted = re.search(rb"Granted job allocation (\d+)", said)
            if granted:
                return granted.group(1).decode()
            if ended:  # its error line says why, else its last line
                self._end(stop=False)
                lines = said.decode(errors="replace").strip().splitlines()
                errors = [line for line in lines if "error:" in line]
                why = (errors or lines or ["no allocation granted"])[-1]
                raise SlurmError(f"{refused}: {why} ({hint})")
            if time.monotonic() > deadline:
                self._end(stop=True)
                raise SlurmError(f"{refused}: salloc gave no answer ({hint})")
            time.sleep(0.05)

    def release(self) -> None:
        """Give the nodes back: salloc's `cat` ends with its input, and salloc relinquishes the
        job; scancel too, for a salloc that did not."""
        self._end(stop=False)
        try:
            client("scancel", self.job)
        except SlurmError:
            pass  # already gone: salloc gave it back

    def _end(self, stop: bool) -> None:
        """Close salloc's input and wait for it to end. `stop`: SIGTERM it first, on which it
        withdraws a request still pending. SIGKILL where it does not end in time."""
        holder = self._holder
        if holder.stdin is not None and not holder.stdin.closed:
            holder.stdin.close()
        if stop:
            holder.terminate()
        try:
            holder.wait(timeout=CLIENT_TIMEOUT)
        except subprocess.TimeoutExpired:
            holder.kill()
            holder.wait()
        self._said.close()


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
