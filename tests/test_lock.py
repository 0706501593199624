"""Two operators, one cluster: the second is told who is changing it and when that started,
and waits or stops; a run that died, froze or was killed never leaves the cluster locked, nor
leaves its commands running to race the next run. Every case runs real, concurrent
`clusterprep` processes against the simulated cluster."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import setupkit
from conftest import SRC

SLOW = "clusterprep-test-slow-install"


def cluster_args(sim) -> list[str]:
    return ["-n", str(sim.nodes_file), "-F", str(sim.ssh_config)]


@pytest.fixture
def slow_recipe(tmp_path: Path):
    """A function (sim, seconds=6) -> a venv recipe whose install takes `seconds` more."""

    repo = tmp_path / "upstream"
    rev = setupkit.make_git_repo(repo)
    wheelhouse = setupkit.make_wheelhouse(tmp_path / "wheelhouse")

    def make(sim, seconds: int = 6) -> Path:
        return setupkit.venv_recipe(tmp_path / "slow.toml", sim.shared, repo, rev, wheelhouse,
                                    (f"sleep {seconds}  # {SLOW}",))

    return make


def wait_until_locked(sim, process, seconds: float = 60) -> None:
    """Until the clusterprep `process` holds the head node's lock (its pid is written in it)."""
    lock = sim.nodes[0].home / ".cache" / "clusterprep" / f"lock-{sim.nodes[0].name}"
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            stdout, stderr = process.communicate()
            raise AssertionError(f"the first clusterprep ended ({process.returncode}) before it "
                                 f"held the lock: {stdout} {stderr}")
        if lock.exists() and f'"pid": {process.pid},' in lock.read_text():
            return
        time.sleep(0.1)
    raise AssertionError("the first clusterprep never held the lock")


def install_running(sim) -> bool:
    return any(SLOW in node.run("ps -eo args").stdout for node in sim.nodes)


def test_a_second_up_is_told_who_is_changing_the_cluster_and_the_first_finishes_whole(
        make_cluster, cli, slow_recipe):
    sim = make_cluster(2)
    recipe = slow_recipe(sim)
    first = cli.start("up", *cluster_args(sim), "-r", str(recipe))
    wait_until_locked(sim, first)

    second = cli("up", *cluster_args(sim), "-r", str(recipe), "--skip", "shared")
    assert second.exit_code == 75
    assert "another clusterprep is changing this cluster: `clusterprep up " in second.stderr, \
        second.stderr
    assert f"(pid {first.pid} on {os.uname().nodename} as root, since " in second.stderr
    assert "holding the locks of node[01-02] and the lock of the shared folder" in second.stderr
    assert "--lock-wait" in second.stderr

    done = cli.finish(first)
    assert done.exit_code == 0, done.stdout + done.stderr
    again = cli("up", *cluster_args(sim), "-r", str(recipe), "--json")
    assert again.exit_code == 0 and again.json()["changes"] == 0, again.stdout


def test_a_second_operator_can_wait_for_the_first(make_cluster, cli, slow_recipe):
    sim = make_cluster(1)
    recipe = slow_recipe(sim)
    first = cli.start("up", *cluster_args(sim), "-r", str(recipe))
    wait_until_locked(sim, first)
    login = cli("wandb", "login", *cluster_args(sim), "--lock-wait", "120",
                env={"WANDB_API_KEY": "0123456789abcdef0123456789abcdef01234567"})
    assert login.exit_code == 0, login.stdout + login.stderr
    assert first.poll() == 0, "the login waited for the up to end"


def test_a_killed_run_leaves_neither_its_lock_nor_its_commands_behind(
        make_cluster, cli, slow_recipe):
    sim = make_cluster(2)
    recipe = slow_recipe(sim, seconds=60)
    first = cli.start("up", *cluster_args(sim), "-r", str(recipe))
    wait_until_locked(sim, first)
    deadline = time.monotonic() + 60
    while not install_running(sim):
        assert time.monotonic() < deadline, "the slow install never started"
        time.sleep(0.1)
    first.send_signal(signal.SIGKILL)
    first.wait()

    deadline = time.monotonic() + 20  # the nodes see its connections close, then end its work
    while install_running(sim):
        assert time.monotonic() < deadline, "the dead run's install still runs on the node"
        time.sleep(0.2)
    again = cli("up", *cluster_args(sim), "-r", str(slow_recipe(sim, seconds=0)), "--json")
    assert again.exit_code == 0, again.stdout + again.stderr


def test_a_frozen_run_loses_the_lock_after_the_stale_time(make_cluster, cli, slow_recipe):
    sim = make_cluster(1)
    recipe = slow_recipe(sim)
    stale = {"CLUSTERPREP_LOCK_STALE_AFTER": "3"}
    first = cli.start("up", *cluster_args(sim), "-r", str(recipe), env=stale)
    wait_until_locked(sim, first)
    first.send_signal(signal.SIGSTOP)
    try:
        started = time.monotonic()
        again = cli("up", *cluster_args(sim), "-r", str(recipe), "--lock-wait", "60",
                    env=stale)
        assert again.exit_code == 0, again.stdout + again.stderr
        assert time.monotonic() - started < 40
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()


def test_a_second_weights_stage_is_told_who_stages_into_the_same_cache(cli, tmp_path):
    staging = tmp_path / "staging"
    # A real second process holds the staging cache's lock, as a running stage does.
    hold = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; sys.path.insert(0, sys.argv[1]); "
         "from pathlib import Path; from clusterprep.lock import local_lock\n"
         "with local_lock(Path(sys.argv[2])):\n print('held', flush=True); time.sleep(60)",
         str(SRC), str(staging / ".clusterprep-lock")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert hold.stdout is not None and hold.stdout.readline().strip() == "held"
        result = cli("weights", "stage", "--staging", str(staging), "--repo", "org/alpha",
                     "--from-cache", str(tmp_path / "empty-cache"))
        assert result.exit_code == 75
        assert f"(pid {hold.pid} on " in result.stderr
    finally:
        hold.kill()
        hold.wait()
