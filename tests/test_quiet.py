"""A fresh install says nothing it did not mean to: no warning from any dependency, on what
`pip install .` picks today and on the oldest versions pyproject.toml allows.

Each env is a venv of the system python with clusterprep's dependencies, cached under
/var/cache/clusterprep-ci keyed by what was asked for (so the "newest" env holds what was
newest when it was built); clusterprep itself is installed into it afresh, as a user would
(`pip install .`, no editable install), on every run.
"""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path("/var/cache/clusterprep-ci")
SYSTEM_PYTHON = "/usr/bin/python3"

# The floors of pyproject.toml's [project] dependencies.
OLDEST = ["asyncssh==2.14.0", "ClusterShell==1.9", "huggingface_hub==0.23.0", "rich==13.0.0"]
NEWEST = ["asyncssh>=2.14", "ClusterShell>=1.9", "huggingface_hub>=0.23", "rich>=13"]


def installed(requirements: list[str]) -> Path:
    """A venv holding `requirements` (built once, then reused) and this checkout of clusterprep."""
    key = hashlib.sha256("\n".join(requirements).encode()).hexdigest()[:12]
    env = CACHE / f"quiet-{key}"
    pip = [str(env / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "-q"]
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another test session may be building it
        if not (env / ".complete").exists():
            shutil.rmtree(env, ignore_errors=True)
            subprocess.run([SYSTEM_PYTHON, "-m", "venv", str(env)], check=True)
            subprocess.run(pip + ["install", *requirements], check=True,
                           stdin=subprocess.DEVNULL, capture_output=True)
            (env / ".complete").write_text("\n".join(requirements) + "\n")
        subprocess.run(pip + ["install", "--no-deps", "--force-reinstall", str(ROOT)],
                       check=True, stdin=subprocess.DEVNULL, capture_output=True)
    return env


@pytest.fixture(scope="module", params=[NEWEST, OLDEST], ids=["newest", "oldest"])
def clusterprep(request):
    if not Path(SYSTEM_PYTHON).exists():
        pytest.skip(f"no {SYSTEM_PYTHON} to build a fresh env with")
    return str(installed(request.param) / "bin" / "clusterprep")


def said(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=60)


def test_version_and_help_print_no_warning(clusterprep, tmp_path):
    for args in (["--version"], ["--help"], ["weights", "sync", "--help"]):
        result = said(clusterprep, *args, cwd=tmp_path)
        assert result.returncode == 0
        assert result.stderr == ""


def test_bad_input_gets_its_error_and_nothing_else(clusterprep, tmp_path):
    (tmp_path / "recipe.toml").write_text("[shared\n")
    result = said(clusterprep, "check", "-r", "recipe.toml", "-n", "localhost", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("error: recipe.toml")
    assert len(result.stderr.strip().splitlines()) == 1


def test_reaching_a_node_over_ssh_prints_no_warning(clusterprep, tmp_path):
    """asyncssh loads and connects (to a loopback address nothing listens on): what is said is
    clusterprep's own report of the node, and no Python warning."""
    result = said(clusterprep, "run", "-n", "127.0.0.9", "--connect-timeout", "2", "true",
                  cwd=tmp_path)
    assert result.returncode == 1
    assert "127.0.0.9: refused" in result.stderr
    assert "Warning" not in result.stderr
