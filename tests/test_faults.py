"""A node that drops, freezes, cannot start a command or cannot be named never crashes a
command or stalls the others: its failure is data, named with its cause.

Faults are real (faultkit.py): a node's SSH sessions `kill -9`ed, every process of a node
`kill -STOP`ped, a shell startup file that exits, a DNS server that answers late.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

import faultkit
import hubcache
import setupkit
from polls import until

WANDB_KEY = "0123456789abcdef0123456789abcdef01234567"  # the format W&B keys have; fake


def cluster_args(sim) -> list[str]:
    return ["-n", str(sim.nodes_file), "-F", str(sim.ssh_config)]


def assert_no_traceback(result) -> None:
    assert "Traceback" not in result.stdout + result.stderr, result.stdout + result.stderr


def test_a_node_whose_connection_drops_mid_command_is_named_and_the_others_keep_their_output(
        cluster4, cli):
    process = cli.start("run", *cluster_args(cluster4), "--json", "sleep 3; echo done")
    until(lambda: "sleep 3" in cluster4.node("node02").run("ps -eo args").stdout,
          "the command runs on node02")
    assert faultkit.kill_sessions(cluster4.node("node02")) >= 1
    result = cli.finish(process)
    assert result.exit_code == 1
    assert_no_traceback(result)
    nodes = {n["node"]: n for n in result.json()["nodes"]}
    assert nodes["node02"]["error"]["kind"] == "disconnected"
    assert "lost while the command ran" in nodes["node02"]["error"]["message"]
    for name in ("node01", "node03", "node04"):
        assert nodes[name]["stdout"] == "done\n" and nodes[name]["exit_code"] == 0


def _command(name: str, sim, tmp_path: Path) -> tuple[list[str], dict[str, str]]:
    """A command line of each kind that reaches nodes, long enough to be cut in the middle."""
    if name == "run":
        return ["run", "sleep 2; echo done"], {}
    if name == "check":
        return ["check", "--shared-dir", str(sim.shared), "--python", "/usr/bin/python3"], {}
    if name == "up":
        repo = tmp_path / "upstream"
        recipe = setupkit.venv_recipe(
            tmp_path / "venv.toml", sim.shared, repo, setupkit.make_git_repo(repo),
            setupkit.make_wheelhouse(tmp_path / "wheelhouse"))
        return ["up", "-r", str(recipe)], {}
    if name == "wandb login":
        return ["wandb", "login"], {"WANDB_API_KEY": WANDB_KEY}
    staging = hubcache.build_staging(tmp_path / "staging")
    return ["weights", "sync", "--staging", str(staging), "--repo", "org/alpha",
            "--repo", "org/beta"], {}


@pytest.mark.parametrize("seconds", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("name", ["run", "check", "up", "wandb login", "weights sync"])
def test_no_command_ends_in_a_traceback_when_a_node_drops_at_any_moment(
        make_cluster, cli, tmp_path, name, seconds):
    sim = make_cluster(3)
    words, env = _command(name, sim, tmp_path)
    with faultkit.sessions_killed_after(sim.node("node02"), seconds) as killed:
        result = cli(*words, *cluster_args(sim), env=env, timeout=180)
    assert_no_traceback(result)
    assert result.exit_code in (0, 1), result.stdout + result.stderr
    assert result.stdout.strip(), "a report, whatever happened"
    if killed and killed[0] and name == "run":  # the others may be done when the kill lands
        assert result.exit_code == 1  # lost while connecting, or while the command ran:
        assert re.search(r"node02: (unreachable|disconnected): .*[Cc]onnection.* lost",
                         result.stderr), result.stderr


def test_a_frozen_node_is_cut_out_as_hung_and_the_others_finish(cluster4, cli):
    started = time.monotonic()
    process = cli.start("run", *cluster_args(cluster4), "--hung-after", "3", "--json",
                        "sleep 3; echo done")
    node03 = cluster4.node("node03")
    until(lambda: "sleep 3" in node03.run("ps -eo args").stdout or process.poll() is not None,
          "node03 runs the command")
    with faultkit.frozen(node03):  # connected and running: frozen mid-command
        result = cli.finish(process, timeout=60)
    took = time.monotonic() - started
    assert_no_traceback(result)
    assert result.exit_code == 1
    nodes = {n["node"]: n for n in result.json()["nodes"]}
    assert nodes["node03"]["error"]["kind"] == "hung"
    assert "stopped answering" in nodes["node03"]["error"]["message"]
    assert " for 3 s; cut out" in nodes["node03"]["error"]["message"]
    assert all(nodes[n]["stdout"] == "done\n" for n in ("node01", "node02", "node04"))
    assert took < 30, "cut out after --hung-after, not after minutes"


def test_a_silent_command_on_a_healthy_node_is_not_hung(cluster4, cli):
    result = cli("run", *cluster_args(cluster4), "--hung-after", "1", "sleep 3; echo done")
    assert result.exit_code == 0, result.stdout + result.stderr


def test_a_probe_that_cannot_start_on_many_nodes_is_one_line_not_a_traceback_each(
        make_cluster, cli):
    sim = make_cluster(24)  # enough nodes that a shell exits before its stdin is written
    result = cli("check", *cluster_args(sim), "--shared-dir", str(sim.shared),
                 "--python", "/nonexistent/bin/python")
    assert_no_traceback(result)
    assert result.exit_code == 1
    lines = [line for line in result.stdout.splitlines() if "No such file" in line]
    assert len(lines) == 1 and lines[0].startswith("node[01-24]: probe-failed"), result.stdout
    assert "is the env installed there?" in lines[0]


def test_a_bashrc_that_exits_is_named_as_the_cause_not_an_empty_probe_failure(
        make_cluster, cli):
    sim = make_cluster(2)
    bashrc = sim.node("node02").home / ".bashrc"
    bashrc.write_text("echo 'conda: command not found' >&2\nexit 3\n" + bashrc.read_text())
    chatty = sim.node("node01").home / ".bashrc"
    chatty.write_text("echo 'welcome to node01' >&2\n" + chatty.read_text())

    result = cli("nodes", *cluster_args(sim))
    assert_no_traceback(result)
    assert result.exit_code == 1
    assert "node02: shell-startup: the node's shell exited (status 3) before running the " \
           "command, saying: conda: command not found" in result.stdout
    assert "~/.bashrc" in result.stdout
    assert "node01:" not in result.stdout  # a startup file that only talks is no failure

    said = cli("run", *cluster_args(sim), "--json", "echo hi")
    first = said.json()["nodes"][0]
    assert first["exit_code"] == 0 and first["stderr"] == "welcome to node01\n"


def test_unresolvable_names_are_dns_failures_even_when_the_resolver_is_slow(cli, tmp_path):
    with faultkit.SlowDns(delay=1.5) as dns:
        result = cli("nodes", "-n", "gpu-[01-30].cluster.invalid", "--connect-timeout", "2",
                     "--json", prefix=faultkit.with_resolv_conf(dns.resolv_conf(tmp_path), []),
                     timeout=60)
    assert_no_traceback(result)
    kinds = {n["error"]["kind"] for n in result.json()["nodes"]}
    assert kinds == {"dns"}, result.stdout


@pytest.mark.parametrize("option, value, says", [
    ("--fanout", "abc", "expected a whole number, got 'abc'"),
    ("--fanout", "0", "must be at least 1"),
    ("--connect-timeout", "nan", "must be a finite number, got 'nan'"),
    ("--timeout", "inf", "must be a finite number, got 'inf'"),
    ("--hung-after", "-1", "must be a finite number above 0"),
])
def test_a_bad_option_value_is_refused_with_what_was_expected(cli, option, value, says):
    result = cli("run", "-n", "localhost", option, value, "true")
    assert result.exit_code == 2
    assert f"argument {option}: {says}" in result.stderr


def test_a_bad_repo_option_says_what_a_repo_id_looks_like_once(cli):
    result = cli("weights", "stage", "--repo", "bad repo")
    assert result.exit_code == 2
    assert ("argument --repo: repo id must look like org/name, got 'bad repo'"
            in result.stderr), result.stderr


@pytest.mark.parametrize("where", ["ssh", "local"])
def test_a_timed_out_command_leaves_nothing_running_not_even_what_left_its_session(
        cluster4, cli, where):
    """torchrun, for one, starts each worker in a session of its own."""
    marker = f"clusterprep-test-escapee-{os.getpid()}-{where}"
    nodes = cluster_args(cluster4) if where == "ssh" else ["-n", "localhost"]
    result = cli("run", *nodes, "--timeout", "3",
                 f"setsid bash -c 'exec -a {marker} sleep 300' & sleep 300")
    assert result.exit_code == 1 and "command-timeout" in result.stderr

    def left() -> list[str]:
        if where == "ssh":
            return [n.name for n in cluster4.nodes if marker in n.run("ps -eo args").stdout]
        return [line for line in os.popen("ps -eo pid,ppid,sid,args").read().splitlines()
                if marker in line]

    until(lambda: not left(), f"the escapee {marker} ended everywhere", within=5)
