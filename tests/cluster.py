"""A simulated multi-node cluster on one Linux machine, for tests and benchmarks.

Every node is a real OpenSSH server (``sshd``) running in its own namespaces:

* its own **UTS namespace**, so ``hostname`` prints the node's name (``node01``);
* its own **mount namespace**, where the node's home folder, a host-side folder
  ``ROOT/nodes/NAME/home``, is bind-mounted over ``/root``; everything else (``/tmp``,
  ``/usr``, and the cluster's shared folder ``ROOT/shared``) is the host's, so the shared
  folder has the same absolute path on every node;
* its own **PID namespace** whose PID 1 is the ``sshd`` listener: killing it ends every
  process of that node, SSH sessions included;
* its own ``/etc/hosts`` (``ROOT/nodes/NAME/hosts``, bind-mounted in its mount namespace), so
  nodes resolve each other's names as on a real cluster; the cluster's names by default
  (:meth:`SimCluster.hosts_text`), another text per node with :meth:`SimNode.set_hosts`;
* its own loopback address (node *i*, 0-based: ``127.B.{i // 250}.{i % 250 + 1}``, where
  ``B`` is the cluster's address block, 1 for the first cluster, 2 for the next...), all on
  the same port (2200 by default).

The whole cluster shares one client key pair (``ROOT/client/id_ed25519``), and
``ROOT/ssh_config`` has one ``Host`` block per node, so ``ssh -F ROOT/ssh_config node01 CMD``
works. ``ROOT/nodes.txt`` lists the node names in order, head node first.

Needs root, util-linux (``unshare``, ``nsenter``, ``setpriv``) and OpenSSH (``sshd``,
``ssh``, ``ssh-keygen``); :func:`check_environment` says what is missing.

Typical use::

    with SimCluster(tmp_path / "cluster", 4) as sim:
        subprocess.run(["ssh", "-F", sim.ssh_config, "node02", "hostname"])
        sim.node("node03").stop()

Safety nets against leftover ``sshd`` processes: :meth:`SimCluster.stop` runs from
``__exit__`` and the pytest fixtures; an ``atexit`` hook stops every node still running; and
each node's launcher is started with a parent-death signal, so even a killed Python takes
its nodes along. That signal follows the *thread* that started the node: start nodes from a
thread that outlives them (the main thread, normally), not from a short-lived worker thread.
"""

from __future__ import annotations

import atexit
import os
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path
from typing import Iterable, Sequence

__all__ = [
    "SimCluster",
    "SimClusterError",
    "SimNode",
    "check_environment",
    "node_names",
]

DEFAULT_PORT = 2200
NODE_START_TIMEOUT = 5.0
"""Seconds one node may take to accept TCP connections after its launch."""

_SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_NODE_ENV = {
    "HOME": "/root",
    "USER": "root",
    "LOGNAME": "root",
    "SHELL": "/bin/bash",
    "PATH": _SYSTEM_PATH,
    "LANG": "C.UTF-8",
}
_BASHRC_FALLBACK = """\
# ~/.bashrc: executed by bash(1) for non-login shells.

# If not running interactively, don't do anything
case $- in
    *i*) ;;
      *) return;;
esac

alias ll='ls -l'
"""

_SSHD_CONFIG = """\
ListenAddress {address}
Port {port}
HostKey {host_key}
UsePAM no
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
StrictModes no
PidFile none
LogLevel ERROR
PrintMotd no
PrintLastLog no
Subsystem sftp internal-sftp
MaxStartups 100:30:200
MaxSessions 64
AcceptEnv LANG LC_*
"""

# Runs as PID 1 of the node's fresh namespaces: name the node, put its home over /root,
# then become sshd (exec keeps PID 1).
_NODE_INIT = (
    'echo "$1" > /proc/sys/kernel/hostname'
    ' && mount --bind "$2" /root'
    ' && exec "$3" -D -e -f "$4"'
)


class SimClusterError(RuntimeError):
    """A simulated node or cluster could not be prepared, started or used."""


def _which(tool: str) -> str | None:
    return shutil.which(tool, path=os.environ.get("PATH", "") + ":" + _SYSTEM_PATH)


