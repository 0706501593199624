"""Recipes: every bad input is reported with its file and key; placeholders expand once."""

from __future__ import annotations

from pathlib import Path

import pytest

from clusterprep.errors import RecipeError
from clusterprep.recipe import load_recipe

GOOD = """
[shared]
dir = "/mnt/shared"
[env]
backend = "venv"
name = "demo"
python = "3.11"
[repo]
url = "https://example.com/org/Code.git"
rev = "0123456789abcdef0123456789abcdef01234567"
[pins]
torch = "2.2.2"
[install]
commands = ["{env.pip} install torch=={pins.torch}"]
[[checks]]
name = "torch cuda"
import = "torch"
value = "torch.version.cuda"
timeout = 60
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recipe.toml"
    path.write_text(text)
    return path


def test_placeholders_and_defaults_expand(tmp_path):
    recipe = load_recipe(str(write(tmp_path, GOOD)))
    assert recipe.env.prefix == "/mnt/shared/envs/demo"
    assert recipe.repo.path == "/mnt/shared/Code"
    assert recipe.install_commands == ["/mnt/shared/envs/demo/bin/python -m pip install "
                                       "torch==2.2.2"]
    assert recipe.exports == {"PYTHONNOUSERSITE": "True"}


def test_shared_dir_override_wins(tmp_path, monkeypatch):
    monkeypatch.setenv("SHAREDDIR", "/from/env")
    assert load_recipe(str(write(tmp_path, GOOD))).shared_dir == "/from/env"
    assert load_recipe(str(write(tmp_path, GOOD)), "/from/flag").shared_dir == "/from/flag"


@pytest.mark.parametrize("change, key, words", [
    (("python = \"3.11\"", "pyhton = \"3.11\""), "env.pyhton", "unknown key"),
    (("[pins]", "[wieghts]\n[pins]"), "wieghts", "unknown section"),
    (("dir = \"/mnt/shared\"", "dir = \"./shared\""), "shared.dir", "relative"),
    (("rev = \"0123456789abcdef0123456789abcdef01234567\"", "rev = \"main\""), "repo.rev",
     "not a commit"),
    (("{pins.torch}", "{pins.torchh}"), "install.commands[0]", "unknown placeholder"),
    (("backend = \"venv\"", "backend = \"pip\""), "env.backend", "must be one of"),
    (("backend = \"venv\"", "backend = \"conda\""), "env.installer_url", "required"),
    (("import = \"torch\"", "command = \"true\""), "checks[0].value", "needs `import`"),
    (("torch.version.cuda", "torch.version.(cuda"), "checks[0].value",
     "not a Python expression"),
    (("timeout = 60", "timeout = 0"), "checks[0].timeout", "above 0"),
    (("timeout = 60", "timeout = \"60\""), "checks[0].timeout", "must be a number"),
])
def test_a_bad_recipe_names_its_file_and_key(tmp_path, monkeypatch, change, key, words):
    monkeypatch.delenv("SHAREDDIR", raising=False)
    path = write(tmp_path, GOOD.replace(*change))
    with pytest.raises(RecipeError) as caught:
        load_recipe(str(path))
    assert caught.value.path == str(path) and caught.value.key == key
    assert str(path) in str(caught.value) and key in str(caught.value) and words in str(
        caught.value)


def test_the_cli_reports_a_bad_key_with_file_and_name(cli, tmp_path):
    path = write(tmp_path, GOOD.replace("python = ", "pyhton = "))
    result = cli("plan", "-n", "localhost", "-r", str(path))
    assert result.exit_code == 2
    assert f"{path}: env.pyhton: unknown key" in " ".join(result.stderr.split())


def test_builtin_recipe_loads_and_init_writes_it(cli, tmp_path):
    recipe = load_recipe("opensora", "/shared")
    assert recipe.env.backend == "conda" and recipe.env.name == "osora-12"
    assert any("torch==2.2.2" in c for c in recipe.install_commands)
    assert all("pip3 " not in c and "yes |" not in c for c in recipe.install_commands)
    target = tmp_path / "mine.toml"
    assert cli("recipe", "init", str(target)).exit_code == 0
    assert cli("recipe", "show", str(target)).stdout == cli("recipe", "show").stdout
    assert cli("recipe", "init", str(target)).exit_code == 2  # no silent overwrite
