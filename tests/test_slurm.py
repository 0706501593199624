"""Through Slurm: every command as one `srun` job step per fleet call, against a real Slurm.

Each simulated cluster here also runs Debian's Slurm (tests/slurmcluster.py: munged,
slurmctld, a slurmd inside every node) and holds an allocation, as after `salloc`. The user
stories the SSH tests tell are told again through Slurm, with their own assertions: this
module's `cli` adds `--slurm-job JOB` to every command that names a Slurm cluster's nodes file
(and drops `-F`, which means nothing to Slurm). Then come the stories only Slurm has.
"""

from __future__ import annotations

import inspect
import os
import re
import signal
import threading
from collections.abc import Callable, Iterator

import pytest

import cluster
import slurmcluster
import test_check
import test_faults
import test_lock
import test_run
import test_up
import test_wandb
import test_weights
from polls import until
from test_check import checked_cluster  # noqa: F401  (fixtures the stories use)
from test_lock import slow_recipe  # noqa: F401
from test_up import venv_setup  # noqa: F401
from test_wandb import files_holding, new_key, sim4  # noqa: F401
from test_weights import nodes, staging  # noqa: F401

from clusterprep.fleet.slurmctl import NodeState

# Which Slurm (and allocation) serves each cluster's nodes file, for `cli` below.
_SLURM_OF: dict[str, tuple[slurmcluster.SlurmCluster, str]] = {}


def _require_slurm() -> None:
    reason = cluster.check_environment() or slurmcluster.check_slurm()
    if reason is not None:
        pytest.skip(reason)


def _start(root, n: int) -> tuple[cluster.SimCluster, slurmcluster.SlurmCluster]:
    for attempt in range(3):
        sim = cluster.SimCluster(root / f"try{attempt}", n)
        sim.start()
        # Another process's cluster may have taken the same loopback block at the same
        # moment: its sshds answer on our addresses while ours exit. Take another block then.
        if all(node.running for node in sim.nodes):
            break
        sim.stop()
    else:
        raise cluster.SimClusterError(f"{n} nodes never all started under {root}")
    slurm = slurmcluster.SlurmCluster(sim)
    try:
        slurm.start()
        slurm.follow_node_stops()
        _SLURM_OF[str(sim.nodes_file)] = (slurm, slurm.allocate())
    except BaseException:
        sim.stop()
        raise
    return sim, slurm


def _stop(sim: cluster.SimCluster) -> None:
    slurm, _ = _SLURM_OF.pop(str(sim.nodes_file))
    slurm.stop()
    sim.stop()


@pytest.fixture(scope="module")
def cluster4(tmp_path_factory: pytest.TempPathFactory) -> Iterator[cluster.SimCluster]:
    """A started 4-node cluster with its Slurm and an allocation of all four nodes."""
    _require_slurm()
    sim, _ = _start(tmp_path_factory.mktemp("slurm4"), 4)
    try:
        yield sim
    finally:
        _stop(sim)


@pytest.fixture
def make_cluster(tmp_path_factory: pytest.TempPathFactory
                 ) -> Iterator[Callable[[int], cluster.SimCluster]]:
    """make_cluster(n): a started n-node cluster with its Slurm and an allocation of all."""
    _require_slurm()
    made: list[cluster.SimCluster] = []

    def make(n: int) -> cluster.SimCluster:
        sim, _ = _start(tmp_path_factory.mktemp(f"slurm{n}-"), n)
        made.append(sim)
        return sim

    try:
        yield make
    finally:
        for sim in made:
            _stop(sim)


def slurm_of(sim: cluster.SimCluster) -> tuple[slurmcluster.SlurmCluster, str]:
    return _SLURM_OF[str(sim.nodes_file)]


