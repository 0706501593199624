"""Every `CLUSTERPREP_*` environment variable, read when needed (never frozen at import time).

| variable            | meaning                                                   |
|---------------------|-----------------------------------------------------------|
| CLUSTERPREP_NODES   | the nodes file or hostlist used when `--nodes` is absent  |
| SHAREDDIR           | the shared folder, over the recipe's `[shared] dir`        |
| CLUSTERPREP_LOCK_STALE_AFTER | seconds of silence from the clusterprep holding a node's |
|                     | lock after which the node frees it (default 30)           |
| SLURM_JOB_ID        | set inside a Slurm allocation: its job (older: SLURM_JOBID) |
| SLURM_JOB_NODELIST  | the allocation's nodes (older: SLURM_NODELIST)             |
"""

from __future__ import annotations

import os


def nodes_spec() -> str | None:
    """The nodes file or hostlist from `$CLUSTERPREP_NODES`, or None when unset or empty."""
    value = os.environ.get("CLUSTERPREP_NODES", "").strip()
    return value or None


def shared_dir() -> str | None:
    """The shared folder from `$SHAREDDIR` (the tutorial's variable), or None when unset."""
    value = os.environ.get("SHAREDDIR", "").strip()
    return value or None


def lock_stale_after() -> float:
    """`$CLUSTERPREP_LOCK_STALE_AFTER` seconds (default 30): how long a node keeps the cluster
    lock of a clusterprep that stopped talking to it (frozen, or cut off from the node)."""
    try:
        value = float(os.environ.get("CLUSTERPREP_LOCK_STALE_AFTER", "30"))
    except ValueError:
        return 30.0
    return value if 1 <= value < float("inf") else 30.0


def slurm_job_id() -> str | None:
    """The Slurm job this process runs inside (`salloc`, `sbatch`, `srun`), or None."""
    return _first_set("SLURM_JOB_ID", "SLURM_JOBID")


def slurm_job_nodelist() -> str | None:
    """The nodes of the allocation this process runs inside, as a Slurm hostlist, or None."""
    return _first_set("SLURM_JOB_NODELIST", "SLURM_NODELIST")


def _first_set(*names: str) -> str | None:
    for name in names:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return None
