"""`clusterprep smoke`: the prepared cluster can start multi-node training together, and every
way it cannot is named, with nothing left running on any node.

Every collective here is a real `torchrun` + gloo over the simulated cluster's addresses, in a
venv with real torch (tests/torchenv.py). Nodes resolve each other's names through their own
/etc/hosts (tests/cluster.py), which a test changes per node to make a node wrong. No GPU can
be reached from here: the collective's nccl path (`--backend nccl`, GPUs) is not run by tests.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import launchers
import pytest
import torchenv
from conftest import SRC

from clusterprep.smoke import collective, links, names
from clusterprep.smoke.answers import Resolution
from clusterprep.smoke.collective import CollectivePlan
from clusterprep.smoke.model import CollectiveResult, Link, LinksResult, SizeResult


@pytest.fixture(scope="session")
def torch_env() -> Path:
    path, why = torchenv.ensure()
    if path is None:
        pytest.skip(why)
    return path


def free_port() -> int:
    """A master port nothing listens on (other tests run at the same time: never 29500)."""
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        return s.getsockname()[1]


def smoke_args(sim, recipe: Path, *extra: str) -> list[str]:
    return ["smoke", "-n", str(sim.nodes_file), "-F", str(sim.ssh_config), "-r", str(recipe),
            "--master-port", str(free_port()), "--link-seconds", "0.5",
            "--sizes", "64K,1M", "--iters", "3", "--warmup", "1",
            "--hostfile", str(sim.root / "hostfile"), *extra]


def write_recipe(sim) -> Path:
    """A recipe whose env is the torch venv (the same path on every node)."""
    recipe = sim.root / "recipe.toml"
    recipe.write_text(f'[shared]\ndir = "{sim.shared}"\n\n[env]\nbackend = "venv"\n'
                      f'name = "torch"\npython = "3.11"\nprefix = "{torchenv.ENV}"\n')
    return recipe


def problems(document: dict) -> dict[str, dict]:
    return {p["where"]: p for p in document["problems"]}


def phase(document: dict, name: str) -> dict:
    return next(p for p in document["phases"] if p["name"] == name)


def run_processes(sim) -> dict[str, list[str]]:
    """Every node's processes that a smoke run could have left: torchrun agents, ranks."""
    left = {}
    for node in sim.nodes:
        ps = node.run("ps -eo pid,stat,args").stdout.splitlines()[1:]
        found = [line for line in ps if "torch" in line or "smoke" in line]
        if found:
            left[node.name] = found
    return left


def colossalai_hosts(sim, path: Path) -> list[str]:
    """The hosts colossalai's own fetch_hostfile reads from `path`, run on the head, where
    `colossalai run` runs (it resolves every host)."""
    head = sim.nodes[0]
    done = head.run(f"/usr/bin/python3 - {shlex.quote(str(path))}",
                    input=launchers.colossalai_parser(), check=True)
    return json.loads(done.stdout)


def deepspeed_pool(path: Path) -> list[list]:
    """[host, slots] as DeepSpeed's own runner reads `path` (it resolves nothing)."""
    done = subprocess.run([sys.executable, "-c", launchers.deepspeed_parser(), str(path)],
                          capture_output=True, text=True, check=True, timeout=60)
    return json.loads(done.stdout)


def test_identical_nodes_pass_every_phase_and_get_a_hostfile_for_each_launcher(
        make_cluster, cli, torch_env):
    sim = make_cluster(2)
    page = sim.root / "smoke.html"
    done = cli(*smoke_args(sim, write_recipe(sim), "--json", "--html", str(page)),
               timeout=300)
    document = done.json()
    assert done.exit_code == 0, done.stdout + done.stderr
    assert document["ok"] and document["failed_phase"] is None
    assert [p["name"] for p in document["phases"]] == [
        "names", "rendezvous", "links", "collective", "handover"]

    names = phase(document, "names")
    assert names["master"] == "node01"
    assert {row["name"]: row["address"] for row in names["rows"]} == {
        n.name: n.address for n in sim.nodes}

    links = phase(document, "links")
    assert [(l["source"], l["target"]) for l in links["ring"]] == [
        ("node01", "node02"), ("node02", "node01")]
    assert all(l["ok"] and l["mb_per_s"] > 0 for l in links["ring"])

    collective = phase(document, "collective")
    assert collective["backend"] == "gloo" and collective["world"] == 2
    assert collective["torch"].startswith(torchenv.TORCH_VERSION)
    assert [s["bytes"] for s in collective["sizes"]] == [64 << 10, 1 << 20]
    for size in collective["sizes"]:
        assert size["wrong"] == 0
        assert size["busbw"] == pytest.approx(size["algbw"] * 2 * (2 - 1) / 2)
    assert collective["swept"] and collective["leftovers"] == []

    handover = phase(document, "handover")
    assert colossalai_hosts(sim, sim.root / "hostfile") == ["node01", "node02"]
    assert handover["deepspeed_hostfile"] == str(sim.root / "hostfile.deepspeed")
    assert deepspeed_pool(sim.root / "hostfile.deepspeed") == [["node01", 1], ["node02", 1]]
    port = phase(document, "rendezvous")["port"]
    assert handover["deepspeed"] == (
        f"deepspeed --hostfile {sim.root / 'hostfile.deepspeed'} --master_addr node01 "
        f"--master_port {port} TRAIN_SCRIPT [ARGS...]")
    assert f"--hostfile {sim.root / 'hostfile'} --master_addr node01 --master_port {port}" \
        in handover["colossalai"]
    assert handover["torchrun"][1].startswith(
        f"torchrun --nnodes 2 --node_rank 1 --master_addr node01 --master_port {port}")
    assert run_processes(sim) == {}
    assert "passed: 5 phases" in page.read_text()