def through_slurm(args: tuple[str, ...], env: dict[str, str] | None
                  ) -> tuple[list[str], dict[str, str] | None]:
    """A command line whose `-n` names a Slurm cluster's nodes file, sent through its Slurm:
    `--slurm-job JOB` added, `-F` dropped, SLURM_CONF set."""
    words = list(args)
    if "-n" not in words or words[words.index("-n") + 1] not in _SLURM_OF:
        return words, env
    slurm, job = _SLURM_OF[words[words.index("-n") + 1]]
    if "-F" in words:
        del words[words.index("-F"):words.index("-F") + 2]
    command = 2 if words[0] in ("weights", "wandb", "down") else 1
    words[command:command] = ["--slurm-job", job]
    return words, {**slurm.env, **(env or {})}


@pytest.fixture
def cli(cli):
    """The conftest's `cli` (and its start/finish), through Slurm for a Slurm cluster's nodes."""

    def run(*args: str, env: dict[str, str] | None = None, **options):
        words, env = through_slurm(args, env)
        return cli(*words, env=env, **options)

    def start(*args: str, env: dict[str, str] | None = None, **options):
        words, env = through_slurm(args, env)
        return cli.start(*words, env=env, **options)

    run.start, run.finish = start, cli.finish  # type: ignore[attr-defined]
    return run


# -- the SSH stories, through Slurm ------------------------------------------------------

SSH_STORIES = [
    test_run.test_redirections_and_tilde_land_on_every_node_never_on_the_head,
    test_run.test_identical_outputs_are_grouped_under_a_folded_node_set,
    test_run.test_failures_are_summarised_with_exit_codes_and_the_status_is_1,
    test_run.test_json_gives_every_node_its_exit_code_output_and_time,
    test_run.test_a_command_that_outlives_the_timeout_is_killed_and_named,
    test_run.test_a_megabyte_per_node_and_bytes_that_are_not_utf8,
    test_run.test_stream_prefixes_each_line_with_its_node,
    test_up.test_up_sets_up_every_node_and_a_second_up_changes_nothing,
    test_check.test_identical_nodes_pass_with_no_findings,
    test_weights.test_sync_makes_every_cache_byte_identical_to_staging_with_links_kept,
    test_wandb.test_login_never_shows_the_key_to_any_process_and_writes_it_as_wandb_does,
    test_faults.test_a_bashrc_that_exits_is_named_as_the_cause_not_an_empty_probe_failure,
    test_faults.test_a_frozen_node_is_cut_out_as_hung_and_the_others_finish,
    test_faults.test_a_silent_command_on_a_healthy_node_is_not_hung,
    test_lock.test_a_second_up_is_told_who_is_changing_the_cluster_and_the_first_finishes_whole,
    test_lock.test_a_killed_run_leaves_neither_its_lock_nor_its_commands_behind,
]


@pytest.mark.parametrize("story", SSH_STORIES,
                         ids=[f"{s.__module__}.{s.__name__[5:]}" for s in SSH_STORIES])
def test_the_ssh_story_holds_through_slurm(story, request):
    story(**{name: request.getfixturevalue(name)
             for name in inspect.signature(story).parameters})


# -- what only Slurm has -----------------------------------------------------------------

def step_launches(slurm: slurmcluster.SlurmCluster) -> dict[str, set[str]]:
    """Every job step the slurmds launched: step id -> the nodes that ran a task of it."""
    launched: dict[str, set[str]] = {}
    for log in slurm.dir.glob("slurmd-*.log"):
        for step in re.findall(r"launch task StepId=(\d+\.\d+)", log.read_text(errors="replace")):
            launched.setdefault(step, set()).add(log.stem[len("slurmd-"):])
    return launched