def check_environment() -> str | None:
    """Say why a simulated cluster cannot run here, or return None when it can.

    Returns:
        A sentence naming what is missing (root, or which programs), or None.
    """
    problems = []
    if os.geteuid() != 0:
        problems.append("it must run as root (namespaces, sshd)")
    missing = [
        tool
        for tool in ("unshare", "nsenter", "setpriv", "sshd", "ssh", "ssh-keygen")
        if _which(tool) is None
    ]
    if missing:
        problems.append("missing programs: " + ", ".join(missing))
    if not problems:
        return None
    return "simulated cluster unavailable: " + "; ".join(problems)


def _tool(name: str) -> str:
    path = _which(name)
    if path is None:
        raise SimClusterError(f"{name} not found; {check_environment()}")
    return path


def node_names(n: int) -> list[str]:
    """Names of an n-node cluster: node01, node02... (3 digits when n > 99, and so on)."""
    width = max(2, len(str(n)))
    return [f"node{i:0{width}d}" for i in range(1, n + 1)]


def _node_address(block: int, index: int) -> str:
    return f"127.{block}.{index // 250}.{index % 250 + 1}"


def _hex_address(address: str, port: int) -> str:
    # /proc/net/tcp shows the address as the in-memory u32 in host byte order.
    (value,) = struct.unpack("=I", socket.inet_aton(address))
    return f"{value:08X}:{port:04X}"


def _listening() -> set[str]:
    """Local 'ADDR:PORT' hex keys of every listening IPv4 TCP socket of this net namespace."""
    keys = set()
    with open("/proc/net/tcp", encoding="ascii") as f:
        next(f)
        for line in f:
            fields = line.split()
            if len(fields) > 3 and fields[3] == "0A":  # TCP_LISTEN
                keys.add(fields[1])
    return keys


def _free(address: str, port: int) -> bool:
    """Whether nothing listens on address:port (TIME_WAIT leftovers do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((address, port))
        except OSError:
            return False
    return True


def _blocks_of_this_process() -> range:
    """The address blocks this process may take: all 254, or, under pytest-xdist, every
    WORKERS-th one from its own: two test processes checking the same free block at once
    would both take it."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    return range(1 + int(worker.removeprefix("gw")) % workers, 255, workers)


_block_lock = threading.Lock()
_blocks = _blocks_of_this_process()
_next = 0


def _allocate_block(n: int, port: int) -> int:
    """Pick the next address block 127.B.x.x whose n addresses are all free on port."""
    global _next
    with _block_lock:
        for step in range(len(_blocks)):
            block = _blocks[(_next + step) % len(_blocks)]
            if all(_free(_node_address(block, i), port) for i in range(n)):
                _next = (_next + step + 1) % len(_blocks)
                return block
    raise SimClusterError(f"no free loopback block 127.B.0.0/16 for {n} nodes on port {port}")


def _run_all(commands: Iterable[Sequence[str]], parallel: int = 32) -> None:
    """Run commands concurrently, at most `parallel` at once; raise on the first failure."""
    running: list[tuple[Sequence[str], subprocess.Popen]] = []

    def reap(proc_cmd: tuple[Sequence[str], subprocess.Popen]) -> None:
        cmd, proc = proc_cmd
        _, err = proc.communicate()
        if proc.returncode != 0:
            raise SimClusterError(
                f"{shlex.join(cmd)} failed ({proc.returncode}): {err.decode(errors='replace')}"
            )

    for cmd in commands:
        if len(running) >= parallel:
            reap(running.pop(0))
        running.append(
            (cmd, subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE))
        )
    for item in running:
        reap(item)


def _keygen(path: Path, comment: str) -> list[str]:
    return [_tool("ssh-keygen"), "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)]


def _child_pid(ppid: int) -> int | None:
    """The (only) child of process ppid, or None if it has none (yet)."""
    children = Path(f"/proc/{ppid}/task/{ppid}/children")
    try:
        pids = children.read_text().split()
        return int(pids[0]) if pids else None
    except FileNotFoundError:
        if not Path(f"/proc/{ppid}").exists():
            return None
    # Kernel without CONFIG_PROC_CHILDREN: scan /proc for the process whose parent is ppid.
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == ppid:
                return int(entry.name)
    return None


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.strip().splitlines()[-lines:]) or "(empty log)"


# Every node whose launcher is alive, for the atexit safety net.
_live: set[SimNode] = set()
_live_lock = threading.Lock()


@atexit.register
def _stop_leftovers() -> None:
    with _live_lock:
        nodes = list(_live)
    for node in nodes:
        try:
            node.stop()
        except Exception:  # noqa: BLE001 - best effort at interpreter exit
            pass


