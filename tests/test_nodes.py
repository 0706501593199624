"""`clusterprep nodes`: every node, reachable or not; an unreachable node is named with its cause."""

from __future__ import annotations

import signal
import socket
import subprocess
import time

import faultkit
from polls import until


def cluster_args(sim, config=None) -> list[str]:
    return ["-n", str(sim.nodes_file), "-F", str(config or sim.ssh_config)]


def test_every_node_is_listed_with_its_facts(cli, cluster4):
    result = cli("nodes", *cluster_args(cluster4), "--json")
    assert result.exit_code == 0, result.stderr
    document = result.json()
    assert document["ok"] is True
    rows = document["nodes"]
    assert [row["node"] for row in rows] == ["node01", "node02", "node03", "node04"]
    assert [row["head"] for row in rows] == [True, False, False, False]
    for row in rows:
        assert row["reachable"] and row["error"] is None
        assert row["hostname"] == row["node"]  # each node reports its own name
        assert row["cpus"] >= 1 and row["gpus"] == 0 and row["os"]
        assert 0 < row["rtt_ms"] < 5000
    # The simulated head is not this machine: users are told to run from the head.
    assert any("head node node01" in warning for warning in document["warnings"])

    table = cli("nodes", *cluster_args(cluster4))
    assert table.exit_code == 0
    assert "node04" in table.stdout and "Linux" in table.stdout


def test_unreachable_nodes_are_named_with_a_classified_cause(cli, make_cluster, tmp_path):
    sim = make_cluster(4)
    silent = socket.socket()  # accepts TCP but never speaks SSH: a hung node
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    config = tmp_path / "ssh_config"
    config.write_text(  # Include first: after a Host line it would apply to that host only
        f"Include {sim.ssh_config}\n"
        f"Host hung\n  HostName 127.0.0.1\n  Port {silent.getsockname()[1]}\n"
        f"Host ghost\n  HostName no-such-node.invalid\n"
    )
    nodes = tmp_path / "nodes.txt"
    nodes.write_text("node01\nnode02\nnode03\nnode04\nhung\nghost\n")
    cli("run", "-n", str(nodes), "-F", str(config), "--connect-timeout", "1", "true")  # learn keys
    sim.node("node02").stop()
    sim.node("node03").break_auth()
    sim.node("node04").rotate_host_key()
    try:
        started = time.monotonic()
        result = cli("nodes", "-n", str(nodes), "-F", str(config), "--connect-timeout", "2",
                     "--json")
        elapsed = time.monotonic() - started
    finally:
        silent.close()
    assert result.exit_code == 1
    rows = {row["node"]: row for row in result.json()["nodes"]}
    assert rows["node01"]["reachable"] and rows["node01"]["error"] is None
    kinds = {name: (row["error"] or {}).get("kind") for name, row in rows.items()}
    assert kinds == {"node01": None, "node02": "refused", "node03": "auth",
                     "node04": "host-key", "hung": "timeout", "ghost": "dns"}
    for name in ("node02", "node03", "node04", "hung", "ghost"):
        assert not rows[name]["reachable"] and rows[name]["error"]["message"]
    assert "ssh-keygen -R" in rows["node04"]["error"]["message"]
    assert elapsed < 15  # one connect timeout for the hung node, not one per step

    table = cli("nodes", "-n", str(nodes), "-F", str(config), "--connect-timeout", "1")
    assert table.exit_code == 1
    assert "node02: refused: connection refused by 127." in table.stdout


def test_host_key_policies(cli, make_cluster):
    sim = make_cluster(2)
    # accept-new (what the cluster's config says): unknown keys are learned...
    assert cli("run", *cluster_args(sim), "true").exit_code == 0
    learned = sim.known_hosts.read_text()
    assert {tuple(line.split()[:3]) for line in learned.splitlines()} == {
        tuple(node.known_hosts_line.split()[:3]) for node in sim.nodes}
    # ...and learned once: a second run adds nothing.
    assert cli("run", *cluster_args(sim), "true").exit_code == 0
    assert sim.known_hosts.read_text() == learned

    sim.forget_host_keys()
    strict = cli("run", *cluster_args(sim), "--host-keys", "strict", "--json", "true")
    assert strict.exit_code == 1
    assert {n["error"]["kind"] for n in strict.json()["nodes"]} == {"host-key"}
    assert sim.known_hosts.read_text() == ""

    sim.node("node02").rotate_host_key()
    assert cli("run", *cluster_args(sim), "--host-keys", "off", "true").exit_code == 0


