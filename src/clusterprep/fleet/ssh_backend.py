"""Nodes reached over SSH (fleet/ssh.py), and this machine itself run directly."""

from __future__ import annotations

from collections.abc import Iterable

from clusterprep.fleet.backend import Backend
from clusterprep.fleet.local import LocalTransport
from clusterprep.fleet.options import SshOptions
from clusterprep.fleet.ssh import SshConnector, SshTransport
from clusterprep.fleet.sshconfig import ssh_available
from clusterprep.fleet.transport import Transport
from clusterprep.inventory import Node, is_this_machine


class SshBackend(Backend):
    """One persistent SSH connection per node, sharing one connector (keys, known_hosts,
    bastions, the cap on simultaneous handshakes)."""

    def __init__(self, nodes: Iterable[Node], options: SshOptions) -> None:
        super().__init__()
        self.nodes = list(nodes)
        self.options = options
        self.hung_after = options.hung_after
        self._connector = SshConnector(options)

    async def transport(self, node: Node) -> Transport:
        if not self._transports and ssh_available():
            # `ssh -G` for every node at once, not one node's resolution per connect.
            self._connector.prefetch([_target(n) for n in self.nodes])
        return await super().transport(node)

    async def open(self, node: Node) -> Transport:
        target = _target(node)
        if is_this_machine(node.host) and node.user is None:
            # localhost runs directly unless the ssh config sends it elsewhere (HostName, Port,
            # ProxyJump): the simulated nodes, for one, live on loopback addresses.
            if not ssh_available():
                return LocalTransport(node)
            settings = await self._connector.resolve(target)
            if not settings.has_own_target:
                return LocalTransport(node)
        else:
            settings = await self._connector.resolve(target)
        transport = SshTransport(node, settings, self._connector)
        await transport.connect()
        return transport

    async def close(self) -> None:
        await super().close()
        await self._connector.close()


def _target(node: Node) -> str:
    return f"{node.user}@{node.host}" if node.user else node.host
