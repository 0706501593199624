"""Every `CLUSTERPREP_*` environment variable, read when needed (never frozen at import time).

| variable            | meaning                                                   |
|---------------------|-----------------------------------------------------------|
| CLUSTERPREP_NODES   | the nodes file or hostlist used when `--nodes` is absent  |
| SHAREDDIR           | the shared folder, over the recipe's `[shared] dir`        |
| CLUSTERPREP_LOCK_STALE_AFTER | seconds of silence from the clusterprep holding a node's |
|                     | lock after which the node frees it (default 30)           |
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