def test_inside_an_allocation_each_fleet_call_is_one_job_step_on_every_node(cli, cluster4):
    slurm, job = slurm_of(cluster4)
    inside = {**slurm.env, "SLURM_JOB_ID": job, "SLURM_JOB_NODELIST": "node[01-04]"}
    before = step_launches(slurm)
    result = cli("nodes", "--json", env=inside)  # no nodes named: the allocation's
    assert result.exit_code == 0, result.stderr
    rows = result.json()["nodes"]
    assert [(r["node"], r["head"], r["hostname"]) for r in rows] == [
        ("node01", True, "node01"), ("node02", False, "node02"),
        ("node03", False, "node03"), ("node04", False, "node04")]
    assert {r["slurm_state"] for r in rows} == {"mixed"}  # the job holds 1 CPU of each 4
    new = {step: where for step, where in step_launches(slurm).items() if step not in before}
    # `nodes` makes two fleet calls (a no-op round trip, the facts probe): two steps, each
    # on all four nodes.
    assert sorted(map(sorted, new.values())) == [["node01", "node02", "node03", "node04"]] * 2
    table = cli("nodes", env=inside)
    assert re.search(r"node03 .* mixed .* yes", table.stdout), table.stdout


def test_the_cluster_lock_is_one_job_step_for_all_nodes_not_one_per_node(cli, cluster4):
    slurm, _ = slurm_of(cluster4)
    before = step_launches(slurm)
    result = cli("down", "shell", "-r", "demo", "-n", str(cluster4.nodes_file), "--json")
    assert result.exit_code == 0, result.stderr
    new = {step: where for step, where in step_launches(slurm).items() if step not in before}
    # The lock, held for the whole command, and the step that takes the block out: each on
    # all four nodes. A step per node would not scale to a thousand nodes (an srun each).
    assert sorted(map(sorted, new.values())) == [["node01", "node02", "node03", "node04"]] * 2


def test_a_drained_and_a_down_node_are_named_and_the_others_finish(cli, make_cluster):
    sim = make_cluster(4)
    slurm, job = slurm_of(sim)
    slurm.client("scontrol", "update", "nodename=node02", "state=drain", "reason=xid 79 gpu3")
    sim.node("node04").stop()  # its slurmd dies with it, and Slurm marks it down
    result = cli("run", "-n", str(sim.nodes_file), "--json", "hostname")
    assert result.exit_code == 1
    by_node = {n["node"]: n for n in result.json()["nodes"]}
    assert by_node["node01"]["stdout"] == "node01\n" and by_node["node03"]["exit_code"] == 0
    assert by_node["node02"]["error"]["kind"] == "unreachable"
    assert "draining (xid 79 gpu3)" in by_node["node02"]["error"]["message"]
    assert by_node["node04"]["error"]["kind"] == "unreachable"
    assert "Slurm reports node04 down" in by_node["node04"]["error"]["message"]

    table = cli("nodes", "-n", str(sim.nodes_file))
    assert table.exit_code == 1
    assert re.search(r"node02 .* draining .* no", table.stdout), table.stdout
    assert "node04: unreachable: Slurm reports node04 down" in " ".join(table.stdout.split())


def test_a_slurmd_dead_while_slurm_still_lists_its_node_costs_only_that_node(
        cli, make_cluster):
    sim = make_cluster(3)
    slurm, job = slurm_of(sim)
    os.kill(slurm.daemon_pids()["node02"], signal.SIGKILL)  # Slurm notices only much later
    result = cli("run", "-n", str(sim.nodes_file), "--json", "echo once >> ~/runs; hostname")
    assert result.exit_code == 1
    by_node = {n["node"]: n for n in result.json()["nodes"]}
    assert by_node["node02"]["error"]["kind"] == "unreachable"
    assert "Slurm could not start the task on node02" in by_node["node02"]["error"]["message"]
    # srun aborted the whole step; the others ran the command in a step of their own, once.
    for name in ("node01", "node03"):
        assert by_node[name]["stdout"] == f"{name}\n" and by_node[name]["exit_code"] == 0
        assert (sim.node(name).home / "runs").read_text() == "once\n"


def node_processes(sim: cluster.SimCluster, pattern: str) -> dict[str, list[str]]:
    return {node.name: [line for line in node.run("ps -eo args").stdout.splitlines()
                        if pattern in line] for node in sim.nodes if node.running}


