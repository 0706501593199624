"""`clusterprep launch`: the training runs on every node as one gang; when any part of it
fails (a rank killed, a rank stopped, the user's Ctrl-C), every process of the run is gone on
every node within seconds, which each node is searched for, and the report names the node
that failed first.

Every run here is a real `torchrun` + gloo over the simulated cluster's addresses, in the
venv with real torch (tests/torchenv.py); faults are real signals sent inside the nodes. No
GPU can be reached from here: `--nproc-per-node auto` counts none, so one rank per node.
"""

from __future__ import annotations

import json
import shlex
import signal
import subprocess
import time

import pytest
import test_slurm
import torchenv
from polls import until

from test_smoke import free_port, torch_env, write_recipe  # noqa: F401  (torch_env: fixture)

TRAIN = '''\
import argparse, os, time
import torch
import torch.distributed as dist

parser = argparse.ArgumentParser()
parser.add_argument("--steps", type=int, default=3, help="0: until stopped")
steps = parser.parse_args().steps
dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
print(f"rank {rank} of {world} started on {os.uname().nodename}", flush=True)
step = 0
while steps == 0 or step < steps:
    total = torch.ones(256)
    dist.all_reduce(total)
    assert total[0] == world
    step += 1
    if steps or step % 20 == 0:
        print(f"rank {rank} step {step}", flush=True)
    time.sleep(0.02)
print(f"rank {rank} done", flush=True)
dist.destroy_process_group()
'''
WORKERS = "-u train.py"  # what a torchrun worker's command line holds (torchrun's: not -u)


def launch_args(sim, *extra: str) -> list[str]:
    (sim.shared / "train.py").write_text(TRAIN)
    return ["launch", "-n", str(sim.nodes_file), "-F", str(sim.ssh_config),
            "-r", str(write_recipe(sim)), "--master-port", str(free_port()), "--grace", "2",
            "--log-dir", str(sim.root / "logs"), *extra]


def left_running(sim, run: str | None = None) -> dict[str, list[str]]:
    """Every node searched, inside it: the processes of a launch (by its marker, or any
    launch's), and anything running train.py."""
    marker = f"CLUSTERPREP_LAUNCH_RUN={run or ''}"
    found = {}
    for node in sim.running:
        listed = node.run(
            f"for e in /proc/[0-9]*/environ; do grep -qsa -- '{marker}' $e && "
            "tr '\\0' ' ' < ${e%/environ}/cmdline && echo; done; "
            "ps -eo args | grep -- train.py | grep -v grep; true").stdout.split("\n")
        if [line for line in listed if line.strip()]:
            found[node.name] = [line for line in listed if line.strip()]
    return found


def start(cli, sim, *extra: str) -> subprocess.Popen:
    return cli.start(*launch_args(sim, "--json", *extra, "--", "train.py", "--steps", "0"))


def wait_for(process: subprocess.Popen, text: str, seconds: float = 120) -> None:
    """Read the launch's live lines (on stderr with --json) until one holds `text`."""
    deadline, seen = time.monotonic() + seconds, []
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        seen.append(line)
        if text in line:
            return
        assert line or process.poll() is None, "".join(seen) + process.stdout.read()
    pytest.fail(f"no {text!r} within {seconds} s:\n" + "".join(seen))


def worker_pid(node) -> int:
    found = node.run(f"pgrep -f -- '{WORKERS}'").stdout.split()
    assert found, f"no rank running on {node.name}"
    return int(found[0])


def test_a_training_run_on_every_node_passes_with_each_nodes_output_in_its_log(
        make_cluster, cli, torch_env):
    sim = make_cluster(2)
    done = cli(*launch_args(sim, "--json", "--", "train.py", "--steps", "3"), timeout=180)
    document = done.json()
    assert done.exit_code == 0, done.stdout + done.stderr
    assert document["ok"] and document["first_failure"] is None
    assert document["commands"]["node02"].startswith(
        f"cd {sim.shared} && env PYTHONNOUSERSITE=True {torchenv.ENV}/bin/torchrun --nnodes 2 "
        f"--node_rank 1 --master_addr node01 --master_port {document['port']} "
        "--nproc_per_node 1")
    assert [e["how"] for e in document["endings"]] == ["exited", "exited"]
    assert "node02 | rank 1 step 3" in done.stderr  # live, prefixed by its node
    logs = sim.root / "logs"
    assert "rank 0 of 2 started on node01" in (logs / "node01.log").read_text()
    assert "rank 1 done" in (logs / "node02.log").read_text()
    assert json.loads((logs / "summary.json").read_text())["run"] == document["run"]
    assert document["verified"] == ["node01", "node02"]
    assert left_running(sim) == {}