def test_proxyjump_shares_one_connection_to_the_bastion(cli, make_cluster, tmp_path):
    sim = make_cluster(4)
    bastion = sim.node("node01")
    config = tmp_path / "ssh_config"
    blocks = "".join(
        f"Host hidden-{n.name}\n  HostName {n.address}\n  Port {n.port}\n  ProxyJump node01\n"
        for n in sim.nodes[1:]
    )
    common = (f"Host hidden-*\n  User root\n  IdentityFile {sim.client_key}\n"
              f"  UserKnownHostsFile {sim.known_hosts}\n")
    config.write_text(f"Include {sim.ssh_config}\n" + blocks + common)
    nodes = tmp_path / "nodes.txt"
    nodes.write_text("".join(f"hidden-{n.name}\n" for n in sim.nodes[1:]))
    base = ["-n", str(nodes), "-F", str(config)]

    process = cli.start("run", *base, "--json", "sleep 3; hostname")
    until(lambda: all(faultkit.session_sshds(n) for n in sim.nodes[1:]) or process.poll(),
          "every hidden node is connected")
    assert process.poll() is None
    to_bastion = subprocess.run(
        ["ss", "-Htn", "state", "established", f"( sport = :{bastion.port} )",
         "src", bastion.address], capture_output=True, text=True).stdout
    result = cli.finish(process, timeout=60)
    assert result.exit_code == 0, result.stderr
    assert [n["stdout"] for n in result.json()["nodes"]] == ["node02\n", "node03\n", "node04\n"]
    assert len(to_bastion.splitlines()) == 1, to_bastion


def test_ctrl_c_keeps_the_output_of_nodes_that_finished(make_cluster, cli):
    sim = make_cluster(3)
    process = cli.start("run", *cluster_args(sim), "--json",
                        'echo "hello from $(hostname)"; [ "$(hostname)" = node01 ] || sleep 60')
    until(lambda: all("sleep 60" in sim.node(name).run("ps -eo args").stdout
                      for name in ("node02", "node03")), "node02 and node03 run the command")
    until(lambda: faultkit.session_sshds(sim.node("node01"))
          and "hello from" not in sim.node("node01").run("ps -eo args").stdout,
          "node01 ran the command and is done")
    process.send_signal(signal.SIGINT)
    interrupted = cli.finish(process, timeout=30)
    assert interrupted.exit_code == 130, interrupted.stderr
    document = interrupted.json()
    assert document["interrupted"] is True and document["ok"] is False
    rows = {n["node"]: n for n in document["nodes"]}
    assert rows["node01"]["stdout"] == "hello from node01\n" and rows["node01"]["exit_code"] == 0
    for name in ("node02", "node03"):
        assert rows[name]["error"]["kind"] == "interrupted"
        assert rows[name]["stdout"] == f"hello from {name}\n"  # partial output is kept too
        assert "sleep 60" not in sim.node(name).run("ps -eo args").stdout


def test_proxycommand_from_the_ssh_config_is_honoured(cli, make_cluster, tmp_path):
    sim = make_cluster(2)
    config = tmp_path / "ssh_config"
    config.write_text(
        f"Include {sim.ssh_config}\n"
        f"Host via-command\n  HostName {sim.node('node02').address}\n  Port 2200\n"
        f"  User root\n  IdentityFile {sim.client_key}\n  UserKnownHostsFile {sim.known_hosts}\n"
        f"  ProxyCommand ssh -F {sim.ssh_config} -W %h:%p node01\n"
    )
    result = cli("run", "-n", "via-command", "-F", str(config), "--json", "hostname")
    assert result.exit_code == 0, result.stdout + result.stderr
    assert result.json()["nodes"][0]["stdout"] == "node02\n"


def test_a_broken_ssh_config_is_reported_with_its_file_and_line(cli, tmp_path):
    config = tmp_path / "ssh_config"
    config.write_text("Host *\n  NoSuchOption yes\n")
    result = cli("run", "-n", "some-node", "-F", str(config), "true")
    assert result.exit_code == 2
    assert f"{config}: line 2: Bad configuration option" in result.stderr


def test_gpus_are_counted_from_nvidia_smi(cli, make_cluster):
    import gpukit

    sim = make_cluster(2)
    gpukit.fake_nvidia_smi(sim.node("node01").home, 8)
    result = cli("nodes", "-n", str(sim.nodes_file), "-F", str(sim.ssh_config), "--json")
    assert result.exit_code == 0, result.stdout
    rows = {row["node"]: row for row in result.json()["nodes"]}
    assert (rows["node01"]["gpus"], rows["node01"]["gpu_model"]) == (8, "NVIDIA H100 80GB HBM3")
    assert (rows["node02"]["gpus"], rows["node02"]["gpu_model"]) == (0, None)
    table = cli("nodes", "-n", str(sim.nodes_file), "-F", str(sim.ssh_config))
    assert "8 x NVIDIA H100 80GB HBM3" in table.stdout
