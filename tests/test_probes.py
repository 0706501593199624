"""Probes run on nodes whatever those nodes' Python environment variables say."""

from __future__ import annotations


def test_a_broken_pythonpath_on_a_node_does_not_break_clusterprep(cli, make_cluster):
    sim = make_cluster(2)
    node02 = sim.node("node02")
    (node02.home / "broken").mkdir()
    (node02.home / "broken" / "json.py").write_text("raise ImportError('shadowed json')\n")
    bashrc = node02.home / ".bashrc"
    bashrc.write_text("export PYTHONPATH=/root/broken PYTHONHOME=/nowhere\n" + bashrc.read_text())
    result = cli("nodes", "-n", str(sim.nodes_file), "-F", str(sim.ssh_config), "--json")
    assert result.exit_code == 0, result.stdout
    assert [row["hostname"] for row in result.json()["nodes"]] == ["node01", "node02"]
