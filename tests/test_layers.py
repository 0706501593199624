"""The house in layers: only the SSH backend loads asyncssh, and no module imports itself back.

A user running `clusterprep check` through Slurm, or a script parsing a recipe, never pays for
asyncssh's import (nor sees what it prints); a refactor that pulls it back into a rule module
fails here, naming the module.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from importgraph import cycles, modules

SRC = Path(__file__).resolve().parent.parent / "src"
SSH_BACKEND = {"clusterprep.fleet.ssh", "clusterprep.fleet.ssh_backend"}

# Each package of the core, loaded whole (every submodule) in a fresh interpreter.
CORE = ["clusterprep.recipe", "clusterprep.inventory", "clusterprep.errors",
        "clusterprep.check", "clusterprep.smoke", "clusterprep.render", "clusterprep.weights",
        "clusterprep.steps", "clusterprep.launch", "clusterprep.cli", "clusterprep.fleet",
        "clusterprep.nodes", "clusterprep.wandb", "clusterprep.lock"]


def loaded_with_asyncssh(names: list[str]) -> list[str]:
    """Those of `names` that, imported alone in a fresh interpreter, bring asyncssh in."""
    script = ("import importlib, json, sys\n"
              "found = []\n"
              "for name in json.loads(sys.argv[1]):\n"
              "    importlib.import_module(name)\n"
              "    if 'asyncssh' in sys.modules:\n"
              "        found.append(name)\n"
              "        break\n"
              "print(json.dumps(found))")
    out = subprocess.run([sys.executable, "-c", script, json.dumps(names)], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out)


@pytest.mark.parametrize("package", CORE)
def test_the_core_loads_without_asyncssh(package):
    inside = sorted(name for name in modules(SRC)
                    if (name == package or name.startswith(package + "."))
                    and name not in SSH_BACKEND)
    assert loaded_with_asyncssh(inside) == []


def test_the_ssh_backend_is_what_loads_it():
    assert loaded_with_asyncssh(["clusterprep.fleet.ssh_backend"]) == [
        "clusterprep.fleet.ssh_backend"]


def test_no_module_imports_itself_back():
    assert cycles(SRC) == []
