"""Shared fixtures: simulated clusters of real sshd nodes (see tests/cluster.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
# Tests that import clusterprep get this checkout's, not another installed copy.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

import cluster  # noqa: E402  (needs the sys.path line above)


def _require_simulation() -> None:
    reason = cluster.check_environment()
    if reason is not None:
        pytest.skip(reason)


@pytest.fixture(scope="session")
def cluster4(tmp_path_factory: pytest.TempPathFactory) -> Iterator[cluster.SimCluster]:
    """A started 4-node cluster shared by the whole session.

    Tests that stop a node, break its auth or rotate its key must undo it (or use
    make_cluster instead): the next test gets the same cluster.
    """
    _require_simulation()
    sim = cluster.SimCluster(tmp_path_factory.mktemp("cluster4"), 4)
    try:
        sim.start()
        yield sim
    finally:
        sim.stop()


@pytest.fixture
def make_cluster(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[[int], cluster.SimCluster]]:
    """A factory: make_cluster(n) returns a started n-node cluster, stopped at teardown."""
    _require_simulation()
    made: list[cluster.SimCluster] = []

    def make(n: int) -> cluster.SimCluster:
        sim = cluster.SimCluster(tmp_path_factory.mktemp(f"cluster{n}-"), n)
        made.append(sim)
        sim.start()
        return sim

    try:
        yield make
    finally:
        for sim in made:
            sim.stop()


SRC = Path(__file__).resolve().parent.parent / "src"


@dataclass
class CliResult:
    """What one `clusterprep` invocation did, as a user's shell would see it."""

    exit_code: int
    stdout: str
    stderr: str

    def json(self) -> dict:
        return json.loads(self.stdout)


@pytest.fixture
def cli(tmp_path: Path) -> Callable[..., CliResult]:
    """Run `clusterprep ARGS...` as a separate process, from this checkout's src/.

    `cli(*args, cwd=None, env=None, input=None, timeout=120, prefix=())`; `env` adds to a copy
    of os.environ where HOME is the test's own folder, so no test reads or writes the real
    ~/nodes.txt; `prefix` is a command line that runs clusterprep (`unshare ...`, say).
    `cli.start(*args, env=None, prefix=())` starts one without waiting: a `subprocess.Popen`
    with text stdout and stderr pipes, for `cli.finish(process)` to turn into a CliResult.
    """

    def argv_env(args: tuple[str, ...], env: dict[str, str] | None,
                 prefix: tuple[str, ...] | list[str]) -> tuple[list[str], dict[str, str]]:
        environment = {k: v for k, v in os.environ.items() if not k.startswith("CLUSTERPREP_")}
        environment.update(PYTHONPATH=str(SRC), HOME=str(tmp_path / "home"))
        environment.update(env or {})
        (tmp_path / "home").mkdir(exist_ok=True)
        return [*prefix, sys.executable, "-m", "clusterprep", *args], environment

    def run(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
            input: str | None = None, timeout: float = 120,
            prefix: tuple[str, ...] | list[str] = ()) -> CliResult:
        argv, environment = argv_env(args, env, prefix)
        done = subprocess.run(
            argv, cwd=cwd or tmp_path, env=environment,
            input=input, capture_output=True, text=True, errors="replace", timeout=timeout,
        )
        return CliResult(done.returncode, done.stdout, done.stderr)

    def start(*args: str, env: dict[str, str] | None = None,
              prefix: tuple[str, ...] | list[str] = ()) -> subprocess.Popen:
        argv, environment = argv_env(args, env, prefix)
        return subprocess.Popen(argv, cwd=tmp_path, env=environment, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                errors="replace")

    def finish(process: subprocess.Popen, timeout: float = 120) -> CliResult:
        stdout, stderr = process.communicate(timeout=timeout)
        return CliResult(process.returncode, stdout, stderr)

    run.start = start  # type: ignore[attr-defined]
    run.finish = finish  # type: ignore[attr-defined]
    return run
