"""The `[weights]` table and `--repo` option: what is accepted, and errors that name the cause."""

from __future__ import annotations

from pathlib import Path

import pytest

from clusterprep.recipe import load_recipe, read_text
from clusterprep.weights.spec import RepoRef, WeightsSpec, WeightsSpecError, parse_repo_option

SHARED = Path("/shared")
CODE = Path("/shared/code")


def test_revision_defaults_to_main_and_staging_to_shared_hf_hub():
    spec = WeightsSpec.from_table({"repos": [{"id": "org/a"}, {"id": "org/b", "revision": "v2"}]},
                                  SHARED, "recipe.toml")
    assert spec.repos == (RepoRef("org/a", "main"), RepoRef("org/b", "v2"))
    assert spec.staging == Path("/shared/hf-hub")


def test_staging_may_name_the_shared_folder():
    spec = WeightsSpec.from_table({"staging": "{shared}/weights"}, SHARED, "recipe.toml")
    assert spec.staging == Path("/shared/weights")


@pytest.mark.parametrize("table, message", [
    ({"repo": []}, "recipe.toml: [weights]: unknown key 'repo'"),
    ({"repos": [{"id": "org/a", "rev": "x"}]}, "recipe.toml: [weights] repos entry 1: unknown key 'rev'"),
    ({"repos": [{"id": "no-slash"}]}, "repo id must look like org/name"),
    ({"repos": ["org/a"]}, "repos entry 1: expected"),
    ({"repos": [{"id": "org/a"}, {"id": "org/a"}]}, "lists org/a twice"),
    ({"staging": "relative/path"}, "staging must be absolute"),
    ({"repos": [{"id": "org/a", "allow_patterns": "vae/"}]},
     "repos entry 1: allow_patterns must be a non-empty list of patterns"),
    ({"repos": [{"id": "org/a", "allow_patterns": []}]}, "allow_patterns must be a non-empty"),
    ({"place": {"repo": "org/a"}}, "[weights] place must be an array of tables"),
    ({"repos": [{"id": "org/a"}], "place": [{"repo": "org/a", "file": "m.pth"}]},
     "[[weights.place]] entry 1: at must be a string"),
    ({"repos": [{"id": "org/a"}], "place": [{"repo": "org/b", "file": "m.pth", "at": "m.pth"}]},
     "entry 1: repo 'org/b' is not in [weights] repos"),
    ({"repos": [{"id": "org/a", "allow_patterns": ["vae/"]}],
      "place": [{"repo": "org/a", "file": "m.pth", "at": "m.pth"}]},
     "m.pth is not among the files of org/a that allow_patterns ['vae/'] select"),
    ({"repos": [{"id": "org/a"}], "place": [{"repo": "org/a", "file": "m.pth", "at": "/m.pth"}]},
     "entry 1: at must be a relative path inside its folder, without '..', not '/m.pth'"),
    ({"repos": [{"id": "org/a"}], "place": [{"repo": "org/a", "file": "../m", "at": "m.pth"}]},
     "entry 1: file must be a relative path"),
    ({"repos": [{"id": "org/a"}], "place": [{"repo": "org/a", "file": "a.pth", "at": "m.pth"},
                                            {"repo": "org/a", "file": "b.pth", "at": "m.pth"}]},
     "[[weights.place]] places two files at /shared/code/m.pth"),
])
def test_bad_tables_are_errors_that_name_the_file_and_the_key(table, message):
    with pytest.raises(WeightsSpecError) as error:
        WeightsSpec.from_table(table, SHARED, "recipe.toml", code=CODE)
    assert message in str(error.value)
    assert str(error.value).startswith("recipe.toml: ")


def test_repo_option_takes_an_optional_revision():
    assert parse_repo_option("org/a") == RepoRef("org/a", "main")
    assert parse_repo_option("org/a@abc123") == RepoRef("org/a", "abc123")
    with pytest.raises(WeightsSpecError):
        parse_repo_option("org/a@../../etc")


