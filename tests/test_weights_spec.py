"""The `[weights]` table and `--repo` option: what is accepted, and errors that name the cause."""

from __future__ import annotations

from pathlib import Path

import pytest

from clusterprep.recipe import load_recipe
from clusterprep.weights.spec import RepoRef, WeightsSpec, WeightsSpecError, parse_repo_option

SHARED = Path("/shared")


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
])
def test_bad_tables_are_errors_that_name_the_file_and_the_key(table, message):
    with pytest.raises(WeightsSpecError) as error:
        WeightsSpec.from_table(table, SHARED, "recipe.toml")
    assert message in str(error.value)
    assert str(error.value).startswith("recipe.toml: ")


def test_repo_option_takes_an_optional_revision():
    assert parse_repo_option("org/a") == RepoRef("org/a", "main")
    assert parse_repo_option("org/a@abc123") == RepoRef("org/a", "abc123")
    with pytest.raises(WeightsSpecError):
        parse_repo_option("org/a@../../etc")


def test_the_opensora_list_covers_inference_and_training():
    spec = load_recipe("opensora", str(SHARED)).weights
    assert spec.staging == SHARED / "hf-hub"
    ids = {repo.id for repo in spec.repos}
    assert {"hpcai-tech/OpenSora-STDiT-v2-stage3", "stabilityai/sd-vae-ft-ema",
            "DeepFloyd/t5-v1_1-xxl", "hpcai-tech/OpenSora-VAE-v1.2",
            "PixArt-alpha/pixart_sigma_sdxlvae_T5_diffusers"} <= ids


def test_a_relative_staging_option_is_refused_before_anything_is_written(cli, tmp_path):
    result = cli("weights", "stage", "--staging", "rel/hub", "--repo", "org/a", cwd=tmp_path)
    assert result.exit_code == 2
    assert "the staging cache must be an absolute path, not rel/hub" in result.stderr
    assert not (tmp_path / "rel").exists()
