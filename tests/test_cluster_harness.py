"""The simulated cluster itself, checked with the plain OpenSSH client only.

If these fail, every other test that uses the cluster fixtures is suspect.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

import cluster


def ssh(sim: cluster.SimCluster, name: str, command: str, *options: str):
    """Run a command on a node with plain `ssh -F ROOT/ssh_config`."""
    return subprocess.run(
        ["ssh", "-F", str(sim.ssh_config), *options, name, command],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_each_node_has_its_own_hostname_and_home(cluster4):
    for node in cluster4.nodes:
        (node.home / "whoami.txt").write_text(f"home of {node.name}\n")
    try:
        for node in cluster4.nodes:
            result = ssh(cluster4, node.name, "hostname; echo $HOME; cat ~/whoami.txt")
            assert result.returncode == 0, result.stderr
            assert result.stdout.splitlines() == [node.name, "/root", f"home of {node.name}"]
    finally:
        for node in cluster4.nodes:
            (node.home / "whoami.txt").unlink()


def test_a_write_over_ssh_lands_in_that_nodes_home_only(cluster4):
    node01, node02 = cluster4.node("node01"), cluster4.node("node02")
    result = ssh(cluster4, "node02", "echo written > ~/written.txt")
    try:
        assert result.returncode == 0, result.stderr
        assert (node02.home / "written.txt").read_text() == "written\n"
        assert not (node01.home / "written.txt").exists()
    finally:
        (node02.home / "written.txt").unlink(missing_ok=True)


def test_nodes_have_a_debian_bashrc_that_stops_non_interactive_shells(cluster4):
    node = cluster4.node("node03")
    bashrc = node.home / ".bashrc"
    original = bashrc.read_text()
    assert "*) return;;" in original
    bashrc.write_text(original + "echo REACHED-END-OF-BASHRC\n")
    try:
        result = ssh(cluster4, node.name, "echo command-ran")
        assert result.returncode == 0, result.stderr
        assert result.stdout == "command-ran\n"  # the appended line never ran
    finally:
        bashrc.write_text(original)


def test_the_shared_folder_is_the_same_folder_on_every_node(cluster4):
    shared_file = cluster4.shared / "from-node01.txt"
    result = ssh(cluster4, "node01", f"hostname > {shared_file}")
    try:
        assert result.returncode == 0, result.stderr
        for node in cluster4.nodes:
            seen = ssh(cluster4, node.name, f"cat {shared_file}")
            assert seen.stdout == "node01\n", (node.name, seen.stderr)
        assert shared_file.read_text() == "node01\n"
    finally:
        shared_file.unlink(missing_ok=True)


def test_each_node_has_its_own_processes(cluster4):
    result = ssh(cluster4, "node04", "cat /proc/1/comm; ls /proc | grep -c '^[0-9]'")
    assert result.returncode == 0, result.stderr
    comm, count = result.stdout.split()
    assert comm == "sshd"
    assert int(count) < 10  # sshd, the session, the shell and its commands; not the host's


def test_node_run_works_inside_the_node_without_ssh(cluster4):
    node = cluster4.node("node02")
    result = node.run("hostname; echo $HOME; pwd; echo inside > ~/via-run.txt")
    try:
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines() == ["node02", "/root", "/root"]
        assert (node.home / "via-run.txt").read_text() == "inside\n"
    finally:
        (node.home / "via-run.txt").unlink(missing_ok=True)


def test_stopping_a_node_ends_its_sessions_and_start_brings_it_back(make_cluster):
    sim = make_cluster(2)
    node02 = sim.node("node02")
    session = subprocess.Popen(
        ["ssh", "-F", str(sim.ssh_config), "node02", "echo started; exec sleep 60"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert session.stdout.readline() == "started\n"
        node02.stop()
        assert session.wait(timeout=5) == 255  # the session died with the node
    finally:
        session.kill()
        session.communicate()
    assert not node02.running
    node02.stop()  # idempotent

    down = ssh(sim, "node02", "true")
    assert down.returncode == 255
    assert "Connection refused" in down.stderr
    assert ssh(sim, "node01", "hostname").stdout == "node01\n"

    node02.start()
    assert node02.running
    # Same host key as before: the key learnt at the first contact still matches.
    back = ssh(sim, "node02", "hostname")
    assert (back.returncode, back.stdout) == (0, "node02\n"), back.stderr


def test_break_auth_refuses_the_client_key_until_restored(cluster4):
    node = cluster4.node("node02")
    node.break_auth()
    try:
        refused = ssh(cluster4, "node02", "true")
        assert refused.returncode == 255
        assert "Permission denied" in refused.stderr
        assert ssh(cluster4, "node01", "true").returncode == 0
    finally:
        node.restore_auth()
    assert ssh(cluster4, "node02", "true").returncode == 0


def test_learnt_host_keys_allow_strict_checking_and_catch_a_new_key(make_cluster):
    sim = make_cluster(2)
    strict = ("-o", "StrictHostKeyChecking=yes")
    assert sim.known_hosts.read_text() == ""
    unknown = ssh(sim, "node01", "true", *strict)
    assert unknown.returncode == 255
    assert "Host key verification failed" in unknown.stderr

    sim.learn_host_keys()
    lines = sim.known_hosts.read_text().splitlines()
    assert lines[0].startswith(f"[{sim.nodes[0].address}]:2200 ssh-ed25519 AAAA")
    assert len(lines) == 2
    assert ssh(sim, "node01", "true", *strict).returncode == 0

    sim.node("node02").rotate_host_key()
    changed = ssh(sim, "node02", "true", *strict)
    assert changed.returncode == 255
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in changed.stderr


def test_two_clusters_at_once_use_distinct_addresses(cluster4, make_cluster):
    other = make_cluster(2)
    assert other.block != cluster4.block
    assert not {n.address for n in other.nodes} & {n.address for n in cluster4.nodes}
    for sim in (cluster4, other):
        result = ssh(sim, "node01", "cat /proc/sys/kernel/hostname; ls ~")
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines()[0] == "node01"
    assert other.node("node01").home != cluster4.node("node01").home


def test_the_cluster_describes_itself_in_plain_files(cluster4):
    names = [node.name for node in cluster4.nodes]
    assert names == ["node01", "node02", "node03", "node04"]
    assert cluster4.nodes_file.read_text().splitlines() == names
    config = cluster4.ssh_config.read_text()
    assert config.count("\nHost ") + config.startswith("Host ") == 4
    assert f"HostName 127.{cluster4.block}.0.4\n" in config
    assert cluster4.client_key.exists()
    assert cluster.node_names(100)[:1] + cluster.node_names(100)[-1:] == ["node001", "node100"]
    assert cluster._node_address(3, 0) == "127.3.0.1"
    assert cluster._node_address(3, 250) == "127.3.1.1"


def test_a_node_whose_sshd_fails_is_named_with_its_log(tmp_path: Path):
    reason = cluster.check_environment()
    if reason:
        pytest.skip(reason)
    sim = cluster.SimCluster(tmp_path / "broken", 2)
    node02 = sim.node("node02")
    node02.sshd_config.write_text(node02.sshd_config.read_text() + "NoSuchOption yes\n")
    started = time.monotonic()
    with pytest.raises(cluster.SimClusterError, match=r"node02[\s\S]*NoSuchOption"):
        sim.start()
    assert time.monotonic() - started < 5
    assert sim.running == []
