"""A real Slurm on a simulated cluster (tests/cluster.py), for tests and benchmarks.

Debian's own packages (slurmctld, slurmd, slurm-client, munge), nothing mocked:

* one ``munged`` for the whole cluster, with its own key and socket under ``ROOT/slurm``;
* one ``slurmctld`` on the machine itself (the head), ``SlurmctldHost`` on 127.0.0.1;
* one ``slurmd`` per simulated node, started inside that node's namespaces (its hostname, its
  home over ``/root``, its PID namespace: stopping the node ends its slurmd too), each on its
  own ``Port=`` of its ``NodeName`` line, with ``NodeAddr`` the node's loopback address.

Clients (``srun``, ``salloc``, ``scontrol``, clusterprep itself) find this Slurm through
``SLURM_CONF``: :attr:`SlurmCluster.env`. Nothing is written outside ``ROOT/slurm``, so
several clusters (and other developers' plain SimClusters) coexist on one machine.

Typical use::

    with SimCluster(tmp / "c", 4) as sim, SlurmCluster(sim) as slurm:
        job = slurm.allocate()            # like `salloc -N4`, without a shell
        subprocess.run(["srun", f"--jobid={job}", "hostname"], env=slurm.env)
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

from cluster import SimCluster, SimClusterError, _child_pid, _tail

__all__ = ["SlurmCluster", "check_slurm"]

SLURM_PROGRAMS = ("munged", "mungekey", "slurmctld", "slurmd", "srun", "salloc", "scontrol",
                  "scancel", "sinfo", "squeue")
START_TIMEOUT = 60.0
"""Seconds for every node to come up idle (each slurmd registers within about a second)."""

_SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Settings known to work for slurmds sharing one machine (field notes): no cgroups, no
# accounting, processes tracked through /proc, every daemon as root.
_SLURM_CONF = """\
ClusterName=sim{block}
SlurmctldHost={head}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket}
StateSaveLocation={dir}/state
SlurmdSpoolDir={dir}/spool/%n
SlurmctldPidFile={dir}/slurmctld.pid
SlurmdPidFile={dir}/slurmd-%n.pid
SlurmctldLogFile={dir}/slurmctld.log
SlurmdLogFile={dir}/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/builtin
SlurmdParameters=config_overrides
ReturnToService=2
MpiDefault=none
SwitchType=switch/none
LaunchParameters=enable_nss_slurm
KillWait=5
MinJobAge=30
SlurmdTimeout=30
InactiveLimit=0
TreeWidth={tree_width}
{nodes}
PartitionName=sim Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
"""


def check_slurm() -> str | None:
    """Say why a real Slurm cannot run here (missing programs), or None when it can."""
    missing = [tool for tool in SLURM_PROGRAMS if _which(tool) is None]
    if missing:
        return "Slurm unavailable: missing programs " + ", ".join(missing) + \
            " (Debian: slurmctld slurmd slurm-client munge)"
    return None


def _which(tool: str) -> str | None:
    return shutil.which(tool, path=os.environ.get("PATH", "") + ":" + _SYSTEM_PATH)


def _tool(name: str) -> str:
    path = _which(name)
    if path is None:
        raise SimClusterError(check_slurm() or f"{name} not found")
    return path


def _free_ports(count: int) -> list[int]:
    """`count` distinct TCP ports free on every address now, below Linux's ephemeral range
    (32768 and up), so that no client's outgoing connection can take one before its daemon
    binds it."""
    ports: list[int] = []
    for port in random.sample(range(10000, 32000), 4 * count + 16):
        with socket.socket() as s:
            try:
                s.bind(("0.0.0.0", port))
            except OSError:
                continue
        ports.append(port)
        if len(ports) == count:
            return ports
    raise SimClusterError(f"no {count} free TCP ports between 10000 and 32000")


class SlurmCluster:
    """munged, slurmctld and one slurmd per node of a started SimCluster.

    Attributes:
        sim: the simulated cluster whose nodes become Slurm nodes (same names).
        dir: ``ROOT/slurm``: configuration, state, spool folders and every daemon's log.
        conf: ``ROOT/slurm/slurm.conf``.
        env: the environment variables a client needs (``SLURM_CONF``, PATH with sbin).
    """

    def __init__(self, sim: SimCluster, tree_width: int = 50) -> None:
        self.sim = sim
        self.dir = sim.root / "slurm"
        self.conf = self.dir / "slurm.conf"
        self.munge_socket = self.dir / "munge" / "munge.socket"
        self.tree_width = tree_width
        self.env = {"SLURM_CONF": str(self.conf), "PATH": os.environ.get("PATH", "") + ":" +
                    _SYSTEM_PATH}
        self._munged: subprocess.Popen | None = None
        self._slurmctld: subprocess.Popen | None = None
        self._slurmds: dict[str, subprocess.Popen] = {}

    def __enter__(self) -> SlurmCluster:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- start and stop ------------------------------------------------------------------

    def start(self) -> None:
        """Write the configuration, start every daemon with no state from an earlier start
        (`-c`), and wait until every node is idle."""
        reason = check_slurm()
        if reason is not None:
            raise SimClusterError(reason)
        try:
            self._write_files()
            self._start_munged()
            self._slurmctld = self._daemon(
                [_tool("slurmctld"), "-D", "-c", "-i", "-f", str(self.conf)],
                self.dir / "slurmctld.out")
            for node in self.sim.nodes:
                self.start_slurmd(node.name)
            self.wait_for_state([node.name for node in self.sim.nodes], ("idle",))
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop every daemon this object started (slurmds, slurmctld, munged). Idempotent."""
        for name in list(self._slurmds):
            self.stop_slurmd(name)
        for attr in ("_slurmctld", "_munged"):
            proc = getattr(self, attr)
            if proc is not None:
                _terminate(proc)
                setattr(self, attr, None)

    def _write_files(self) -> None:
        for sub in ("state", "spool", "munge"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        (self.dir / "munge").chmod(0o700)
        ports = _free_ports(len(self.sim.nodes) + 1)
        self.ctld_port = ports[0]
        self.node_ports = {node.name: port for node, port in zip(self.sim.nodes, ports[1:])}
        # Four CPUs a node (config_overrides: whatever the machine has), so that a test's own
        # allocation leaves room for another job on the same nodes.
        nodes = "".join(
            f"NodeName={node.name} NodeAddr={node.address} Port={self.node_ports[node.name]} "
            "CPUs=4 State=UNKNOWN\n" for node in self.sim.nodes)
        self.conf.write_text(_SLURM_CONF.format(
            block=self.sim.block, head=socket.gethostname().split(".")[0],
            ctld_port=self.ctld_port, munge_socket=self.munge_socket, dir=self.dir,
            nodes=nodes, tree_width=self.tree_width))

    def _start_munged(self) -> None:
        key = self.dir / "munge" / "munge.key"
        if not key.exists():
            subprocess.run([_tool("mungekey"), "--create", f"--keyfile={key}"], check=True,
                           capture_output=True)
        key.chmod(0o400)
        self._munged = self._daemon(
            [_tool("munged"), "--foreground", "--force", f"--socket={self.munge_socket}",
             f"--key-file={key}", f"--pid-file={self.dir / 'munge' / 'munged.pid'}",
             f"--seed-file={self.dir / 'munge' / 'munged.seed'}",
             f"--log-file={self.dir / 'munge' / 'munged.log'}", "--num-threads=4"],
            self.dir / "munge" / "munged.out")
        deadline = time.monotonic() + 10
        while not self.munge_socket.exists():
            if self._munged.poll() is not None or time.monotonic() > deadline:
                raise SimClusterError(
                    f"munged did not start: {_tail(self.dir / 'munge' / 'munged.out')}")
            time.sleep(0.02)

    def _daemon(self, argv: list[str], log: Path) -> subprocess.Popen:
        # The parent-death signal takes the daemon along should the tests' Python die.
        argv = [_tool("setpriv"), "--pdeathsig", "KILL", *argv]
        with open(log, "wb") as out:
            return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, env={**os.environ, **self.env},
                                    cwd="/", start_new_session=True)

    # -- one node's slurmd ----------------------------------------------------------------

    def start_slurmd(self, name: str) -> None:
        """Start the node's slurmd inside its namespaces (mount, UTS, PID)."""
        node = self.sim.node(name)
        argv = [_tool("nsenter"), "-t", str(node.pid), "-m", "-u", "-p", "--",
                _tool("slurmd"), "-D", "-c", "-f", str(self.conf), "-N", name]
        self._slurmds[name] = self._daemon(argv, self.dir / f"slurmd-{name}.out")

    def stop_slurmd(self, name: str) -> None:
        proc = self._slurmds.pop(name, None)
        if proc is not None:
            _terminate(proc)

    def daemon_pids(self) -> dict[str, int]:
        """Host-side PIDs of the running daemons: `slurmctld`, and each node's slurmd by name."""
        pids = {}
        if self._slurmctld is not None:
            pids["slurmctld"] = self._slurmctld.pid  # setpriv execs the daemon: same PID
        for name, launcher in self._slurmds.items():
            child = _child_pid(launcher.pid)  # nsenter forks the slurmd
            if child is not None:
                pids[name] = child
        return pids

    def follow_node_stops(self) -> None:
        """From now on, a node's `stop()` also marks it down in Slurm, at once (slurmctld
        itself concludes so only after SlurmdTimeout), and its `start()` starts its slurmd
        again and returns it to service. Tests that stop nodes then tell the same story
        through Slurm as over SSH."""
        for node in self.sim.nodes:
            stop, start = node.stop, node.start

            def stopped(name: str = node.name, stop=stop) -> None:
                stop()
                self.stop_slurmd(name)
                if self._slurmctld is not None:
                    self.client(_tool("scontrol"), "update", f"nodename={name}", "state=down",
                                "reason=node stopped", check=False)

            def started(name: str = node.name, start=start) -> None:
                start()
                if self._slurmctld is not None:
                    self.start_slurmd(name)
                    self.client(_tool("scontrol"), "update", f"nodename={name}",
                                "state=resume", check=False)
                    self.wait_for_state([name], ("idle", "alloc", "mix"))

            node.stop, node.start = stopped, started  # type: ignore[method-assign]

    # -- what Slurm says -----------------------------------------------------------------

    def client(self, *argv: str, check: bool = True, timeout: float = 30,
               input: str | None = None) -> subprocess.CompletedProcess:
        """Run a Slurm client command (`scontrol ...`) against this cluster; text output."""
        return subprocess.run(list(argv), env={**os.environ, **self.env}, capture_output=True,
                              text=True, check=check, timeout=timeout, input=input,
                              stdin=None if input is not None else subprocess.DEVNULL)

    def states(self) -> dict[str, str]:
        """Each node's state as `sinfo` prints it in lower case (`idle`, `alloc`, `down*`...)."""
        out = self.client(_tool("sinfo"), "-h", "-N", "-o", "%N %t").stdout
        return dict(line.split() for line in out.splitlines() if line.strip())

    def wait_for_state(self, names: Iterable[str], wanted: tuple[str, ...],
                       timeout: float = START_TIMEOUT) -> None:
        names = list(names)
        deadline = time.monotonic() + timeout
        while True:
            for name in names:
                proc = self._slurmds.get(name)
                if proc is not None and proc.poll() is not None:
                    out = self.dir / f"slurmd-{name}.out"
                    raise SimClusterError(f"{name}'s slurmd exited ({proc.returncode}); "
                                          f"tail of {out}:\n{_tail(out)}")
            states = self.states()
            if all(states.get(name) in wanted for name in names):
                return
            if time.monotonic() > deadline:
                late = {n: states.get(n) for n in names if states.get(n) not in wanted}
                raise SimClusterError(
                    f"Slurm nodes not {'/'.join(wanted)} after {timeout:g} s: {late}; "
                    f"tail of slurmctld.log:\n{_tail(self.dir / 'slurmctld.log')}")
            time.sleep(0.2)

    def allocate(self, nodes: int | None = None, name: str = "clusterprep-test") -> str:
        """An allocation of `nodes` nodes (all by default) with no shell, as `salloc`
        gives a user; returns its job id. It outlives a node's failure (--no-kill), so tests
        can stop a node and go on."""
        count = nodes or len(self.sim.nodes)
        done = self.client(_tool("salloc"), f"-N{count}", "--no-shell", "--no-kill",
                           f"--job-name={name}", "--immediate=30")
        for line in (done.stderr + done.stdout).splitlines():
            if "Granted job allocation" in line:
                return line.rsplit(" ", 1)[1]
        raise SimClusterError(f"salloc gave no allocation: {done.stderr}")


def _terminate(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
