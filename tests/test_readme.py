"""README's first command, exactly as written there, does the main job for real: a fresh venv,
clusterprep installed into it from this checkout, `up` and `check` with the built-in demo
recipe on this machine as a one-node cluster, ending in a passing check matrix.

It reaches PyPI, as a newcomer's machine and CI do. It runs in a copy of the checkout, with its
own HOME (the ~/.bashrc block lands there) and its own SHAREDDIR (the demo's /tmp folder is
shared by everyone on this machine).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from clusterprep.recipe import load_recipe

ROOT = Path(__file__).resolve().parent.parent


def first_command() -> str:
    """The one line in the fenced block of README's "Try it" section."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("\n## Try it"):]
    block = re.search(r"```bash\n(.*?)```", section, re.DOTALL)
    assert block is not None, "README's Try it section has no bash block"
    lines = block.group(1).strip().splitlines()
    assert len(lines) == 1, "README's first command is one line"
    return lines[0]


def copy_of_checkout(target: Path) -> Path:
    """The checkout's files as a fresh clone has them (tracked, and new ones not ignored)."""
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others",
                             "--exclude-standard"], capture_output=True, check=True).stdout
    for name in filter(None, listed.decode().split("\0")):
        if (ROOT / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, target / name)
    return target


def test_readmes_first_command_installs_sets_up_and_checks_this_machine(tmp_path):
    command = first_command()
    assert "up -r demo" in command and "check -r demo" in command
    checkout = copy_of_checkout(tmp_path / "clusterprep")
    home, shared = tmp_path / "home", tmp_path / "shared"
    home.mkdir()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("CLUSTERPREP_") and k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(HOME=str(home), SHAREDDIR=str(shared))

    done = subprocess.run(["bash", "-c", command], cwd=checkout, env=env, capture_output=True,
                          text=True, errors="replace", stdin=subprocess.DEVNULL, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    matrix = done.stdout[done.stdout.index("install checks"):]
    for check in load_recipe("demo", str(shared)).checks:
        assert check.name in matrix
    assert "FAIL" not in matrix and "No broken requirements found" in matrix
    assert (shared / "envs" / "demo" / ".clusterprep-env.json").is_file()
