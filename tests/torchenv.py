"""The real torch the smoke tests launch with torchrun: a venv of the nodes' system python at a
fixed path keyed by torch's version, built once per machine and reused (`.ci/run` builds it;
a test session builds it if it is missing and can be built).

`pip install torch==VERSION` takes the CPU wheel that lies on these machines' disk; the venv is
complete only once `.complete` exists, so a build cut short is built again, never used.

Run as a script (`python3 tests/torchenv.py`), it builds the env if needed and prints its path.
"""

from __future__ import annotations

import fcntl
import shutil
import subprocess
import sys
from pathlib import Path

TORCH_VERSION = "2.13.0"
CACHE = Path("/var/cache/clusterprep-ci")
ENV = CACHE / f"torch-{TORCH_VERSION}"
SYSTEM_PYTHON = "/usr/bin/python3"  # what the simulated nodes run: they see the system PATH


def ensure() -> tuple[Path | None, str]:
    """The env's folder, built if needed; or (None, why it cannot be had here)."""
    if (ENV / ".complete").exists():
        return ENV, ""
    if not Path(SYSTEM_PYTHON).exists():
        return None, f"no {SYSTEM_PYTHON} to build the torch env with"
    try:
        CACHE.mkdir(parents=True, exist_ok=True)
        with open(CACHE / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # another test session may be building it
            if not (ENV / ".complete").exists():
                _build()
    except (OSError, subprocess.CalledProcessError) as e:
        detail = getattr(e, "stderr", None) or str(e)
        return None, f"cannot build the torch {TORCH_VERSION} env at {ENV}: {detail[-500:]}"
    return ENV, ""


def _build() -> None:
    shutil.rmtree(ENV, ignore_errors=True)
    subprocess.run([SYSTEM_PYTHON, "-m", "venv", str(ENV)], check=True, capture_output=True,
                   text=True)
    subprocess.run([str(ENV / "bin" / "python"), "-m", "pip", "install", "--quiet",
                    "--disable-pip-version-check", f"torch=={TORCH_VERSION}"],
                   check=True, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    (ENV / ".complete").write_text(TORCH_VERSION + "\n")


if __name__ == "__main__":
    path, why = ensure()
    if path is None:
        sys.exit(why)
    print(path)
