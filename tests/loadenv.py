"""The env the weights loaders run in (tests/test_weights_load.py): torch at tests/torchenv.py's
version and transformers, a venv of the nodes' system python at a fixed path keyed by both
versions, built once per machine and reused (`.ci/run` builds it; a test session builds it if
it is missing and can be built).

The venv is complete only once `.complete` exists, so a build cut short is built again, never
used. Run as a script (`python3 tests/loadenv.py`), it builds the env if needed and prints its
path.
"""

from __future__ import annotations

import fcntl
import shutil
import subprocess
import sys
from pathlib import Path

from torchenv import CACHE, SYSTEM_PYTHON, TORCH_VERSION

TRANSFORMERS_VERSION = "5.25.0"
ENV = CACHE / f"torch-{TORCH_VERSION}-transformers-{TRANSFORMERS_VERSION}"
PINS = (f"torch=={TORCH_VERSION}", f"transformers=={TRANSFORMERS_VERSION}")


def ensure() -> tuple[Path | None, str]:
    """The env's folder, built if needed; or (None, why it cannot be had here)."""
    if (ENV / ".complete").exists():
        return ENV, ""
    if not Path(SYSTEM_PYTHON).exists():
        return None, f"no {SYSTEM_PYTHON} to build the loaders' env with"
    try:
        CACHE.mkdir(parents=True, exist_ok=True)
        with open(CACHE / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # another test session may be building it
            if not (ENV / ".complete").exists():
                _build()
    except (OSError, subprocess.CalledProcessError) as e:
        detail = getattr(e, "stderr", None) or str(e)
        return None, f"cannot build the loaders' env at {ENV}: {detail[-500:]}"
    return ENV, ""


def _build() -> None:
    shutil.rmtree(ENV, ignore_errors=True)
    subprocess.run([SYSTEM_PYTHON, "-m", "venv", str(ENV)], check=True, capture_output=True,
                   text=True)
    subprocess.run([str(ENV / "bin" / "python"), "-m", "pip", "install", "--quiet",
                    "--disable-pip-version-check", *PINS],
                   check=True, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    (ENV / ".complete").write_text("\n".join(PINS) + "\n")


if __name__ == "__main__":
    path, why = ensure()
    if path is None:
        sys.exit(why)
    print(path)
