"""Every command clusterprep suggests runs as printed: it carries the options that decide what
it acts on (recipe, nodes, ssh config, shared dir, staging, python, Slurm), quoted for a shell.

The first tests build suggestions from a parsed command line alone; the stories after them run
clusterprep on the simulated cluster, take the advice from what it printed, run that as a
user would paste it (shlex.split), and check it did what the advice said.
"""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest
from hubserver import Hub

from clusterprep import suggest
from clusterprep.cli import build_parser

CACHE = Path(".cache/huggingface/hub")
SERVED = "models--org--served"  # the repo the weights story stages and syncs


def invoked(*argv: str) -> None:
    """As if `clusterprep ARGV...` were running: what suggest.command then builds on."""
    parser = build_parser()
    suggest.remember(parser, parser.parse_args(list(argv)))


@pytest.fixture(autouse=True)
def no_invocation():
    yield
    suggest._invocation = suggest._Invocation()  # the next test starts as a library call


@pytest.fixture
def files(tmp_path: Path, monkeypatch) -> Path:
    """A folder holding a recipe, a nodes file and an ssh config, as the working folder."""
    for name in ("recipe.toml", "nodes.txt", "ssh_config"):
        (tmp_path / name).write_text("")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_library_call_suggests_the_bare_command():
    assert suggest.command("weights", "sync") == "clusterprep weights sync"


def test_the_issues_case_stage_keeps_the_recipe_and_the_staging_folder(files):
    invoked("weights", "sync", "-r", "recipe.toml", "-n", "nodes.txt", "-F", "ssh_config",
            "--staging", "stage")
    assert shlex.split(suggest.command("weights", "stage", "--repo", "org/m@main")) == [
        "clusterprep", "weights", "stage", "--repo", "org/m@main",
        "-r", str(files / "recipe.toml"), "--staging", str(files / "stage")]


def test_only_the_options_the_suggested_command_takes_are_given(files):
    invoked("check", "-r", "recipe.toml", "-n", "nodes.txt", "-F", "ssh_config",
            "--python", "/opt/env/bin/python", "--shared-dir", "/shared")
    recipe, hosts, config = (str(files / n) for n in ("recipe.toml", "nodes.txt", "ssh_config"))
    assert shlex.split(suggest.command("up", "--only", "env")) == [
        "clusterprep", "up", "--only", "env", "-r", recipe, "-n", hosts, "-F", config,
        "--shared-dir", "/shared"]  # up builds the env: it takes no --python
    assert shlex.split(suggest.command("nodes")) == ["clusterprep", "nodes", "-n", hosts,
                                                     "-F", config]
    assert shlex.split(suggest.command("smoke"))[-2:] == ["--python", "/opt/env/bin/python"]
    assert suggest.command("recipe", "show") == "clusterprep recipe show"


def test_a_path_for_the_nodes_is_given_as_typed_names_and_hostlists_too(files):
    invoked("check", "-r", "demo", "-n", "node-[001-002]", "--python", "env/bin/python")
    # a built-in recipe and a hostlist are not files here; --python is a path on the nodes
    assert shlex.split(suggest.command("check")) == [
        "clusterprep", "check", "-r", "demo", "-n", "node-[001-002]", "--python",
        "env/bin/python"]


def test_files_of_the_head_are_made_absolute_and_every_word_quoted(tmp_path, monkeypatch):
    folder = tmp_path / "my cluster's files"
    folder.mkdir()
    (folder / "nodes list").write_text("")
    monkeypatch.chdir(folder)
    invoked("weights", "verify", "-n", "nodes list", "-F", "~/.ssh/config",
            "--staging", "../stage")
    printed = suggest.command("weights", "sync")
    assert shlex.split(printed) == [
        "clusterprep", "weights", "sync", "-n", str(folder / "nodes list"),
        "-F", str(Path.home() / ".ssh/config"), "--staging", str(tmp_path / "stage")]
    assert "'" in printed  # the quote in the folder's name is quoted, not left to the shell


def test_an_option_the_suggestion_gives_itself_is_not_given_twice(files):
    invoked("up", "-r", "recipe.toml", "-n", "nodes.txt")
    for words in (("up", "-r", "/other.toml"), ("up", "--recipe", "/other.toml"),
                  ("up", "--recipe=/other.toml")):
        argv = shlex.split(suggest.command(*words))
        assert [w for w in argv if w.startswith(("-r", "--recipe"))] == [words[1]]
        assert argv[-2:] == ["-n", str(files / "nodes.txt")]


def test_slurm_is_kept_as_a_switch_and_the_allocation_as_a_value():
    invoked("check", "--slurm", "--slurm-job", "4242", "-n", "node-[01-04]")
    assert suggest.command("weights", "sync") == (
        "clusterprep weights sync -n 'node-[01-04]' --slurm --slurm-job 4242")
    assert suggest.command("weights", "stage") == "clusterprep weights stage"  # on the head


# -- stories: the advice clusterprep printed, run as printed ----------------------------------

def advice(text: str, start: str) -> list[str]:
    """The command in backquotes that begins with `start`, split as a shell would."""
    found = re.search(r"`(" + re.escape(start) + r"[^`]*)`", " ".join(text.split()))
    assert found, f"no `{start}...` in: {text}"
    return shlex.split(found.group(1))