def test_a_node_whose_hosts_file_sends_the_master_elsewhere_is_named(make_cluster, cli,
                                                                     tmp_path):
    sim = make_cluster(3)
    node02 = sim.node("node02")
    node02.set_hosts(sim.hosts_text({"node01": sim.node("node03").address}))
    done = cli(*smoke_args(sim, write_recipe(sim), "--json"))
    document = done.json()
    assert done.exit_code == 1
    assert document["failed_phase"] == "names" and len(document["phases"]) == 1
    problem = problems(document)["node02"]
    assert f"resolves the master address 'node01' to {sim.node('node03').address}" \
        in problem["cause"]
    assert f"the other nodes to {sim.node('node01').address}" in problem["cause"]
    assert "getent hosts node01" in problem["next_step"]
    assert not (sim.root / "hostfile").exists()

    text = cli(*smoke_args(sim, write_recipe(sim)))
    assert text.exit_code == 1 and "smoke failed at names" in text.stdout


def test_ssh_aliases_the_nodes_cannot_resolve_are_named_with_the_addresses_to_use(
        make_cluster, cli):
    sim = make_cluster(2)
    for node in sim.nodes:  # names only the head's ssh config knows (Host node01 / HostName)
        node.set_hosts(sim.hosts_text({n.name: None for n in sim.nodes}))
    done = cli(*smoke_args(sim, write_recipe(sim), "--json"))
    document = done.json()
    assert done.exit_code == 1 and document["failed_phase"] == "names"
    [problem] = document["problems"]
    node01, node02 = (sim.node(name).address for name in ("node01", "node02"))
    assert problem["where"] == "node[01-02]"
    assert problem["cause"].startswith("the nodes file names SSH aliases that no node can "
                                       "resolve (the master address 'node01' among them)")
    assert f"sends node01 -> {node01}, node02 -> {node02}" in problem["cause"]
    assert f"by address in the nodes file, head first ({node01}, {node02})" \
        in problem["next_step"]


def test_the_master_port_taken_on_the_head_names_what_holds_it(make_cluster, cli):
    sim = make_cluster(2)
    port = free_port()
    head = sim.node("node01")
    holder = (f"import socket, time; s = socket.socket(); s.bind(('0.0.0.0', {port})); "
              "s.listen(); time.sleep(120)")
    head.run(f"setsid python3 -c \"{holder}\" >/dev/null 2>&1 & echo $! > ~/holder.pid")
    try:
        deadline = time.monotonic() + 30
        while head.run(f"ss -ltn 'sport = :{port}' | grep -q LISTEN").returncode != 0:
            assert time.monotonic() < deadline, "the holder did not listen"
            time.sleep(0.1)
        args = smoke_args(sim, write_recipe(sim), "--json")
        args[args.index("--master-port") + 1] = str(port)
        done = cli(*args)
    finally:
        head.run("kill $(cat ~/holder.pid)")
    document = done.json()
    assert done.exit_code == 1 and document["failed_phase"] == "rendezvous"
    problem = problems(document)["node01"]
    pid = (head.home / "holder.pid").read_text().strip()
    assert f"port {port} is already in use on the head, held by pid {pid}" in problem["cause"]
    assert "python3 -c import socket" in problem["cause"]


