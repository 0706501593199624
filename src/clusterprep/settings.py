"""Every `CLUSTERPREP_*` environment variable, read when needed (never frozen at import time).

| variable            | meaning                                                   |
|---------------------|-----------------------------------------------------------|
| CLUSTERPREP_NODES   | the nodes file or hostlist used when `--nodes` is absent  |
| SHAREDDIR           | the shared folder, over the recipe's `[shared] dir`        |
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