def test_a_rank_killed_with_sigkill_ends_every_rank_everywhere_and_is_named_first(
        make_cluster, cli, torch_env):
    sim = make_cluster(3)
    launch = start(cli, sim)
    try:
        wait_for(launch, "node03 | rank 2 step 20")
        sim.node("node02").run(f"kill -9 {worker_pid(sim.node('node02'))}")
        killed = time.monotonic()
        done = cli.finish(launch, timeout=60)
    finally:
        launch.kill()
    took = time.monotonic() - killed
    document = done.json()
    assert done.exit_code == 1, done.stderr
    first = document["first_failure"]
    assert (first["node"], first["rank"], first["signal"]) == ("node02", 1, 9)
    assert "a worker was killed by signal 9" in first["said"]
    assert [e["node"] for e in document["endings"]][0] == "node02"
    assert left_running(sim) == {}  # every node searched: no rank, no torchrun, nothing marked
    assert sorted(document["verified"]) == ["node01", "node02", "node03"]
    assert took < 20, f"{took:.1f} s from the kill to the verified end"


def test_a_rank_stopped_with_sigstop_is_named_hung_and_the_run_ends_everywhere(
        make_cluster, cli, torch_env):
    sim = make_cluster(2)
    launch = start(cli, sim, "--hung-after", "3")
    try:
        wait_for(launch, "node02 | rank 1 step 20")
        sim.node("node02").run(f"kill -STOP {worker_pid(sim.node('node02'))}")
        done = cli.finish(launch, timeout=60)
    finally:
        launch.kill()
    document = done.json()
    assert done.exit_code == 1, done.stderr
    first = document["first_failure"]
    assert (first["node"], first["how"], first["rank"]) == ("node02", "hung", 1)
    assert "stopped (state T)" in first["detail"] and "train.py" in first["detail"]
    assert left_running(sim) == {}


def test_a_node_killed_mid_run_is_named_lost_first_and_every_other_node_ends(
        make_cluster, cli, torch_env):
    sim = make_cluster(3)
    launch = start(cli, sim)
    try:
        wait_for(launch, "node03 | rank 2 step 20")
        sim.node("node03").stop()  # every process of the node, its sshd too, killed with -9
        done = cli.finish(launch, timeout=90)
    finally:
        launch.kill()
    document = done.json()
    assert done.exit_code == 1, done.stderr
    first = document["first_failure"]
    assert (first["node"], first["how"]) == ("node03", "lost"), document["endings"]
    assert left_running(sim) == {}  # node01 and node02 searched: nothing of the run left
    assert sorted(document["verified"]) == ["node01", "node02"]
    assert list(document["unverified"]) == ["node03"]


def test_ctrl_c_on_the_head_ends_the_run_on_every_node(make_cluster, cli, torch_env):
    sim = make_cluster(2)
    launch = start(cli, sim)
    try:
        wait_for(launch, "node02 | rank 1 step 20")
        launch.send_signal(signal.SIGINT)
        done = cli.finish(launch, timeout=60)
    finally:
        launch.kill()
    document = done.json()
    assert done.exit_code == 130 and document["interrupted"], done.stderr
    assert {e["how"] for e in document["endings"]} == {"stopped"}
    assert left_running(sim) == {}


def test_a_node_unreachable_at_the_start_starts_nothing_and_the_relaunch_printed_runs(
        make_cluster, cli):
    sim = make_cluster(3)
    sim.node("node03").stop()
    done = cli(*launch_args(sim, "--raw", "--", "echo ran as $NODE_RANK of $NNODES"))
    assert done.exit_code == 1
    assert "node03: could not be reached: nothing was started" in done.stdout
    assert "| ran as" not in done.stdout
    printed = next(line for line in done.stdout.splitlines() if "relaunch without it" in line)
    relaunch = shlex.split(printed[printed.index("clusterprep launch "):])
    assert relaunch[:4] == ["clusterprep", "launch", "--raw", "--master-port"]
    assert relaunch[relaunch.index("--exclude") + 1] == "node03"
    again = cli(*relaunch[1:])  # as printed: the same raw command, on the nodes left
    assert again.exit_code == 0, again.stdout + again.stderr
    assert "node01 | ran as 0 of 2" in again.stdout and "node02 | ran as 1 of 2" in again.stdout
    assert left_running(sim) == {}