def test_a_step_past_its_timeout_is_cancelled_and_leaves_no_process_on_any_node(
        cli, cluster4):
    slurm, job = slurm_of(cluster4)
    result = cli("run", "-n", str(cluster4.nodes_file), "--timeout", "6", "--json",
                 "echo started; sleep 31 & sleep 32; echo never")
    assert result.exit_code == 1
    for entry in result.json()["nodes"]:
        assert entry["error"]["kind"] == "command-timeout" and entry["stdout"] == "started\n"
    assert node_processes(cluster4, "sleep 3") == {n.name: [] for n in cluster4.nodes}
    until(lambda: "clusterprep" not in slurm.client(  # slurmctld lists it a moment longer
        "squeue", "--noheader", "--steps", f"--jobs={job}", "--format=%j").stdout,
        "the cancelled step is no longer listed", within=15, every=0.2)


def test_ctrl_c_cancels_the_step_on_every_node_and_keeps_what_finished(cluster4, cli):
    slurm, job = slurm_of(cluster4)
    process = cli.start("run", "--slurm-job", job, "-n", str(cluster4.nodes_file), "--json",
                        'echo "hello from $(hostname)"; [ "$(hostname)" = node01 ] || sleep 60',
                        env=slurm.env)
    until(lambda: all(node_processes(cluster4, "sleep 60")[name]
                      for name in ("node02", "node03", "node04")),
          "the step runs on node02-node04", within=60)
    process.send_signal(signal.SIGINT)
    interrupted = cli.finish(process, timeout=60)
    assert interrupted.exit_code == 130, interrupted.stderr
    rows = {n["node"]: n for n in interrupted.json()["nodes"]}
    assert rows["node01"]["exit_code"] == 0 and rows["node01"]["stdout"] == "hello from node01\n"
    for name in ("node02", "node03", "node04"):
        assert (rows[name]["error"] or {}).get("kind") == "interrupted", rows[name]
        assert rows[name]["stdout"] == f"hello from {name}\n"
    assert node_processes(cluster4, "sleep 60") == {n.name: [] for n in cluster4.nodes}


class SlurmWatcher(threading.Thread):
    """While a command runs, reads over and over `scontrol show step` and the command line
    and environment of every process of every node (their PID namespaces are nested in ours)
    and of every `srun`."""

    def __init__(self, slurm: slurmcluster.SlurmCluster, secret: str) -> None:
        super().__init__(daemon=True)
        self.slurm = slurm
        self.secret = secret.encode()
        self.steps: list[str] = []
        self.leaks: list[str] = []
        self.processes_read = 0
        self._done = threading.Event()

    def run(self) -> None:
        ours = os.readlink("/proc/self/ns/pid")
        while not self._done.is_set():
            self.steps.append(self.slurm.client("scontrol", "show", "step", check=False).stdout)
            for pid in filter(str.isdigit, os.listdir("/proc")):
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        argv = f.read()
                    if os.readlink(f"/proc/{pid}/ns/pid") == ours and \
                            not argv.split(b"\0")[0].endswith(b"srun"):
                        continue
                    with open(f"/proc/{pid}/environ", "rb") as f:
                        environ = f.read()
                except OSError:
                    continue
                self.processes_read += 1
                if self.secret in argv + environ:
                    self.leaks.append(argv.replace(b"\0", b" ").decode(errors="replace"))

    def stop(self) -> None:
        self._done.set()
        self.join()