def test_links_are_checked_between_every_pair_and_measured_around_the_ring(make_cluster, cli):
    sim = make_cluster(3)
    done = cli(*smoke_args(sim, write_recipe(sim), "--json", "--until", "links"))
    document = done.json()
    assert done.exit_code == 0, done.stdout
    links = phase(document, "links")
    assert links["all_pairs"] and links["pairs_checked"] == 6 and links["pair_failures"] == []
    assert [(l["source"], l["target"]) for l in links["ring"]] == [
        ("node01", "node02"), ("node02", "node03"), ("node03", "node01")]
    assert all(l["mb_per_s"] > 0 for l in links["ring"])
    assert links["interfaces"]["node02"] == f"the address its name resolves to ({sim.node('node02').address})"

    # Past --pairs-up-to, ring neighbours only; --link-seconds 0 measures nothing.
    done = cli(*smoke_args(sim, write_recipe(sim), "--json", "--until", "links",
                           "--pairs-up-to", "2", "--link-seconds", "0"))
    links = phase(done.json(), "links")
    assert not links["all_pairs"] and links["pairs_checked"] == 3
    assert all(l["ok"] and l["mb_per_s"] is None for l in links["ring"])


def test_a_node_whose_gloo_interface_does_not_exist_is_named(make_cluster, cli):
    sim = make_cluster(3)
    for node, interface in (("node01", "lo"), ("node02", "eth9"), ("node03", "lo")):
        bashrc = sim.node(node).home / ".bashrc"  # before its non-interactive `return`
        bashrc.write_text(f"export GLOO_SOCKET_IFNAME={interface}\n" + bashrc.read_text())
    done = cli(*smoke_args(sim, write_recipe(sim), "--json"))
    document = done.json()
    assert done.exit_code == 1 and document["failed_phase"] == "links"
    problem = problems(document)["node02"]
    assert problem["cause"].startswith("GLOO_SOCKET_IFNAME=eth9 names no interface of this node")
    assert "lo" in problem["cause"]
    assert phase(document, "links")["interfaces"]["node01"] == \
        "GLOO_SOCKET_IFNAME=lo: lo (127.0.0.1)"


def test_nccl_socket_ifname_is_read_as_nccl_reads_it(make_cluster, cli):
    # Prefixes, `^` to exclude, `=` for an exact name: each of these selects the loopback.
    sim = make_cluster(3)
    specs = {"node01": "^eth,ifb,docker,veth", "node02": "=lo", "node03": "l"}
    for node, spec in specs.items():
        bashrc = sim.node(node).home / ".bashrc"
        bashrc.write_text(f"export NCCL_SOCKET_IFNAME='{spec}'\n" + bashrc.read_text())
    done = cli(*smoke_args(sim, write_recipe(sim), "--json", "--until", "links",
                           "--backend", "nccl"))
    assert done.exit_code == 0, done.stdout
    assert phase(done.json(), "links")["interfaces"] == {
        node: f"NCCL_SOCKET_IFNAME={spec}: lo (127.0.0.1)" for node, spec in specs.items()}


def test_the_name_most_nodes_agree_on_wins_and_a_tie_goes_to_the_head():
    views = {"node01": {"m": Resolution(["10.0.0.1"])},
             "node02": {"m": Resolution(["10.0.0.2", "10.0.0.1"])},
             "node03": {"m": Resolution(error="Name or service not known")}}
    row = names._agreement("m", views, head="node01")
    assert row.address == "10.0.0.1" and row.agreeing == ["node01"]
    assert row.others == {"node02": "10.0.0.2",
                          "node03": "unresolved: Name or service not known"}
    views["node04"] = {"m": Resolution(["10.0.0.2"])}
    assert names._agreement("m", views, head="node01").address == "10.0.0.2"


def test_a_node_at_both_ends_of_slow_ring_links_is_named_as_the_slow_node():
    rates = [37.0, 11.9, 12.1, 36.5, 37.2, 15.0, 36.8, 37.1]  # n1 -> n2, n2 -> n3, ...
    ring = [Link(f"n{i + 1}", f"n{(i + 1) % 8 + 1}", True, mb_per_s=r)
            for i, r in enumerate(rates)]
    result = LinksResult(ring=ring)
    links._mark_slow(result)
    assert result.median_mb_per_s == pytest.approx(36.65)
    assert [p.where for p in result.problems] == ["n3", "n6 -> n7"]
    assert result.problems[0].cause.startswith("slow node: both of its ring links")
    assert [(l.source, l.target) for l in result.ring if l.slow] == [
        ("n2", "n3"), ("n3", "n4"), ("n6", "n7")]