def test_a_stale_process_on_the_master_port_is_named_and_kill_stale_ends_it(
        make_cluster, cli):
    sim = make_cluster(2)
    args = launch_args(sim, "--json")
    port = args[args.index("--master-port") + 1]
    head = sim.node("node01")
    head.run(f"setsid python3 -m http.server {port} >/dev/null 2>&1 < /dev/null & "
             f"sleep 1; echo $! > ~/holder.pid")
    holder = int(head.run("cat ~/holder.pid").stdout)
    try:
        refused = cli(*args, "--raw", "--", "true").json()
        assert not refused["ok"] and refused["endings"] == []
        assert [(p["node"], p["pid"], p["why"]) for p in refused["stale"]] == [
            ("node01", holder, f"listens on the master port {port}")]
        done = cli(*args, "--kill-stale", "--raw", "--",
                   'echo "$NODE_RANK of $NNODES, master $MASTER_ADDR:$MASTER_PORT"')
        document = done.json()
        assert done.exit_code == 0 and document["stale_killed"], done.stdout + done.stderr
        assert f"node02 | 1 of 2, master node01:{port}" in done.stderr
    finally:
        head.run(f"kill -9 {holder} 2>/dev/null; true")


def test_dry_run_prints_every_nodes_command_line_and_excluded_nodes_leave_the_order(
        make_cluster, cli):
    sim = make_cluster(3)
    done = cli(*launch_args(sim, "--dry-run", "--exclude", "node01", "--nproc-per-node", "2",
                            "--", "train.py", "--steps", "9"))
    assert done.exit_code == 0, done.stdout + done.stderr
    lines = [line for line in done.stdout.splitlines() if " && " in line]
    assert [line.split(":")[0] for line in lines] == ["node02", "node03"]
    assert "--nnodes 2 --node_rank 1 --master_addr node03" not in lines[1]
    assert "--nnodes 2 --node_rank 1 --master_addr node02" in lines[1]
    assert lines[1].endswith("--nproc_per_node 2 --max_restarts 0 train.py --steps 9")
    assert not (sim.root / "logs").exists()


def test_bad_launch_input_is_refused_before_any_node_is_touched(cli, tmp_path):
    nothing = cli("launch", "-n", "localhost")
    assert nothing.exit_code == 2 and "nothing to launch" in nothing.stderr
    unknown = cli("launch", "-n", "localhost", "--exclude", "gpu7", "--", "train.py")
    assert unknown.exit_code == 2 and "--exclude names gpu7" in unknown.stderr


@pytest.fixture
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory):
    """Two simulated nodes with a real Slurm and an allocation of both (tests/test_slurm.py)."""
    test_slurm._require_slurm()
    sim, _ = test_slurm._start(tmp_path_factory.mktemp("launch-slurm"), 2)
    try:
        yield sim
    finally:
        test_slurm._stop(sim)


def test_through_slurm_a_killed_rank_ends_the_run_on_every_node_too(
        slurm_cluster, cli, torch_env):
    sim = slurm_cluster
    words, env = test_slurm.through_slurm(
        tuple(launch_args(sim, "--json", "--", "train.py", "--steps", "0")), None)
    launch = cli.start(*words, env=env)
    try:
        wait_for(launch, "node02 | rank 1 step 20")
        sim.node("node02").run(f"kill -9 {worker_pid(sim.node('node02'))}")
        done = cli.finish(launch, timeout=60)
    finally:
        launch.kill()
    document = done.json()
    assert done.exit_code == 1, done.stderr
    assert (document["first_failure"]["node"], document["first_failure"]["signal"]) == (
        "node02", 9)
    assert sorted(document["verified"]) == ["node01", "node02"]
    assert left_running(sim) == {}