def run_as_printed(cli, argv: list[str], **kwargs):
    assert argv[0] == "clusterprep"
    return cli(*argv[1:], **kwargs)


@pytest.fixture
def nodes(cluster4):
    """The session's 4 nodes, without the story's repo in their caches after."""
    yield cluster4
    for node in cluster4.nodes:
        shutil.rmtree(node.home / CACHE / SERVED, ignore_errors=True)


def test_weights_stage_advice_keeps_the_recipe_and_the_staging_folder(cli, nodes, tmp_path):
    """The issue's own case: sync with nothing staged says to stage; staged as printed, in
    the --staging folder with the recipe's repo (not the built-in recipe's), it syncs."""
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(f'[shared]\ndir = "{nodes.shared}"\n[env]\nname = "e"\npython = "3"\n'
                      '[weights]\nrepos = [{ id = "org/served" }]\n')
    staging = tmp_path / "staging"
    options = ["-r", str(recipe), "-n", str(nodes.nodes_file), "-F", str(nodes.ssh_config),
               "--staging", str(staging)]

    refused = cli("weights", "sync", *options)
    assert refused.exit_code == 2
    stage = advice(refused.stderr, "clusterprep weights stage")
    assert stage == ["clusterprep", "weights", "stage", "--repo", "org/served@main",
                     "-r", str(recipe), "--staging", str(staging)]
    with Hub({"config.json": b"{}\n", "model.safetensors": b"w" * 4096}) as hub:
        staged = run_as_printed(cli, stage, env={"HF_ENDPOINT": hub.url})
    assert staged.exit_code == 0, staged.stderr
    assert sorted(hub.downloads) == [("org/served", "config.json"),
                                     ("org/served", "model.safetensors")]
    synced = cli("weights", "sync", *options)
    assert synced.exit_code == 0, synced.stdout + synced.stderr
    for node in nodes.nodes:
        assert len(list((node.home / CACHE).glob(f"{SERVED}/snapshots/*/*"))) == 2

    # verify names what mends a damaged cache; run as printed, it mends it
    for blob in (nodes.node("node02").home / CACHE).glob(f"{SERVED}/blobs/*"):
        blob.write_bytes(b"x")
    damaged = cli("weights", "verify", *options)
    assert damaged.exit_code == 1
    assert "1 of 4 nodes is not ready: node02" in damaged.stderr
    sync = advice(damaged.stderr, "clusterprep weights sync")
    assert sync == ["clusterprep", "weights", "sync", *options]
    assert run_as_printed(cli, sync).exit_code == 0
    assert cli("weights", "verify", *options, "--full").exit_code == 0


def test_smoke_names_the_command_that_shows_why_a_node_is_unreachable(
        cli, make_cluster, tmp_path):
    sim = make_cluster(2)
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(f'[shared]\ndir = "{sim.shared}"\n[env]\nname = "e"\npython = "3"\n')
    sim.node("node02").stop()
    smoke = cli("smoke", "-r", str(recipe), "-n", str(sim.nodes_file), "-F",
                str(sim.ssh_config), "--connect-timeout", "2", "--until", "names")
    assert smoke.exit_code == 1
    nodes_cmd = advice(smoke.stdout, "clusterprep nodes")
    assert nodes_cmd == ["clusterprep", "nodes", "-n", str(sim.nodes_file),
                         "-F", str(sim.ssh_config)]
    shown = run_as_printed(cli, [*nodes_cmd, "--connect-timeout", "2", "--json"])
    reports = {r["node"]: r for r in shown.json()["nodes"]}
    assert reports["node01"]["reachable"] and not reports["node02"]["reachable"]
    assert reports["node02"]["error"]["kind"] == "refused"


def test_up_says_how_to_resume_with_the_steps_it_was_asked_for(cli, make_cluster, tmp_path):
    sim = make_cluster(2)
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(f'[shared]\ndir = "{sim.shared}"\n[env]\nname = "e"\npython = "3"\n')
    options = ["-r", str(recipe), "-n", str(sim.nodes_file), "-F", str(sim.ssh_config)]
    sim.node("node02").stop()
    up = cli("up", "--only", "shell", *options, "--connect-timeout", "2")
    assert up.exit_code == 1
    again = advice(up.stdout, "clusterprep up")
    assert again == ["clusterprep", "up", "--only", "shell", *options]

    bashrc = sim.node("node02").home / ".bashrc"
    assert not bashrc.exists() or "Managed by clusterprep" not in bashrc.read_text()
    sim.node("node02").start()
    assert run_as_printed(cli, again).exit_code == 0
    assert "Managed by clusterprep" in bashrc.read_text()


def test_recipe_init_names_the_file_it_wrote_for_up_from_any_folder(cli, tmp_path):
    (tmp_path / "my recipes").mkdir()
    done = cli("recipe", "init", "my recipes/train.toml")
    assert done.exit_code == 0
    up = advice(done.stderr, "clusterprep up")
    assert up == ["clusterprep", "up", "-r", str(tmp_path / "my recipes" / "train.toml")]
    # `up` itself would set up nodes; the recipe it names loads as the file just written
    shown = cli("recipe", "show", up[-1], cwd=tmp_path / "my recipes")
    assert shown.exit_code == 0 and shown.stdout == Path(up[-1]).read_text()