def test_a_wrong_sum_or_a_busbw_under_the_floor_fails_the_collective():
    plan = CollectivePlan(master="n1", port=29500, backend="nccl", nproc={"n1": 8, "n2": 8},
                          python="/env/bin/python", exports={}, sizes=(1 << 20, 1 << 28),
                          iters=20, warmup=5, timeout=300, min_busbw=180.0)
    result = CollectiveResult(sizes=[SizeResult(1 << 20, 1 << 18, 80.0, 13.1, 24.6, 0),
                                     SizeResult(1 << 28, 1 << 26, 2900.0, 92.6, 173.6, 3)])
    causes = [p.cause for p in collective._figure_problems(result, plan)]
    assert causes == ["all_reduce of 268435456 bytes gave 3 wrong elements (#wrong)",
                      "busbw 173.60 GB/s at 268435456 bytes is under --min-busbw 180 GB/s"]
    assert plan.torchrun == "/env/bin/torchrun" and plan.world == 16
    assert plan.first_rank("n2") == 8


def test_bad_smoke_options_are_refused_before_any_node_is_touched(cli):
    done = cli("smoke", "-n", "localhost", "--sizes", "64K,12Q")
    assert done.exit_code == 2 and "'12Q' is not a size" in done.stderr
    done = cli("smoke", "-n", "localhost", "--master-port", "70000")
    assert done.exit_code == 2 and "a port is 1 to 65535" in done.stderr


def test_a_node_whose_env_lacks_torch_is_named_and_nothing_is_left(
        make_cluster, cli, torch_env, tmp_path):
    sim = make_cluster(2)
    bare = tmp_path / "bare-env"  # the same env path on node02, but an env without torch
    subprocess.run([torchenv.SYSTEM_PYTHON, "-m", "venv", "--without-pip", str(bare)],
                   check=True)
    sim.node("node02").run(f"mount --bind {bare} {torch_env}", check=True)
    done = cli(*smoke_args(sim, write_recipe(sim), "--json"), timeout=300)
    document = done.json()
    assert done.exit_code == 1 and document["failed_phase"] == "collective"
    problem = problems(document)["node02"]
    assert "torch is not installed in the env on this node" in problem["cause"]
    assert "clusterprep up --only env" in problem["next_step"]
    assert phase(document, "collective")["swept"]
    assert run_processes(sim) == {}


def start_smoke(sim, *extra: str) -> subprocess.Popen:
    """`clusterprep smoke` in the background, its progress readable line by line."""
    argv = [sys.executable, "-m", "clusterprep",
            *smoke_args(sim, write_recipe(sim), "--json", *extra)]
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=sim.root)


def wait_for_line(process: subprocess.Popen, text: str, seconds: float = 240) -> None:
    deadline = time.monotonic() + seconds
    seen = []
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        seen.append(line)
        if text in line:
            return
        assert line or process.poll() is None, "".join(seen) + process.stdout.read()
    pytest.fail(f"no {text!r} within {seconds} s:\n" + "".join(seen))


ENDLESS = ("--sizes", "1M", "--iters", "100000000")  # runs until stopped


def test_a_rank_stopped_mid_run_is_caught_by_the_timeout_and_named(make_cluster, torch_env):
    sim = make_cluster(2)
    smoke = start_smoke(sim, *ENDLESS, "--timeout", "30")
    try:
        wait_for_line(smoke, "all 2 ranks joined")
        stopped = sim.node("node02").run("pkill -STOP -f -- '-u smoke_allreduce.py'")
        assert stopped.returncode == 0, stopped.stderr
        out, _ = smoke.communicate(timeout=180)
    finally:
        smoke.kill()
    document = json.loads(out)
    assert smoke.returncode == 1 and document["failed_phase"] == "collective"
    collective = phase(document, "collective")
    assert collective["timed_out"]
    assert problems(document)["collective"]["cause"].startswith(
        "did not finish within --timeout 30 s")
    assert "was stopped" in problems(document)["node02 rank 1"]["cause"]
    assert run_processes(sim) == {}


def test_ctrl_c_during_the_collective_leaves_nothing_running(make_cluster, torch_env):
    sim = make_cluster(2)
    smoke = start_smoke(sim, *ENDLESS)
    try:
        wait_for_line(smoke, "all 2 ranks joined")
        smoke.send_signal(signal.SIGINT)
        out, _ = smoke.communicate(timeout=120)
    finally:
        smoke.kill()
    document = json.loads(out)
    assert smoke.returncode == 130 and document["interrupted"]
    collective = phase(document, "collective")
    assert collective["interrupted"] and collective["swept"]
    # The sweep found the run's processes alive (torchrun's workers among them) and ended them.
    assert {p["node"] for p in collective["leftovers"] if p["rank"] is not None} == \
        {"node01", "node02"}
    assert run_processes(sim) == {}