class SimNode:
    """One simulated node: an sshd in its own PID, mount and UTS namespaces.

    Attributes:
        name: The node's host name and its ``Host`` alias in the ssh config, e.g. ``node01``.
        index: 0-based position in the cluster (and in ``nodes.txt``).
        address: The loopback address its sshd listens on, e.g. ``127.1.0.1``.
        port: The sshd port (2200 by default).
        dir: Host-side folder with everything of this node (``ROOT/nodes/NAME``).
        home: Host-side folder that the node sees as ``/root`` (its ``$HOME``).
        host_key: The node's private ed25519 host key (``.pub`` beside it).
        sshd_config: The node's sshd configuration file.
        log: sshd's stderr, rewritten at each start.
    """

    def __init__(self, cluster: SimCluster, index: int, name: str, address: str, port: int):
        self.cluster = cluster
        self.index = index
        self.name = name
        self.address = address
        self.port = port
        self.dir = cluster.root / "nodes" / name
        self.home = self.dir / "home"
        self.host_key = self.dir / "ssh_host_ed25519_key"
        self.sshd_config = self.dir / "sshd_config"
        self.log = self.dir / "sshd.log"
        self._proc: subprocess.Popen | None = None
        self._pid1: int | None = None
        self._launched_at = 0.0
        self._hosts_mounted_in: int | None = None  # the PID 1 whose namespace has hosts_file

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<SimNode {self.name} {self.address}:{self.port} {state}>"

    # -- preparation -------------------------------------------------------------------

    def _prepare_files(self) -> None:
        ssh_dir = self.home / ".ssh"
        ssh_dir.mkdir(parents=True, exist_ok=True)
        self.home.chmod(0o700)
        ssh_dir.chmod(0o700)
        keys = ssh_dir / "authorized_keys"
        if not keys.exists():
            keys.write_text(self.cluster.client_public_key + "\n")
            keys.chmod(0o600)
        for name in (".bashrc", ".profile"):
            target = self.home / name
            skel = Path("/etc/skel") / name
            if target.exists():
                continue
            if skel.is_file():
                shutil.copyfile(skel, target)
            elif name == ".bashrc":
                target.write_text(_BASHRC_FALLBACK)
        self.sshd_config.write_text(
            _SSHD_CONFIG.format(address=self.address, port=self.port, host_key=self.host_key)
        )

    @property
    def host_public_key(self) -> str:
        """The node's host public key, ``ssh-ed25519 AAAA...`` (without comment)."""
        kind, blob = self.host_key.with_name(self.host_key.name + ".pub").read_text().split()[:2]
        return f"{kind} {blob}"

    @property
    def known_hosts_line(self) -> str:
        """This node's ``known_hosts`` line, e.g. ``[127.1.0.1]:2200 ssh-ed25519 AAAA...``."""
        host = self.address if self.port == 22 else f"[{self.address}]:{self.port}"
        return f"{host} {self.host_public_key}"

    # -- life cycle --------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether the node's namespaces (its sshd listener, PID 1) are alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """Host-side PID of the node's PID 1 (its sshd listener), None when stopped."""
        if not self.running:
            return None
        if self._pid1 is None:
            self._pid1 = self._wait_pid1(timeout=NODE_START_TIMEOUT)
        return self._pid1

    def start(self) -> None:
        """Start sshd in fresh namespaces and wait (<= 5 s) until it accepts TCP.

        Does nothing when the node already runs.

        Raises:
            SimClusterError: sshd exited or did not listen in time; the message names the
                node and ends with the tail of its sshd log.
        """
        if self.running:
            return
        self._launch()
        try:
            _wait_listening([self], NODE_START_TIMEOUT)
            self._mount_hosts()
        except BaseException:
            self.stop()
            raise

    def _launch(self) -> None:
        """Spawn the node's namespaces and sshd, without waiting for it to listen."""
        self.stop()
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        command = [
            _tool("setpriv"), "--pdeathsig", "KILL",  # our death kills unshare...
            _tool("unshare"), "--pid", "--mount", "--uts", "--fork", "--mount-proc",
            "--kill-child=KILL",  # ...and unshare's kills the node's PID 1
            "/bin/sh", "-c", _NODE_INIT, "sh",
            self.name, str(self.home), _tool("sshd"), str(self.sshd_config),
        ]
        with open(self.log, "wb") as log:
            self._proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={"PATH": _SYSTEM_PATH, "LANG": "C.UTF-8"},
                cwd="/",
            )
        self._pid1 = None
        self._launched_at = time.monotonic()
        with _live_lock:
            _live.add(self)

    def _wait_pid1(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while True:
            proc = self._proc
            if proc is None or proc.poll() is not None:
                raise SimClusterError(f"{self.name} is not running")
            pid = _child_pid(proc.pid)
            if pid is not None:
                return pid
            if time.monotonic() > deadline:
                raise SimClusterError(f"{self.name}: unshare did not fork its PID 1")
            time.sleep(0.005)

    def stop(self) -> None:
        """SIGKILL the node's PID 1 (ending every process of the node) and wait. Idempotent."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            pid1 = self._pid1 if self._pid1 is not None else _child_pid(proc.pid)
            try:
                if pid1 is not None:
                    # Safe from PID reuse: unshare is alive, so pid1 is not yet reaped.
                    os.kill(pid1, signal.SIGKILL)
                else:
                    proc.kill()  # --kill-child takes PID 1 along
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        self._proc = None
        self._pid1 = None
        with _live_lock:
            _live.discard(self)

    def restart(self) -> None:
        """Stop, then start the node (its home and host key stay)."""
        self.stop()
        self.start()

    # -- faults ------------------------------------------------------------------------

    @property
    def authorized_keys(self) -> Path:
        """Host-side path of the node's ``~/.ssh/authorized_keys``."""
        return self.home / ".ssh" / "authorized_keys"

    def break_auth(self) -> None:
        """Remove the cluster's client key from the node's authorized_keys."""
        key = self.cluster.client_public_key.split()[1]
        lines = self.authorized_keys.read_text().splitlines() if self.authorized_keys.exists() else []
        kept = [line for line in lines if key not in line]
        self.authorized_keys.write_text("".join(line + "\n" for line in kept))

    def restore_auth(self) -> None:
        """Put the cluster's client key back into the node's authorized_keys."""
        key = self.cluster.client_public_key
        self.authorized_keys.parent.mkdir(parents=True, exist_ok=True)
        text = self.authorized_keys.read_text() if self.authorized_keys.exists() else ""
        if key.split()[1] not in text:
            if text and not text.endswith("\n"):
                text += "\n"
            self.authorized_keys.write_text(text + key + "\n")
            self.authorized_keys.chmod(0o600)

    def rotate_host_key(self) -> None:
        """Give the node a new host key (restarting it if it runs), e.g. to test a mismatch."""
        for path in (self.host_key, self.host_key.with_name(self.host_key.name + ".pub")):
            path.unlink(missing_ok=True)
        _run_all([_keygen(self.host_key, f"root@{self.name}")])
        if self.running:
            self.restart()

    # -- names: the node's own /etc/hosts ----------------------------------------------

    @property
    def hosts_file(self) -> Path:
        """Host-side file that the node sees as its ``/etc/hosts`` (the cluster's names
        unless :meth:`set_hosts` gave it others)."""
        return self.dir / "hosts"

    def set_hosts(self, text: str) -> None:
        """Give the node this ``/etc/hosts``, at once if it runs and at every later start.

        The file is rewritten in place, so the node's bind mount of it sees the new text.
        """
        with open(self.hosts_file, "w") as f:
            f.write(text)
        if self.running:
            self._mount_hosts()

    def _mount_hosts(self) -> None:
        _run_all(self._mount_hosts_argv())

    def _mount_hosts_argv(self) -> list[list[str]]:
        """The command that mounts the hosts file over the node's /etc/hosts, unless this
        node's namespaces already have it (then none)."""
        if not self.hosts_file.exists():
            self.hosts_file.write_text(self.cluster.hosts_text())
        pid = self.pid
        if pid is None or self._hosts_mounted_in == pid:
            return []
        self._hosts_mounted_in = pid
        return [[_tool("nsenter"), "-t", str(pid), "-m", "--",
                 _tool("mount"), "--bind", str(self.hosts_file), "/etc/hosts"]]

    # -- inside the node ---------------------------------------------------------------

    def run(
        self,
        command: str,
        timeout: float = 30,
        input: str | None = None,  # noqa: A002 - same name as subprocess.run's
        check: bool = False,
    ) -> subprocess.CompletedProcess:
        """Run a bash command inside the node's namespaces, not through SSH.

        For tests that set up or inspect one node's state without the tool under test. The
        command runs as root in ``/root`` (the node's home) with a small clean environment.
        A background process that keeps stdout open makes this wait until `timeout`.

        Args:
            command: bash source, run with ``bash -c``.
            timeout: seconds before subprocess.TimeoutExpired.
            input: text for the command's stdin.
            check: raise subprocess.CalledProcessError on a non-zero exit status.

        Returns:
            The CompletedProcess, with text stdout and stderr.
        """
        pid = self.pid
        if pid is None:
            raise SimClusterError(f"{self.name} is not running; start it before run()")
        argv = [
            _tool("nsenter"), "-t", str(pid), "-m", "-u", "-p", "--",
            "/bin/bash", "-c", "cd /root || exit 125\n" + command,
        ]
        return subprocess.run(
            argv,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=dict(_NODE_ENV),
            cwd="/",
            check=check,
        )


def _wait_listening(nodes: Sequence[SimNode], timeout: float) -> None:
    """Wait until every node's sshd listens; raise naming the first node that failed."""
    pending = {_hex_address(node.address, node.port): node for node in nodes}
    deadline = time.monotonic() + timeout
    while pending:
        listening = _listening()
        for key in [key for key in pending if key in listening]:
            del pending[key]
        if not pending:
            return
        for node in pending.values():
            if node._proc is None or node._proc.poll() is not None:
                status = None if node._proc is None else node._proc.returncode
                time.sleep(0.05)  # let sshd's last words reach the log
                raise SimClusterError(
                    f"{node.name}: sshd exited (status {status}) before listening on "
                    f"{node.address}:{node.port}; tail of {node.log}:\n{_tail(node.log)}"
                )
        if time.monotonic() > deadline:
            node = next(iter(pending.values()))
            raise SimClusterError(
                f"{node.name}: sshd not listening on {node.address}:{node.port} after "
                f"{timeout:.1f} s ({len(pending)} node(s) pending); tail of {node.log}:\n"
                f"{_tail(node.log)}"
            )
        time.sleep(0.01)


class SimCluster:
    """n simulated nodes sharing a client key, an ssh config, a nodes file and a shared folder.

    Creating the object prepares the files (keys, homes, configs) under `root`; start()
    starts the nodes. Each cluster takes its own loopback block (127.1.x.x for the first,
    127.2.x.x for the next...), skipping blocks where something already listens, so
    several clusters can run at once, all on the same port.

    Attributes:
        root: The cluster's folder.
        shared: ``ROOT/shared``, the same folder at the same path on every node.
        ssh_config: ``ROOT/ssh_config``, one ``Host`` block per node (use ``ssh -F``).
        nodes_file: ``ROOT/nodes.txt``, one node name per line, head node first.
        known_hosts: ``ROOT/known_hosts``, empty at first (see learn_host_keys()).
        client_key: ``ROOT/client/id_ed25519``, the private key every node accepts.
        nodes: The nodes, in order.
        block: The second octet of the nodes' addresses.
    """

    def __init__(self, root: Path, n: int, port: int = DEFAULT_PORT):
        if not 1 <= n <= 250 * 256:
            raise ValueError(f"a simulated cluster has 1 to 64000 nodes, not {n}")
        self.root = Path(root).resolve()
        if self.root == Path("/root") or Path("/root") in self.root.parents:
            raise SimClusterError(
                f"cluster root {self.root} is under /root, which every node hides behind its "
                "own home: choose a folder elsewhere (e.g. under /tmp)"
            )
        self.port = port
        self.shared = self.root / "shared"
        self.ssh_config = self.root / "ssh_config"
        self.nodes_file = self.root / "nodes.txt"
        self.known_hosts = self.root / "known_hosts"
        self.client_key = self.root / "client" / "id_ed25519"
        self.block = _allocate_block(n, port)
        self.nodes = [
            SimNode(self, i, name, _node_address(self.block, i), port)
            for i, name in enumerate(node_names(n))
        ]
        self._by_name = {node.name: node for node in self.nodes}
        self._prepare()

    def __repr__(self) -> str:
        return f"<SimCluster {len(self.nodes)} nodes at {self.root} (127.{self.block}.x.x)>"

    def _prepare(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.shared.mkdir(exist_ok=True)
        self.client_key.parent.mkdir(mode=0o700, exist_ok=True)
        keygens = []
        if not self.client_key.exists():
            keygens.append(_keygen(self.client_key, "clusterprep-sim-client"))
        for node in self.nodes:
            node.dir.mkdir(parents=True, exist_ok=True)
            if not node.host_key.exists():
                keygens.append(_keygen(node.host_key, f"root@{node.name}"))
        _run_all(keygens)
        self.client_public_key = " ".join(
            self.client_key.with_name("id_ed25519.pub").read_text().split()[:2]
        )
        for node in self.nodes:
            node._prepare_files()
        self.known_hosts.write_text("")
        self.nodes_file.write_text("".join(node.name + "\n" for node in self.nodes))
        self.ssh_config.write_text("".join(self._host_block(node) for node in self.nodes))

    def _host_block(self, node: SimNode) -> str:
        def path(p: Path) -> str:
            return f'"{p}"' if any(c.isspace() for c in str(p)) else str(p)

        return (
            f"Host {node.name}\n"
            f"  HostName {node.address}\n"
            f"  Port {node.port}\n"
            f"  User root\n"
            f"  IdentityFile {path(self.client_key)}\n"
            f"  IdentitiesOnly yes\n"
            f"  UserKnownHostsFile {path(self.known_hosts)}\n"
            f"  StrictHostKeyChecking accept-new\n"
            f"  BatchMode yes\n"
            "\n"
        )

    def __enter__(self) -> SimCluster:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __iter__(self):
        return iter(self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)

    def node(self, name: str) -> SimNode:
        """The node called `name` (e.g. ``node01``); KeyError names the known range."""
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(
                f"no node {name!r} in this cluster ({self.nodes[0].name}..{self.nodes[-1].name})"
            ) from None

    def start(self) -> None:
        """Start every stopped node: all sshds launched at once, then wait for their ports.

        Raises:
            SimClusterError: a node's sshd failed; all nodes are stopped again and the
                message names the node and quotes its log.
        """
        pending = [node for node in self.nodes if not node.running]
        try:
            for node in pending:
                node._launch()
            _wait_listening(pending, NODE_START_TIMEOUT + 0.05 * len(pending))
            _run_all(argv for node in pending for argv in node._mount_hosts_argv())
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop every node (kill all launchers first, then wait for them). Idempotent."""
        for node in self.nodes:
            proc = node._proc
            if proc is not None and proc.poll() is None:
                pid1 = node._pid1 if node._pid1 is not None else _child_pid(proc.pid)
                try:
                    if pid1 is not None:
                        os.kill(pid1, signal.SIGKILL)
                    else:
                        proc.kill()
                except ProcessLookupError:
                    pass
        for node in self.nodes:
            node.stop()

    @property
    def running(self) -> list[SimNode]:
        """The nodes that run now."""
        return [node for node in self.nodes if node.running]

    def hosts_text(self, overrides: dict[str, str | None] | None = None) -> str:
        """The cluster's ``/etc/hosts``: localhost, then each node's address and name.

        Args:
            overrides: a node name -> another address for it, or None to leave it out.
        """
        overrides = overrides or {}
        lines = ["127.0.0.1 localhost", "::1 localhost ip6-localhost ip6-loopback"]
        for node in self.nodes:
            address = overrides.get(node.name, node.address)
            if address is not None:
                lines.append(f"{address} {node.name}")
        return "".join(line + "\n" for line in lines)

    def learn_host_keys(self) -> None:
        """Write every node's host key into known_hosts (from the key files, no network)."""
        self.known_hosts.write_text("".join(node.known_hosts_line + "\n" for node in self.nodes))

    def forget_host_keys(self) -> None:
        """Empty known_hosts again."""
        self.known_hosts.write_text("")

    def ssh_argv(self, name: str, command: str | None = None, *options: str) -> list[str]:
        """The plain OpenSSH command line to run `command` on node `name` via ssh_config."""
        argv = ["ssh", "-F", str(self.ssh_config), *options, name]
        if command is not None:
            argv.append(command)
        return argv

    def ssh(
        self, name: str, command: str, *options: str, timeout: float = 30
    ) -> subprocess.CompletedProcess:
        """Run `command` on node `name` with the plain ``ssh`` client; text output captured."""
        return subprocess.run(
            self.ssh_argv(name, command, *options),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
