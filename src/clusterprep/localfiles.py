"""Files clusterprep writes on the machine it runs on: whole or not at all."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomically(path: Path, data: bytes, mode: int = 0o644,
                     aside: Path | None = None) -> None:
    """Write `data` to `path` through a file beside it and a rename, so a reader (or a crash)
    never sees a half-written file. `aside`: the name to write it under first (one the caller
    can find and clean up, as the staging does), else a fresh temporary name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if aside is None:
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    else:
        fd, temp = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), str(aside)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(temp, mode)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
