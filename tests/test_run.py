"""`clusterprep run`: one command on every node, quoted once and correctly, outputs grouped."""

from __future__ import annotations

import base64
from pathlib import Path


def cluster_args(sim) -> list[str]:
    return ["-n", str(sim.nodes_file), "-F", str(sim.ssh_config)]


def groups(stdout: str) -> dict[str, str]:
    """Grouped output -> {header: body}; a header sits between two rules of dashes."""
    lines = stdout.splitlines()
    found: dict[str, str] = {}
    header, i = None, 0
    while i < len(lines):
        if _is_rule(lines[i]) and i + 2 < len(lines) and _is_rule(lines[i + 2]):
            header = lines[i + 1]
            found[header] = ""
            i += 3
            continue
        assert header is not None, f"output before the first header: {lines[i]!r}"
        found[header] += lines[i] + "\n"
        i += 1
    return found


def _is_rule(line: str) -> bool:
    return len(line) >= 16 and set(line) == {"-"}


def test_redirections_and_tilde_land_on_every_node_never_on_the_head(cli, cluster4, tmp_path):
    # The tutorial's `parallel -a nodes.txt ssh {} 'cmd >> ~/.bashrc'` appends on the head.
    head_home = tmp_path / "home"
    result = cli("run", *cluster_args(cluster4),
                 'echo "$HOME $(hostname)" >> ~/marker && cat ~/marker')
    try:
        assert result.exit_code == 0, result.stderr
        for node in cluster4.nodes:
            assert (node.home / "marker").read_text() == f"/root {node.name}\n"
        assert not (head_home / "marker").exists()
        assert not Path("/root/marker").exists()
    finally:
        for node in cluster4.nodes:
            (node.home / "marker").unlink(missing_ok=True)


def test_identical_outputs_are_grouped_under_a_folded_node_set(cli, cluster4):
    result = cli("run", *cluster_args(cluster4),
                 'if [ "$(hostname)" = node03 ]; then echo odd; else echo same; fi')
    assert result.exit_code == 0, result.stderr
    assert groups(result.stdout) == {"node[01-02,04] (3)": "same\n", "node03 (1)": "odd\n"}


def test_failures_are_summarised_with_exit_codes_and_the_status_is_1(cli, cluster4):
    result = cli("run", *cluster_args(cluster4), 'case $(hostname) in node0[24]) exit 3;; esac')
    assert result.exit_code == 1
    assert "2 of 4 nodes failed" in result.stderr
    assert "node[02,04]: exit code 3" in result.stderr


def test_json_gives_every_node_its_exit_code_output_and_time(cli, cluster4):
    result = cli("run", *cluster_args(cluster4), "--json", "hostname; echo oops >&2; exit 0")
    document = result.json()
    assert result.exit_code == 0 and document["ok"] is True
    assert [n["node"] for n in document["nodes"]] == ["node01", "node02", "node03", "node04"]
    for entry in document["nodes"]:
        assert entry["stdout"] == entry["node"] + "\n"
        assert entry["stderr"] == "oops\n"
        assert entry["exit_code"] == 0 and entry["error"] is None and entry["seconds"] > 0


def test_a_command_that_outlives_the_timeout_is_killed_and_named(cli, cluster4):
    result = cli("run", *cluster_args(cluster4), "--timeout", "1", "--json",
                 'echo started; [ "$(hostname)" = node02 ] && sleep 30; echo done')
    document = result.json()
    assert result.exit_code == 1
    by_node = {entry["node"]: entry for entry in document["nodes"]}
    assert by_node["node02"]["error"]["kind"] == "command-timeout"
    assert by_node["node02"]["stdout"] == "started\n"  # what it printed before is kept
    assert by_node["node01"]["stdout"] == "started\ndone\n"
    assert max(entry["seconds"] for entry in document["nodes"]) < 10
    # The killed command does not linger on the node.
    assert "sleep 30" not in cluster4.node("node02").run("ps -eo args").stdout


def test_a_megabyte_per_node_and_bytes_that_are_not_utf8(cli, cluster4):
    result = cli("run", *cluster_args(cluster4), "--json",
                 "head -c 1048576 /dev/zero | tr '\\0' x; printf '\\377\\376'")
    document = result.json()
    assert result.exit_code == 0
    for entry in document["nodes"]:
        raw = base64.b64decode(entry["stdout_base64"])
        assert raw == b"x" * 1048576 + b"\xff\xfe"

    grouped = cli("run", *cluster_args(cluster4), "printf 'caf\\351\\n'")
    assert grouped.exit_code == 0
    assert groups(grouped.stdout) == {"node[01-04] (4)": "caf\ufffd\n"}


def test_stream_prefixes_each_line_with_its_node(cli, cluster4):
    result = cli("run", *cluster_args(cluster4), "--stream", "echo one; echo two; printf tail")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    for node in cluster4.nodes:
        mine = [line for line in lines if line.startswith(node.name + ": ")]
        assert mine == [f"{node.name}: one", f"{node.name}: two", f"{node.name}: tail"]


def test_the_local_machine_is_a_one_node_cluster_without_any_ssh(cli, tmp_path):
    # No nodes file anywhere, no ssh on PATH: the tool still works on a laptop.
    empty_path = tmp_path / "bin"
    empty_path.mkdir()
    for tool in ("bash", "sh", "hostname", "python3", "cat"):
        target = Path("/bin") / tool if Path("/bin", tool).exists() else Path("/usr/bin", tool)
        (empty_path / tool).symlink_to(target)
    env = {"PATH": str(empty_path)}
    result = cli("run", "--json", "echo $((6 * 7)) > ~/answer; cat ~/answer", env=env)
    assert result.exit_code == 0, result.stderr
    assert result.json()["nodes"] == [
        {**result.json()["nodes"][0], "node": "localhost", "stdout": "42\n", "exit_code": 0}]
    nodes = cli("nodes", "--json", env=env)
    assert nodes.exit_code == 0, nodes.stderr
    assert nodes.json()["nodes"][0]["reachable"] is True
    assert nodes.json()["nodes"][0]["head"] is True


def test_an_empty_command_and_bad_options_are_usage_errors(cli):
    assert cli("run", " ").exit_code == 2
    result = cli("run", "--fanout", "0", "true")
    assert result.exit_code == 2 and "--fanout" in result.stderr
    both = cli("run", "--stream", "--json", "true")
    assert both.exit_code == 2 and "--stream and --json cannot be used together" in both.stderr
