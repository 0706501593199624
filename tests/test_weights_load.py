"""`weights verify --load`: every node loads every model offline, as the training code does.

The loaders are real: transformers and torch (CPU) in a venv the nodes run (tests/loadenv.py),
loading a tiny T5 encoder made here from a small T5Config with save_pretrained, laid out as a
hub cache, put into staging by `cp -r` as the tutorial does, then adopted and synced to the
simulated cluster's sshd nodes. Only the Hub is out of reach, and offline nothing asks it.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

import hubcache
import loadenv
from clusterprep.recipe import load_recipe, read_text
from clusterprep.weights.spec import WeightsSpecError
from test_weights import nodes  # noqa: F401 (the fixture `cluster` builds on)
from test_weights_stage import CACHE, cluster  # noqa: F401

T5 = "org/tiny-t5"
COMMIT = "7" * 40
MAKE_T5 = """
import sys, torch
from transformers import T5Config, T5EncoderModel
torch.manual_seed(0)
config = T5Config(vocab_size=32, d_model=8, d_kv=4, d_ff=16, num_layers=1, num_heads=2)
T5EncoderModel(config).save_pretrained(sys.argv[1])
"""
LOAD_T5 = f"from transformers import T5EncoderModel; T5EncoderModel.from_pretrained('{T5}')"


@pytest.fixture(scope="module")
def loaders() -> Path:
    path, why = loadenv.ensure()
    if path is None:
        pytest.skip(why)
    return path


WHERE_IT_RUNS = '''
[[weights.load]]
name = "where it runs"
command = """test "$PWD" = {shared}/code && \\
    test "$HF_HUB_OFFLINE $TRANSFORMERS_OFFLINE $HF_DATASETS_OFFLINE" = '1 1 1'"""
'''
T5_AND_GPU = f"""
[[weights.load]]
name = "t5 encoder"
command = "python -c \\"{LOAD_T5}\\""
timeout = 120
[[weights.load]]
name = "on a GPU"
command = "python -c 'import torch; assert torch.cuda.is_available()'"
gpu = true
"""


def write_recipe(path: Path, shared: Path, env: Path, loads: str = WHERE_IT_RUNS + T5_AND_GPU
                 ) -> Path:
    text = f"""
[shared]
dir = "{shared}"
[env]
backend = "venv"
name = "loaders"
python = "3.11"
prefix = "{env}"
[repo]
url = "https://example.invalid/code.git"
rev = "0123456789abcdef"
path = "{{shared}}/code"
[weights]
repos = [{{ id = "{T5}" }}]
"""
    text += loads.replace("{shared}", str(shared))
    path.write_text(text)
    return path


def staged_by_cp_r(loaders: Path, shared: Path, tmp_path: Path) -> Path:
    """A tiny T5 encoder in a hub cache, `cp -r`'d into the shared folder as the tutorial does."""
    saved = tmp_path / "t5"
    subprocess.run([str(loaders / "bin" / "python"), "-c", MAKE_T5, str(saved)], check=True,
                   capture_output=True, timeout=120)
    home_cache = tmp_path / "home-cache"
    hubcache.add_revision(home_cache, T5, "main", COMMIT,
                          {p.name: p.read_bytes() for p in saved.iterdir()})
    subprocess.run(["cp", "-r", str(home_cache), str(shared / "hf-hub")], check=True)
    return shared / "hf-hub"


def weights(cli, sim, recipe: Path, action: str, *extra: str):
    return cli("weights", action, "-r", str(recipe), "-n", str(sim.nodes_file), "-F",
               str(sim.ssh_config), *extra, "--json", timeout=300)


def states(document: dict) -> dict[tuple[str, str], dict]:
    return {(n["node"], load["name"]): load for n in document["loads"]["nodes"]
            for load in n["loads"]}