def test_the_wandb_key_in_the_heads_environment_never_reaches_a_node_or_slurm(
        cli, cluster4):
    slurm, _ = slurm_of(cluster4)
    key = new_key()
    watcher = SlurmWatcher(slurm, key)
    watcher.start()
    try:
        for _ in range(5):  # until `scontrol show step` has caught a login step at work
            result = cli("wandb", "login", "-n", str(cluster4.nodes_file), "--json",
                         env={"WANDB_API_KEY": key})
            assert result.exit_code == 0, result.stderr
            if any("clusterprep-" in out for out in watcher.steps):
                break
    finally:
        watcher.stop()
        test_wandb.clean_homes(cluster4)
    assert any("clusterprep-" in out for out in watcher.steps) and watcher.processes_read
    assert not [out for out in watcher.steps if key in out]
    assert watcher.leaks == []
    assert files_holding(key, slurm.dir) == []  # no log, no spool file of Slurm's


def test_slurm_without_nodes_or_with_a_node_outside_the_job_is_refused(cli, cluster4,
                                                                      tmp_path):
    slurm, job = slurm_of(cluster4)
    alone = cli("run", "--slurm", "true", env=slurm.env)
    assert alone.exit_code == 2 and "--slurm-job ID" in alone.stderr
    stray = tmp_path / "nodes.txt"
    stray.write_text("node01\n# the next one is no node of this Slurm\ngpu99\n")
    outside = cli("run", "--slurm-job", job, "-n", str(stray), "true", env=slurm.env)
    assert outside.exit_code == 2
    assert f"{stray}:3: Slurm knows no node gpu99" in outside.stderr
    gone = cli("run", "--slurm-job", "999999", "true", env=slurm.env)
    assert gone.exit_code == 2 and "Slurm job 999999" in gone.stderr


def test_named_nodes_without_an_allocation_get_one_for_the_run_only(cli, cluster4):
    slurm, _ = slurm_of(cluster4)
    result = cli("run", "--slurm", "-n", "node[02-03]", "--json",
                 'echo "$SLURM_JOB_ID $(hostname)"', env=slurm.env)
    assert result.exit_code == 0, result.stderr
    outputs = [n["stdout"].split() for n in result.json()["nodes"]]
    assert [host for _, host in outputs] == ["node02", "node03"]
    own_job = outputs[0][0]
    jobs = slurm.client("squeue", "--noheader", "--format=%i").stdout.split()
    assert own_job not in jobs  # released when the command ended


def test_a_run_killed_outright_gives_its_own_allocation_back(cli, cluster4):
    slurm, job = slurm_of(cluster4)

    def own_jobs() -> set[str]:
        listed = slurm.client("squeue", "--noheader", "--format=%i %j").stdout.split("\n")
        return {line.split()[0] for line in listed if line.endswith(" clusterprep")} - {job}

    run = cli.start("run", "--slurm", "-n", "node[02-03]", "sleep 60", env=slurm.env)
    try:
        until(own_jobs, "the run gets its allocation", within=60, every=0.2)
    finally:
        run.kill()  # SIGKILL: clusterprep cleans nothing up itself
        run.communicate()
    until(lambda: not own_jobs(), "the killed run's allocation is given back", every=0.2)


def test_nodes_slurm_will_not_give_now_are_a_clear_error_not_a_wait(cli, cluster4):
    slurm, _ = slurm_of(cluster4)
    slurm.client("scontrol", "create", "reservation", "ReservationName=theirs", "Users=nobody",
                 "Nodes=node04", "StartTime=now", "Duration=10", "Flags=ignore_jobs")
    try:
        result = cli("run", "--slurm", "-n", "node04", "true", env=slurm.env)
    finally:
        slurm.client("scontrol", "delete", "ReservationName=theirs")
    assert result.exit_code == 2, result.stderr
    assert "cannot allocate 1 node(s) within 10 s: salloc: error: " in result.stderr
    assert "scontrol show reservation" in result.stderr


@pytest.mark.parametrize("state, usable", [
    ("idle", True), ("mixed", True), ("allocated", True), ("completing", True),
    ("draining", False), ("drained", False), ("down*", False), ("down", False),
    ("allocated*", False), ("fail", False), ("unknown*", False),
])
def test_which_slurm_states_get_a_task(state, usable):
    assert NodeState("node01", state, "10.0.0.1", None).usable is usable