@pytest.mark.parametrize("patterns, chosen", [
    (["vae/"], ["vae/config.json", "vae/sub/weights.bin"]),        # a folder, at any depth
    (["*.json"], ["config.json", "vae.json", "vae/config.json"]),  # * crosses folders
    (["config.json"], ["config.json"]),                            # a file, at the top only
    (None, ["config.json", "text_encoder/vae/x.bin", "vae.json", "vae/config.json",
            "vae/sub/weights.bin"]),
])
def test_allow_patterns_choose_files_as_snapshot_download_does(patterns, chosen):
    paths = ["config.json", "text_encoder/vae/x.bin", "vae.json", "vae/config.json",
             "vae/sub/weights.bin"]
    ref = RepoRef("org/a", "main", tuple(patterns) if patterns else None)
    assert ref.select(paths) == chosen


def test_a_placement_needs_the_code_folder_of_a_repo_section():
    table = {"repos": [{"id": "org/a"}], "place": [{"repo": "org/a", "file": "m", "at": "m"}]}
    with pytest.raises(WeightsSpecError, match="this recipe has no \\[repo\\] section"):
        WeightsSpec.from_table(table, SHARED, "recipe.toml")


def test_a_repo_option_the_recipe_lists_keeps_its_patterns_and_placements():
    spec = WeightsSpec.from_table({
        "repos": [{"id": "org/a", "allow_patterns": ["vae/"]}, {"id": "org/b"}],
        "place": [{"repo": "org/b", "file": "m.pth", "at": "ckpt/m.pth"}],
    }, SHARED, "recipe.toml", code=CODE)
    only_a = spec.only((parse_repo_option("org/a"),), None)
    assert only_a.repos == (RepoRef("org/a", "main", ("vae/",)),) and only_a.placements == ()
    only_b = spec.only((parse_repo_option("org/b"),), Path("/elsewhere"))
    assert [p.at for p in only_b.placements] == [CODE / "ckpt/m.pth"]
    assert only_b.staging == Path("/elsewhere")


def test_the_opensora_weights_are_what_stage_one_training_loads():
    recipe = load_recipe("opensora", str(SHARED))
    spec = recipe.weights
    assert spec.staging == SHARED / "hf-hub"
    assert {repo.id: repo.allow_patterns for repo in spec.repos} == {
        "hpcai-tech/OpenSora-VAE-v1.2": None,
        "PixArt-alpha/pixart_sigma_sdxlvae_T5_diffusers": ("vae/",),
        "DeepFloyd/t5-v1_1-xxl": None,
        "PixArt-alpha/PixArt-Sigma": ("PixArt-Sigma-XL-2-2K-MS.pth",),
        # what the tutorial's test inference (the recipe's last [[weights.load]]) adds
        "hpcai-tech/OpenSora-STDiT-v2-stage3": None,
        "stabilityai/sd-vae-ft-ema": None,
    }
    [placed] = spec.placements
    assert (placed.repo.id, placed.file) == ("PixArt-alpha/PixArt-Sigma",
                                             "PixArt-Sigma-XL-2-2K-MS.pth")
    assert placed.at == Path(recipe.repo.path) / "pretrained_models/PixArt-Sigma-XL-2-2K-MS.pth"


def test_every_opensora_weights_entry_names_the_file_of_the_fork_that_loads_it():
    lines = read_text("opensora")[1].split("[weights]", 1)[1].split("[[checks]]", 1)[0]
    lines = lines.splitlines()
    for i, line in enumerate(lines):
        if line.strip().startswith(("{ id =", "[[weights.place]]")):
            comment = [text for text in lines[max(0, i - 4):i] if text.strip().startswith("#")]
            assert any(".py" in text or ".md" in text for text in comment), line


def test_a_relative_staging_option_is_refused_before_anything_is_written(cli, tmp_path):
    result = cli("weights", "stage", "--staging", "rel/hub", "--repo", "org/a", cwd=tmp_path)
    assert result.exit_code == 2
    assert "the staging cache must be an absolute path, not rel/hub" in result.stderr
    assert not (tmp_path / "rel").exists()