def test_a_nodes_supervisor_speaks_in_the_shapes_the_gang_reads(tmp_path):
    """The real supervisor probe, run here as a node runs it, on a command that prints and
    fails: every event it sends reads into its type (a renamed field would end the node's run
    as a named error, never an exit the head misses)."""
    from clusterprep import probes
    from clusterprep.answers import read
    from clusterprep.launch.answers import EVENTS, Exit, Left, Line, Started

    source = probes.load("launch_node")
    request = {"command": "echo step 1; exit 3", "cwd": str(tmp_path), "env": {},
               "marker": "CLUSTERPREP_LAUNCH_RUN=probe-test", "hung_after": 5, "grace": 1}
    node = subprocess.Popen(["bash", "-c", probes.command(source)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE)
    node.stdin.write(source.encode() + json.dumps(request).encode() + b"\n")
    node.stdin.flush()  # held open: the end of its stdin is the head's stop
    lines = node.stdout.read().decode().splitlines()
    node.stdin.close()
    node.wait(10)
    events = [read(EVENTS[raw["event"]], raw) for raw in map(json.loads, lines)]
    assert [type(e) for e in events] == [Started, Line, Exit, Left]
    assert events[1] == Line("step 1")
    assert events[2] == Exit(code=3, signal=None, stopped=False, oom=[])
    assert events[3] == Left(left=[], survivors=[])


def test_through_slurm_a_node_lost_is_told_at_once_while_the_others_run_on(
        slurm_cluster, cli):
    """A node's supervisor killed with -9 while the other node's command goes on unaware (as
    ranks blocked in NCCL would): its job step ends without a word, the node is named lost
    then, and the other node is stopped then, not when every step has ended (never, here)."""
    sim = slurm_cluster
    words, env = test_slurm.through_slurm(
        tuple(launch_args(sim, "--json", "--raw", "--", "echo started; exec sleep 600")), None)
    launch = cli.start(*words, env=env)
    try:
        wait_for(launch, "node02 | started")
        until(lambda: "sleep 600" in sim.node("node01").run("ps -eo args").stdout,
              "node01 runs the command")
        node02 = sim.node("node02")
        command = node02.run("pgrep -o -f 'sleep 600'").stdout.split()[0]
        node02.run(f"kill -9 $(ps -o ppid= -p {command})")
        done = cli.finish(launch, timeout=90)
    finally:
        launch.kill()
    document = done.json()
    assert done.exit_code == 1, done.stderr
    endings = {e["node"]: e["how"] for e in document["endings"]}
    assert document["first_failure"]["node"] == "node02" and endings == {
        "node02": "lost", "node01": "stopped"}, document["endings"]
    assert sorted(document["verified"]) == ["node01", "node02"]
    assert left_running(sim) == {}


def test_a_nodes_supervisor_speaks_in_the_shapes_the_gang_reads(tmp_path):
    """The real supervisor probe, run here as a node runs it, on a command that prints and
    fails: every event it sends reads into its type (a renamed field would end the node's run
    as a named error, never an exit the head misses)."""
    from clusterprep import probes
    from clusterprep.answers import read
    from clusterprep.launch.answers import EVENTS, Exit, Left, Line, Started

    source = probes.load("launch_node")
    request = {"command": "echo step 1; exit 3", "cwd": str(tmp_path), "env": {},
               "marker": "CLUSTERPREP_LAUNCH_RUN=probe-test", "hung_after": 5, "grace": 1}
    node = subprocess.Popen(["bash", "-c", probes.command(source)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE)
    node.stdin.write(source.encode() + json.dumps(request).encode() + b"\n")
    node.stdin.flush()  # held open: the end of its stdin is the head's stop
    lines = node.stdout.read().decode().splitlines()
    node.stdin.close()
    node.wait(10)
    events = [read(EVENTS[raw["event"]], raw) for raw in map(json.loads, lines)]
    assert [type(e) for e in events] == [Started, Line, Exit, Left]
    assert events[1] == Line("step 1")
    assert events[2] == Exit(code=3, signal=None, stopped=False, oom=[])
    assert events[3] == Left(left=[], survivors=[])


def test_through_slurm_a_nodes_lost_supervisor_ends_the_run_at_once_not_at_the_end(
        slurm_cluster, cli, torch_env):
    """A node's supervisor killed with -9 (its job step's task ends without a word): the node
    is named lost as soon as its step ends, so the others are stopped then, not never."""
    sim = slurm_cluster
    words, env = test_slurm.through_slurm(
        tuple(launch_args(sim, "--json", "--", "train.py", "--steps", "0")), None)
    launch = cli.start(*words, env=env)
    try:
        wait_for(launch, "node02 | rank 1 step 20")
        node02 = sim.node("node02")
        shell = node02.run("pgrep -o -f '^/bin/sh -c .*torchrun'").stdout.split()[0]
        node02.run(f"kill -9 $(ps -o ppid= -p {shell})")
        done = cli.finish(launch, timeout=90)
    finally:
        launch.kill()
    document = done.json()
    assert done.exit_code == 1, done.stderr
    assert (document["first_failure"]["node"], document["first_failure"]["how"]) == (
        "node02", "lost"), document["endings"]
    assert sorted(document["verified"]) == ["node01", "node02"]
    assert left_running(sim) == {}  # node02's ranks, left without their supervisor: swept
