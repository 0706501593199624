"""Nodes whose links are shaped with `tc`, for benchmarks that measure bytes on the wire.

Everything lives in network namespaces made at `start()` and removed at `stop()`: a bridge
namespace `PREFIX-br`, the head `PREFIX-head` (SUBNET.1) and nodes `PREFIX-nK` (SUBNET.(10+K)),
each joined to the bridge by a veth pair shaped with `tbf` in both directions (to `rate_mbit`,
or to `rates[K]` for node K). No address exists outside those namespaces, so no traffic leaves
them. Each node is an sshd in its namespace whose sessions get their own `HF_HUB_CACHE` and
`XDG_CACHE_HOME` (sshd `SetEnv`) under `WORK/nK`. Needs root, iproute2 and OpenSSH.

Two benchmarks can hold networks at once when their prefixes and subnets differ.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

SSHD_CONFIG = """\
ListenAddress {addr}
Port 22
HostKey {key}
AuthorizedKeysFile {auth}
UsePAM no
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
StrictModes no
PidFile none
LogLevel ERROR
MaxStartups 100:30:200
SetEnv HF_HUB_CACHE={home}/hub XDG_CACHE_HOME={home}/xdg
"""


def sh(*argv: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=check, capture_output=True, text=True, **kw)


class ShapedCluster:
    """`n` sshd nodes and a head, each in its own network namespace, on shaped links."""

    def __init__(self, work: Path, n: int, rate_mbit: int, *, prefix: str = "cpb",
                 subnet: str = "10.201.0", rates: dict[int, int] | None = None,
                 isolated: bool = False) -> None:
        self.work, self.n, self.rate_mbit = work, n, rate_mbit
        self.prefix, self.subnet = prefix, subnet
        self.rates = rates or {}
        self.isolated = isolated  # nodes reach the head but not each other
        self.ssh_config = work / "ssh_config"
        self.nodes_file = work / "nodes.txt"
        self._procs: list[subprocess.Popen] = []

    @property
    def head_addr(self) -> str:
        return f"{self.subnet}.1"

    def node_addr(self, k: int) -> str:
        return f"{self.subnet}.{10 + k}"

    def home(self, k: int) -> Path:
        return self.work / f"n{k}"

    def in_head(self, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", f"{self.prefix}-head", *argv]

    def in_node(self, k: int, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", f"{self.prefix}-n{k}", *argv]

    def __enter__(self) -> ShapedCluster:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        self.stop()
        self.work.mkdir(parents=True, exist_ok=True)
        self._make_network()
        self._start_nodes()

    def stop(self) -> None:
        for proc in self._procs:
            proc.kill()
            proc.wait()
        self._procs = []
        for line in sh("ip", "netns", "list", check=False).stdout.split("\n"):
            name = line.split(" ")[0]
            if name.startswith(f"{self.prefix}-"):
                sh("ip", "netns", "del", name, check=False)

    def _make_network(self) -> None:
        bridge = f"{self.prefix}-br"
        sh("ip", "netns", "add", bridge)
        sh("ip", "-n", bridge, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", bridge, "link", "set", "br0", "up")
        ends = [(f"{self.prefix}-head", self.head_addr, self.rate_mbit)] + [
            (f"{self.prefix}-n{k}", self.node_addr(k), self.rates.get(k, self.rate_mbit))
            for k in range(1, self.n + 1)]
        for k, (ns, addr, rate) in enumerate(ends):
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", bridge, "link", "add", f"p{k}", "type", "veth", "peer", "name",
               "eth0", "netns", ns)
            sh("ip", "-n", bridge, "link", "set", f"p{k}", "master", "br0", "up")
            sh("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            # The same rate each way: out of the endpoint, and out of the bridge towards it.
            for where, dev in ((ns, "eth0"), (bridge, f"p{k}")):
                sh("ip", "netns", "exec", where, "tc", "qdisc", "add", "dev", dev, "root", "tbf",
                   "rate", f"{rate}mbit", "burst", "256kb", "latency", "50ms")
            if self.isolated and k > 0:
                sh("ip", "netns", "exec", bridge, "bridge", "link", "set", "dev", f"p{k}",
                   "isolated", "on")

    def _start_nodes(self) -> None:
        client = self.work / "client"
        if not client.exists():
            sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(client))
        config = []
        os.makedirs("/run/sshd", exist_ok=True)
        for k in range(1, self.n + 1):
            home = self.home(k)
            home.mkdir(parents=True, exist_ok=True)
            key = home / "hostkey"
            if not key.exists():
                sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key))
            cfg = home / "sshd_config"
            cfg.write_text(SSHD_CONFIG.format(addr=self.node_addr(k), key=key,
                                              auth=f"{client}.pub", home=home))
            self._procs.append(subprocess.Popen(
                self.in_node(k, shutil.which("sshd") or "sshd", "-D", "-e", "-f", str(cfg)),
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            config.append(f"Host n{k}\n  HostName {self.node_addr(k)}\n  User root\n"
                          f"  IdentityFile {client}\n  IdentitiesOnly yes\n"
                          f"  UserKnownHostsFile {self.work}/known_hosts\n"
                          "  StrictHostKeyChecking accept-new\n  BatchMode yes\n")
        self.ssh_config.write_text("\n".join(config))
        self.nodes_file.write_text("".join(f"n{k}\n" for k in range(1, self.n + 1)))
        deadline = time.monotonic() + 10
        for k in range(1, self.n + 1):
            while sh(*self.in_head("ssh", "-F", str(self.ssh_config), f"n{k}", "true"),
                     check=False).returncode != 0:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"node n{k} did not start")
                time.sleep(0.1)
