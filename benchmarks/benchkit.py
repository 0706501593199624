"""What the benchmarks share: the simulated cluster, and timing a whole command."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "src"))


def clusterprep(*args: str) -> tuple[list[str], dict[str, str]]:
    """The argv and environment that run this checkout's clusterprep as a user would."""
    return ([sys.executable, "-m", "clusterprep", *args],
            {**os.environ, "PYTHONPATH": str(ROOT / "src")})


def timed(argv: list[str], env: dict[str, str] | None = None) -> float:
    """Wall seconds of one whole process; a failure stops the benchmark with its stderr."""
    started = time.monotonic()
    done = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True)
    elapsed = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"{argv[:4]} failed ({done.returncode}): {done.stderr[-800:]}")
    return elapsed
