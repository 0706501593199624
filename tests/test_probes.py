"""Probes run on nodes whatever those nodes' Python environment variables say."""

from __future__ import annotations

from importlib import resources

from clusterprep import probes


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


def test_every_probe_travels_as_one_script_with_its_parts_inlined():
    # A probe is sent alone over stdin: a part it shares with others must be in its text.
    folder = resources.files("clusterprep.probes")
    names = [f.name[:-3] for f in folder.iterdir()
             if f.name.endswith(".py") and not f.name.startswith("_")]
    assert "wandb_check" in names and "netrc_login" in names
    for name in names:
        source = probes.load(name)
        compile(source, name, "exec")
        assert "inlined by probes.load" not in source, name
    assert "def scrub(" in probes.load("wandb_check")
