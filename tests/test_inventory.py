"""The nodes file, as the tutorial writes it and as users get it wrong: every error names the
file and the line."""

from __future__ import annotations

from pathlib import Path

import pytest

from clusterprep.errors import InventoryError
from clusterprep.inventory import load_inventory, parse_hostlist, parse_nodes_file


def nodes_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "nodes.txt"
    path.write_text(text)
    return path


def test_the_tutorials_file_keeps_its_order_and_the_first_line_is_the_head(tmp_path):
    inventory = parse_nodes_file(nodes_file(tmp_path, "node-003\nnode-001\nnode-002\n"))
    assert inventory.names == ["node-003", "node-001", "node-002"]
    assert inventory.head.name == "node-003" and inventory.head.head
    assert not any(node.head for node in inventory.nodes[1:])


def test_comments_blank_lines_users_and_ranges(tmp_path):
    text = """
# the launch node first
gpu-head            # trailing comment
alice@gpu-[01-03]

bob@10.0.0.7
"""
    inventory = parse_nodes_file(nodes_file(tmp_path, text))
    assert inventory.names == [
        "gpu-head", "alice@gpu-01", "alice@gpu-02", "alice@gpu-03", "bob@10.0.0.7"]
    assert inventory.nodes[1].user == "alice" and inventory.nodes[1].host == "gpu-01"
    assert inventory.nodes[1].origin.endswith("nodes.txt:4")


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("node1\nnode2\nnode1\n", 3, ["duplicate", "node1", ":1"]),
        ("node[1-3]\nnode2\n", 2, ["duplicate", "node2"]),
        ("node1\nnode$(reboot)\n", 2, ["not a valid host name"]),
        ("node1\nnode2; rm -rf ~\n", 2, ["one host per line"]),
        ("node1\n'node2'\n", 2, ["not a valid host name"]),
        ("node1\nnode2 node3\n", 2, ["one host per line"]),
        ("node1\nnode[1-\n", 2, ["bad hostlist"]),
        ("a b@node1\n", 1, ["one host per line"]),
        ("ro;ot@node1\n", 1, ["not a valid user name"]),
    ],
)
def test_bad_lines_are_named_by_file_and_line(tmp_path, text, line, words):
    path = nodes_file(tmp_path, text)
    with pytest.raises(InventoryError) as caught:
        parse_nodes_file(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:{line}: "), message
    for word in words:
        assert word in message


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n   # another\n"])
def test_an_empty_file_is_an_error(tmp_path, text):
    path = nodes_file(tmp_path, text)
    with pytest.raises(InventoryError, match="no nodes"):
        parse_nodes_file(path)


def test_a_binary_file_is_an_error(tmp_path):
    path = tmp_path / "nodes.txt"
    path.write_bytes(b"\xff\xfe\x00node")
    with pytest.raises(InventoryError, match="not a text file"):
        parse_nodes_file(path)


def test_a_hostlist_expression_expands_in_order():
    assert parse_hostlist("node-[001-003],gpu7").names == [
        "node-001", "node-002", "node-003", "gpu7"]


def test_defaults_env_then_cwd_then_home_then_local(tmp_path, monkeypatch):
    home = tmp_path / "home"
    work = tmp_path / "work"
    home.mkdir()
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("CLUSTERPREP_NODES", raising=False)

    assert load_inventory(cwd=work).names == ["localhost"]
    (home / "nodes.txt").write_text("from-home\n")
    assert load_inventory(cwd=work).names == ["from-home"]
    (work / "nodes.txt").write_text("from-cwd\n")
    assert load_inventory(cwd=work).names == ["from-cwd"]
    monkeypatch.setenv("CLUSTERPREP_NODES", "env-[1-2]")
    assert load_inventory(cwd=work).names == ["env-1", "env-2"]


def test_a_missing_nodes_file_is_not_taken_for_a_host_name(tmp_path):
    with pytest.raises(InventoryError, match="no such nodes file"):
        load_inventory("nodes.txt", cwd=tmp_path)
    with pytest.raises(InventoryError, match="no such nodes file"):
        load_inventory("conf/nodes", cwd=tmp_path)


def test_a_warning_when_the_head_is_not_this_machine(tmp_path):
    assert parse_hostlist("localhost").warnings == []
    warnings = parse_hostlist("far-away-node,localhost").warnings
    assert len(warnings) == 1 and "far-away-node" in warnings[0]
