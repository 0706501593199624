"""Which nodes to reach through Slurm: the allocation's, head first as Slurm orders them, unless
a nodes file or hostlist names them (and the head) itself."""

from __future__ import annotations

from pathlib import Path

from clusterprep import settings
from clusterprep.errors import InventoryError
from clusterprep.fleet import slurmctl
from clusterprep.inventory import Inventory, Node, load_inventory, refused


def load_slurm_inventory(spec: str | None, job: str | None,
                         cwd: Path | None = None) -> Inventory:
    """The nodes to reach through Slurm: those of `spec` (nodes file or hostlist) when given,
    else all of the allocation `job`'s. Named nodes must lie inside the allocation.

    Raises:
        InventoryError: no nodes named and no allocation, a `user@` entry (Slurm runs steps
            as the user who asks), or a node outside the allocation (named with its line).
        SlurmError: the job is not running, or Slurm does not answer.
    """
    if spec is None:
        spec = settings.nodes_spec()
    if spec is None:
        if job is None:
            raise InventoryError("--slurm", "no nodes: name them (-n NODES), give the "
                                 "allocation (--slurm-job ID) or run inside one (salloc, sbatch)")
        inside = job == settings.slurm_job_id() and settings.slurm_job_nodelist()
        names = slurmctl.hostnames(inside) if inside else slurmctl.job_nodes(job)
        source = f"Slurm job {job}"
        nodes = [Node(name, name, head=i == 0, origin=source) for i, name in enumerate(names)]
        return Inventory(nodes, source, slurm=True, slurm_job=job)
    named = load_inventory(spec, cwd)
    for node in named.nodes:
        if node.user is not None:
            raise refused(node, f"{node.name}: through Slurm, steps run as you: name the "
                                 "node without `user@`")
    if job is not None:
        allocated = set(slurmctl.job_nodes(job))
        outside = [node for node in named.nodes if node.host not in allocated]
        # A node Slurm took out of the job (down, drained) is named later, as unreachable.
        states = slurmctl.node_states([node.host for node in outside]) if outside else {}
        for node in outside:
            state = states.get(node.host)
            if state is None:
                raise refused(node, f"Slurm knows no node {node.name}")
            if state.usable:
                raise refused(node, f"{node.name} is not in Slurm job {job}")
    return Inventory(named.nodes, named.source, slurm=True, slurm_job=job)