def test_every_node_loads_the_model_offline_and_a_node_that_lost_a_file_says_why(
        cli, cluster, loaders, tmp_path):
    recipe = write_recipe(tmp_path / "recipe.toml", cluster.shared, loaders)
    staging = staged_by_cp_r(loaders, cluster.shared, tmp_path)
    (cluster.shared / "code").mkdir()
    adopted = cli("weights", "stage", "-r", str(recipe), "--from-cache", str(staging), "--json")
    assert [r["action"] for r in adopted.json()["repos"]] == ["adopted"], adopted.stdout
    assert weights(cli, cluster, recipe, "sync").exit_code == 0

    loaded = weights(cli, cluster, recipe, "verify", "--load")

    assert loaded.exit_code == 0, loaded.stdout + loaded.stderr
    found = states(loaded.json())
    for node in cluster.nodes:
        assert found[node.name, "where it runs"]["state"] == "ok", found[node.name, "where it runs"]
        assert found[node.name, "t5 encoder"]["state"] == "ok"
        assert found[node.name, "t5 encoder"]["seconds"] > 0
        assert found[node.name, "on a GPU"]["state"] == "skipped"  # no GPU on these nodes

    weights_file = next((cluster.node("node02").home / CACHE).glob(
        "models--org--tiny-t5/snapshots/*/model.safetensors"))
    weights_file.resolve().unlink()  # the blob goes, the link stays: as a cut-short copy
    broken = weights(cli, cluster, recipe, "verify", "--load")

    assert broken.exit_code == 1
    found = states(broken.json())
    failed = found["node02", "t5 encoder"]
    assert failed["state"] == "failed"
    assert failed["tail"][-1] == ("OSError: org/tiny-t5 does not appear to have a file named "
                                  "pytorch_model.bin or model.safetensors.")  # the loader's own
    assert failed["next"].startswith("a file the loader reads is missing or wrong: "
                                     f"clusterprep weights sync -r {recipe}")
    assert {found[n, "t5 encoder"]["state"] for n in ("node01", "node03", "node04")} == {"ok"}

    plain = write_recipe(tmp_path / "plain.toml", cluster.shared, loaders, loads="")
    hub_only = weights(cli, cluster, plain, "verify", "--load")
    assert hub_only.exit_code == 1
    assert hub_only.json()["loads"]["hub_check"] is True
    found = states(hub_only.json())
    assert found["node01", "huggingface_hub offline"]["state"] == "ok"
    assert "org/tiny-t5@main: 1 of 2 files are not in" in \
        "\n".join(found["node02", "huggingface_hub offline"]["tail"])


def test_check_runs_the_loads_too_unless_told_not_to(cli, cluster, loaders, tmp_path):
    recipe = write_recipe(tmp_path / "recipe.toml", cluster.shared, loaders, WHERE_IT_RUNS)
    options = ("-r", str(recipe), "-n", str(cluster.nodes_file), "-F", str(cluster.ssh_config),
               "--json")
    before_up = cli("check", *options, timeout=300)
    assert before_up.exit_code == 1
    [not_run] = {(load["state"], load["tail"][-1], load["next"])
                 for n in before_up.json()["loads"]["nodes"] for load in n["loads"]}
    assert not_run[0] == "not-run" and "No such file or directory" in not_run[1]
    assert not_run[2].startswith(f"the env or the code is not on this node as the recipe says: "
                                 f"clusterprep up -r {recipe}")
    (cluster.shared / "code").mkdir()

    checked = cli("check", *options, timeout=300).json()
    skipped = cli("check", *options, "--no-load", timeout=300).json()

    assert {(n["node"], load["name"], load["state"]) for n in checked["loads"]["nodes"]
            for load in n["loads"]} == {(node.name, "where it runs", "ok")
                                        for node in cluster.nodes}
    assert skipped["loads"] is None


@pytest.mark.parametrize("table, message", [
    ('name = "x"', "[[weights.load]] entry 1: command must be a non-empty string"),
    ('name = "x"\ncommand = "true"\ntimeout = 0', "timeout must be a number of seconds above 0"),
    ('name = "x"\ncommand = "true"\ngpu = "yes"', "gpu must be true or false, not 'yes'"),
    ('name = "x"\ncommand = "true"\nwhen = 1', "unknown key 'when' (known: name, command, "
                                               "timeout, gpu)"),
])
def test_a_bad_load_table_names_the_file_and_the_entry(tmp_path, table, message):
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(f'[shared]\ndir = "/shared"\n[env]\nname = "e"\npython = "3"\n'
                      f'[weights]\nrepos = []\n[[weights.load]]\n{table}\n')
    with pytest.raises(WeightsSpecError) as raised:
        load_recipe(str(recipe))
    assert str(raised.value).startswith(f"{recipe}: ") and message in str(raised.value)


def test_every_opensora_load_names_the_lines_of_the_fork_it_loads_as():
    recipe = load_recipe("opensora", "/shared")
    assert [(load.name, load.gpu) for load in recipe.weights.loads] == [
        ("vae (OpenSoraVAE_V1_2)", False), ("2-D vae (subfolder vae)", False),
        ("t5 tokenizer", False), ("t5 encoder", False),
        ("stage-1 checkpoint (torch.load)", False), ("test inference (1 frame, 1 step)", True)]
    loads = read_text("opensora")[1].split("[[checks]]")[0].split("[[weights.load]]")[1:]
    tables = [table.rsplit("\n\n", 1)[0] for table in loads]  # less the next table's comment
    assert len(tables) == len(recipe.weights.loads)
    for table in tables:
        comment = " ".join(line for line in table.splitlines() if line.startswith("#"))
        assert re.search(r"\.(py|md):\d+", comment), table
