"""The one place that picks how this invocation reaches its nodes: Slurm's job steps or SSH.

Each backend is imported only when chosen: asyncssh loads only when SSH is how nodes are
reached, and a Slurm run never pays for it.
"""

from __future__ import annotations


from clusterprep.fleet.backend import Backend
from clusterprep.fleet.options import SlurmOptions, SshOptions
from clusterprep.inventory import Inventory


def backend_for(inventory: Inventory, ssh: SshOptions | None = None,
                slurm: SlurmOptions | None = None) -> Backend:
    """Slurm's backend when `slurm` says where the allocation is, else SSH's."""
    if slurm is not None:
        from clusterprep.fleet.slurm import SlurmBackend

        return SlurmBackend(inventory.nodes, slurm)
    from clusterprep.fleet.ssh_backend import SshBackend

    return SshBackend(inventory.nodes, ssh or SshOptions())
