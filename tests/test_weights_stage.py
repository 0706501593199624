"""`weights stage` stages a repo complete or not at all, and `[weights]` brings to the nodes what
the code loads: the files its allow_patterns select, and files placed at paths of the code.

The Hub cannot be reached from tests: `tests/hubserver.py` stands in for huggingface.co (its
real answers), `tests/hubcache.py` builds hub caches in the real layout; everything else is
real (huggingface_hub, the simulated cluster's sshd nodes, processes killed with SIGKILL).
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import hubcache
from clusterprep.weights.manifest import build as build_manifest
from clusterprep.weights.spec import RepoRef
from conftest import SRC
from hubserver import COMMIT as HUB_COMMIT
from hubserver import Hub
from test_weights import nodes  # noqa: F401 (the fixture `cluster` builds on)

ALPHA = "models--org--alpha"
MAIN_MODEL = hubcache.blob_name(hubcache.pseudo_random("alpha-main", 3 * hubcache.MB))
CACHE = Path(".cache/huggingface/hub")
SIGMA = "PixArt-alpha/PixArt-Sigma"
CKPT = "PixArt-Sigma-XL-2-2K-MS.pth"
DIFFUSERS = "PixArt-alpha/pixart_sigma_sdxlvae_T5_diffusers"


def records(staging: Path) -> list[Path]:
    return sorted((staging / ".clusterprep-staged").rglob("*.json"))


def partials(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(".clusterprep-partial")]


def stage_cli(cli, staging: Path, *args: str, env: dict[str, str] | None = None):
    return cli("weights", "stage", "--staging", str(staging), *args, "--json", env=env)


# -- complete or absent ---------------------------------------------------------------------

def test_a_cache_missing_one_blob_stages_nothing_and_nothing_syncs_it(cli, tmp_path):
    source = hubcache.build_hub_cache(tmp_path / "head-cache")
    (source / ALPHA / "blobs" / MAIN_MODEL).unlink()
    staging = tmp_path / "staging"

    first = stage_cli(cli, staging, "--from-cache", str(source), "--repo", "org/alpha")

    assert first.exit_code == 1
    failure = first.json()["repos"][0]
    assert failure["action"] == "failed"
    assert "lacks 1 of the 3 files needed (model.safetensors" in failure["error"]
    assert records(staging) == [] and not (staging / ALPHA).exists()
    again = stage_cli(cli, staging, "--from-cache", str(source), "--repo", "org/alpha")
    assert again.json()["repos"][0]["action"] == "failed"  # never "present"
    for action in ("sync", "verify"):
        refused = cli("weights", action, "-n", "localhost", "--staging", str(staging),
                      "--repo", "org/alpha")
        assert refused.exit_code == 2
        assert "org/alpha@main is not staged whole" in refused.stderr


def test_a_half_copied_staging_cache_is_refused_then_completed_keeping_what_is_there(
        cli, tmp_path):
    # The state a failed stage used to leave (and a `cp -r` cut short leaves): the ref, and
    # the snapshot without one file.
    source = hubcache.build_hub_cache(tmp_path / "head-cache")
    staging = tmp_path / "staging"
    shutil.copytree(source, staging, symlinks=True)
    (staging / ALPHA / "blobs" / MAIN_MODEL).unlink()
    (staging / ALPHA / "snapshots" / hubcache.ALPHA_MAIN / "model.safetensors").unlink()

    refused = cli("weights", "sync", "-n", "localhost", "--staging", str(staging),
                  "--repo", "org/alpha")
    assert refused.exit_code == 2 and "with no record of being staged" in refused.stderr

    done = stage_cli(cli, staging, "--from-cache", str(source), "--repo", "org/alpha")

    assert done.exit_code == 0, done.stdout + done.stderr
    assert done.json()["repos"][0]["action"] == "copied"
    assert done.json()["repos"][0]["bytes"] == 3 * hubcache.MB  # only the missing blob
    manifest = build_manifest(staging, (RepoRef("org/alpha"),))
    assert f"{ALPHA}/blobs/{MAIN_MODEL}" in manifest.by_path()


def downloading(hub: Hub, staging: Path, also: Callable[[], bool], **popen) -> subprocess.Popen:
    """`weights stage --json` of the hub's repo, returned once huggingface_hub is writing a
    file (and `also` holds)."""
    env = dict(os.environ, PYTHONPATH=str(SRC), HOME=str(staging.parent), HF_ENDPOINT=hub.url)
    started = subprocess.Popen([sys.executable, "-m", "clusterprep", "weights", "stage",
                                "--staging", str(staging), "--repo", hub.repo, "--json"],
                               env=env, stderr=subprocess.DEVNULL, **popen)
    blobs = staging / "models--org--served" / "blobs"
    deadline = time.monotonic() + 30
    while not (blobs.is_dir() and any(p.name.endswith(".incomplete") for p in blobs.iterdir())
               and also()):
        assert time.monotonic() < deadline, "the download never got going"
        time.sleep(0.05)
    return started


def test_a_stage_killed_mid_download_is_not_present_and_a_rerun_fetches_only_the_rest(
        cli, tmp_path):
    files = {"config.json": b'{"hidden_size": 8}\n',
             "tokenizer.safetensors": os.urandom(100_000),
             "model.safetensors": os.urandom(4 * hubcache.MB)}
    staging = tmp_path / "staging"
    with Hub(files) as hub:
        hub.slow[(hub.repo, "model.safetensors")] = 2.0  # 8 s: time enough to kill it
        blobs = staging / "models--org--served" / "blobs"
        small = [blobs / hashlib.sha256(files["tokenizer.safetensors"]).hexdigest(),
                 blobs / hashlib.sha1(b"blob %d\0" % len(files["config.json"]) +
                                      files["config.json"]).hexdigest()]
        staging_process = downloading(hub, staging, lambda: all(b.is_file() for b in small),
                                      stdout=subprocess.DEVNULL)
        staging_process.send_signal(signal.SIGKILL)
        staging_process.wait()

        assert records(staging) == []
        refused = cli("weights", "sync", "-n", "localhost", "--staging", str(staging),
                      "--repo", hub.repo)
        assert refused.exit_code == 2 and "not staged whole" in refused.stderr

        hub.slow.clear()
        fetched_before = len(hub.downloads)
        rerun = stage_cli(cli, staging, "--repo", hub.repo, env={"HF_ENDPOINT": hub.url})

    assert rerun.exit_code == 0, rerun.stdout + rerun.stderr
    assert rerun.json()["repos"][0]["action"] == "downloaded"
    assert hub.downloads[fetched_before:] == [(hub.repo, "model.safetensors")]
    assert partials(staging) == []
    snapshot = staging / "models--org--served" / "snapshots" / HUB_COMMIT
    assert {p: (snapshot / p).read_bytes() for p in files} == files


def test_ctrl_c_during_a_download_stages_nothing_and_says_so(tmp_path):
    files = {"config.json": b"{}\n", "model.safetensors": os.urandom(hubcache.MB)}
    staging = tmp_path / "staging"
    with Hub(files) as hub:
        hub.slow[(hub.repo, "model.safetensors")] = 3.0
        staging_process = downloading(hub, staging, lambda: True, stdout=subprocess.PIPE,
                                      text=True)
        staging_process.send_signal(signal.SIGINT)
        out, _ = staging_process.communicate(timeout=60)  # the file in flight ends first

    assert staging_process.returncode == 130
    assert json.loads(out)["repos"][0]["action"] == "interrupted"
    assert records(staging) == []


def test_a_file_garbled_on_the_way_is_caught_against_the_hubs_listing(cli, tmp_path):
    files = {"config.json": b'{"hidden_size": 8}\n', "model.safetensors": os.urandom(200_000)}
    staging = tmp_path / "staging"
    with Hub(files) as hub:
        hub.garbled.add((hub.repo, "model.safetensors"))
        env = {"HF_ENDPOINT": hub.url}
        garbled = stage_cli(cli, staging, "--repo", hub.repo, env=env)
        hub.garbled.clear()
        fetched_before = len(hub.downloads)
        repaired = stage_cli(cli, staging, "--repo", hub.repo, env=env)

    assert garbled.exit_code == 1
    assert "differ from the Hub's listing (model.safetensors (sha256 differs))" in \
        garbled.json()["repos"][0]["error"]
    assert repaired.exit_code == 0, repaired.stdout
    assert hub.downloads[fetched_before:] == [(hub.repo, "model.safetensors")]
    link = staging / "models--org--served" / "snapshots" / HUB_COMMIT / "model.safetensors"
    assert link.read_bytes() == files["model.safetensors"]


def test_two_stagings_at_once_both_finish_and_leave_one_whole_copy(tmp_path):
    # `weights stage` takes a lock on its staging cache; the cache is safe without it too (a
    # staging from another head, say): two processes run the staging code at once.
    source = tmp_path / "head-cache"
    hubcache.add_revision(source, "org/big", "main", "d" * 40, {
        f"model-{i:05d}.safetensors": hubcache.pseudo_random(f"big-{i}", 24 * hubcache.MB)
        for i in range(6)})
    staging = tmp_path / "staging"
    code = ("import sys; from pathlib import Path\n"
            "from clusterprep.weights.stage import stage\n"
            "from clusterprep.weights.spec import RepoRef\n"
            "staging, source = map(Path, sys.argv[1:])\n"
            "[result] = stage(staging, (RepoRef('org/big'),), from_cache=source)\n"
            "print(result.action, result.error)\n")
    env = dict(os.environ, PYTHONPATH=str(SRC), HOME=str(tmp_path))

    both = [subprocess.Popen([sys.executable, "-c", code, str(staging), str(source)], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    outcomes = [process.communicate(timeout=120) for process in both]

    for process, (out, err) in zip(both, outcomes):
        assert process.returncode == 0, err
        assert out.split()[0] in ("copied", "present"), out
    blobs = staging / "models--org--big" / "blobs"
    for blob in blobs.iterdir():
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name
    assert len(list(blobs.iterdir())) == 6 and partials(staging) == []
    assert len(build_manifest(staging, (RepoRef("org/big"),)).files) == 7  # 6 blobs, a ref


# -- what the code loads ---------------------------------------------------------------------

@pytest.fixture
def cluster(nodes):
    """cluster4 with empty hub caches (test_weights.py's `nodes`), and no code folder or
    staging cache in its shared folder, before and after."""

    def wipe() -> None:
        for folder in ("code", "hf-hub"):
            shutil.rmtree(nodes.shared / folder, ignore_errors=True)

    wipe()
    yield nodes
    wipe()


def write_recipe(path: Path, shared: Path) -> Path:
    """A small recipe whose [weights] is shaped as the Open-Sora one: a diffusers repo of
    which only vae/ is loaded, and a checkpoint placed at a path of the code."""
    path.write_text(f"""
[shared]
dir = "{shared}"
[env]
name = "test"
python = "3"
[repo]
url = "https://example.invalid/code.git"
rev = "0123456789abcdef"
path = "{{shared}}/code"
[weights]
repos = [
    {{ id = "{DIFFUSERS}", allow_patterns = ["vae/"] }},
    {{ id = "{SIGMA}", allow_patterns = ["{CKPT}"] }},
]
[[weights.place]]
repo = "{SIGMA}"
file = "{CKPT}"
at = "pretrained_models/{CKPT}"
""")
    return path


DIFFUSERS_FILES = {
    "model_index.json": b'{"_class_name": "PixArtSigmaPipeline"}\n',
    "vae/config.json": b'{"_class_name": "AutoencoderKL"}\n',
    "vae/diffusion_pytorch_model.safetensors": hubcache.pseudo_random("vae", 300_000),
    "transformer/diffusion_pytorch_model.safetensors": hubcache.pseudo_random("dit", 900_000),
    "text_encoder/model.safetensors": hubcache.pseudo_random("t5", 700_000),
}
SIGMA_FILES = {CKPT: hubcache.pseudo_random("ckpt", 500_000),
               "PixArt-Sigma-XL-2-1024-MS.pth": hubcache.pseudo_random("other", 800_000)}


def weights(cli, sim, recipe: Path, action: str, *extra: str, as_json: bool = True):
    """`weights ACTION` over the simulated cluster with the test recipe."""
    return cli("weights", action, "-r", str(recipe), "-n", str(sim.nodes_file), "-F",
               str(sim.ssh_config), *extra, *(["--json"] if as_json else []))


def files_in(cache: Path) -> set[str]:
    return {str(p.relative_to(cache)).split("/", 3)[-1] for p in cache.rglob("*")
            if "/snapshots/" in str(p) and p.is_symlink()}


def test_only_what_the_code_loads_is_staged_synced_and_verified(cli, cluster, tmp_path):
    recipe = write_recipe(tmp_path / "recipe.toml", cluster.shared)
    with Hub(DIFFUSERS_FILES, repo=DIFFUSERS) as hub:
        hub.serve(SIGMA, SIGMA_FILES)
        staged = cli("weights", "stage", "-r", str(recipe), "--json",
                     env={"HF_ENDPOINT": hub.url})
    assert staged.exit_code == 0, staged.stdout + staged.stderr
    assert sorted(hub.downloads) == [(SIGMA, CKPT), (DIFFUSERS, "vae/config.json"),
                                     (DIFFUSERS, "vae/diffusion_pytorch_model.safetensors")]
    (cluster.shared / "code").mkdir()

    synced = weights(cli, cluster, recipe, "sync")

    assert synced.exit_code == 0, synced.stdout + synced.stderr
    for node in cluster.nodes:
        assert files_in(node.home / CACHE) == {
            "vae/config.json", "vae/diffusion_pytorch_model.safetensors", CKPT}, node.name
    verified = weights(cli, cluster, recipe, "verify", "--full")
    assert verified.exit_code == 0, verified.stdout
    # A node loads the VAE by repo id, offline, as diffusers' from_pretrained(subfolder="vae")
    # asks huggingface_hub for it (the nodes' own Python lacks huggingface_hub, so this Python
    # reads node02's cache folder).
    code = ("from huggingface_hub import hf_hub_download as get\n"
            f"print(open(get('{DIFFUSERS}', 'config.json', subfolder='vae')).read())\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_HUB_CACHE=str(cluster.node("node02").home / CACHE), HF_HUB_OFFLINE="1")
    loaded = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, timeout=60)
    assert loaded.stdout == DIFFUSERS_FILES["vae/config.json"].decode() + "\n", loaded.stderr


def test_the_checkpoint_is_placed_where_training_reads_it_on_every_node(cli, cluster, tmp_path):
    recipe = write_recipe(tmp_path / "recipe.toml", cluster.shared)
    source = tmp_path / "head-cache"
    hubcache.add_revision(source, SIGMA, "main", "5" * 40, SIGMA_FILES)
    hubcache.add_revision(source, DIFFUSERS, "main", "6" * 40, DIFFUSERS_FILES)
    assert cli("weights", "stage", "-r", str(recipe), "--from-cache", str(source)).exit_code == 0
    at = cluster.shared / "code" / "pretrained_models" / CKPT

    before_up = weights(cli, cluster, recipe, "sync")
    assert before_up.exit_code == 1
    assert {n["reason"] for n in before_up.json()["placements"][0]["nodes"]} == {
        f"the code is not at {cluster.shared / 'code'} yet: run `clusterprep up -r {recipe} "
        f"-n {cluster.nodes_file} -F {cluster.ssh_config}`"}
    (cluster.shared / "code").mkdir()

    synced = weights(cli, cluster, recipe, "sync")

    assert synced.exit_code == 0, synced.stdout + synced.stderr
    [placed] = synced.json()["placements"]
    states = {n["state"] for n in placed["nodes"]}  # the nodes share one code folder: the
    assert "placed" in states and states <= {"placed", "ok"}  # first to look places the link
    assert os.readlink(at) == f"/root/{CACHE}/models--PixArt-alpha--PixArt-Sigma/snapshots/" \
                              f"{'5' * 40}/{CKPT}"
    expected = hashlib.sha256(SIGMA_FILES[CKPT]).hexdigest()
    for node in cluster.nodes:  # each node reads its own cache through the one link
        seen = node.run(f"sha256sum {at} && readlink -f {at}", check=True).stdout.split()
        assert seen[0] == expected and seen[2].startswith("/root/.cache/huggingface/hub/")
    as_people_see_it = weights(cli, cluster, recipe, "verify", as_json=False)
    assert as_people_see_it.exit_code == 0, as_people_see_it.stderr
    assert "files placed at paths of the code" in as_people_see_it.stdout

    (cluster.node("node02").home / CACHE / "models--PixArt-alpha--PixArt-Sigma" / "blobs" /
     expected).unlink()
    broken = weights(cli, cluster, recipe, "verify")
    assert broken.exit_code == 1
    states = {n["node"]: n for n in broken.json()["placements"][0]["nodes"]}
    assert states["node02"]["state"] == "failed"
    sync = f"clusterprep weights sync -r {recipe} -n {cluster.nodes_file} -F {cluster.ssh_config}"
    assert f"is not in this node's cache: run `{sync}`" in states["node02"]["reason"]
    assert {states[n]["state"] for n in ("node01", "node03", "node04")} == {"ok"}
    assert cli(*shlex.split(sync)[1:]).exit_code == 0  # the advice, run as printed, mends it
    assert weights(cli, cluster, recipe, "verify").exit_code == 0


def test_a_placement_never_serves_a_node_another_nodes_path_nor_replaces_a_file(
        cli, cluster, tmp_path):
    recipe = write_recipe(tmp_path / "recipe.toml", cluster.shared)
    source = tmp_path / "head-cache"
    hubcache.add_revision(source, SIGMA, "main", "5" * 40, SIGMA_FILES)
    hubcache.add_revision(source, DIFFUSERS, "main", "6" * 40, DIFFUSERS_FILES)
    assert cli("weights", "stage", "-r", str(recipe), "--from-cache", str(source)).exit_code == 0
    (cluster.shared / "code" / "pretrained_models").mkdir(parents=True)
    bashrc = cluster.node("node03").home / ".bashrc"
    bashrc.write_text("export HF_HOME=/root/hf-elsewhere\n" + bashrc.read_text())

    differing = weights(cli, cluster, recipe, "sync")

    assert differing.exit_code == 1
    assert all(n["ok"] for n in differing.json()["nodes"])  # the files themselves arrived
    reasons = {n["reason"] for n in differing.json()["placements"][0]["nodes"]}
    assert len(reasons) == 1 and "hub caches sit at different paths" in reasons.pop()
    assert "/root/hf-elsewhere/hub on node03" in differing.stdout
    assert not (cluster.shared / "code" / "pretrained_models" / CKPT).exists()

    bashrc.write_text(bashrc.read_text().split("\n", 1)[1])
    (cluster.shared / "code" / "pretrained_models" / CKPT).write_bytes(b"someone's own copy")
    blocked = weights(cli, cluster, recipe, "sync")
    assert blocked.exit_code == 1
    assert {n["reason"] for n in blocked.json()["placements"][0]["nodes"]} == {
        f"{cluster.shared}/code/pretrained_models/{CKPT} is there and is not a link: "
        "move it away"}
    assert (cluster.shared / "code" / "pretrained_models" / CKPT).read_bytes() == \
        b"someone's own copy"


# -- the tutorial's own staging: `cp -r` of a hub cache, then sync ---------------------------

def copied_by_hand(tmp_path: Path) -> Path:
    """The tutorial's staging: a whole hub cache `cp -r`'d into the shared folder."""
    source = hubcache.build_hub_cache(tmp_path / "home-cache")
    staging = tmp_path / "opensora_hub_ckpts"
    subprocess.run(["cp", "-r", str(source), str(staging)], check=True)
    return staging


def over(cli, sim, action: str, staging: Path, *extra: str):
    """`weights ACTION` over the simulated cluster, with no recipe."""
    return cli("weights", action, "-n", str(sim.nodes_file), "-F", str(sim.ssh_config),
               "--staging", str(staging), *extra)


def test_the_tutorials_cp_r_is_adopted_in_place_offline_then_synced(cli, cluster, tmp_path):
    staging = copied_by_hand(tmp_path)
    repos = ("--repo", "org/alpha", "--repo", "org/beta")
    adopt = (f"clusterprep weights stage --from-cache {staging} --repo org/alpha@main "
             f"--repo org/beta@main --staging {staging}")

    for action in ("sync", "verify"):
        refused = over(cli, cluster, action, staging, *repos)
        assert refused.exit_code == 2
        assert "org/alpha@main, org/beta@main are in" in refused.stderr
        assert "no record of being staged and checked" in refused.stderr
        assert adopt in refused.stderr
    # Without --from-cache, `stage` would download from the Hub: it says so and does not.
    no_download = stage_cli(cli, staging, *repos, env={"HF_ENDPOINT": "http://127.0.0.1:9"})
    assert no_download.exit_code == 1
    assert [r["error"] for r in no_download.json()["repos"]] == [
        f"org/{name}@main is in {staging} with no record of being staged and checked (copied "
        "there by hand, as the tutorial's `cp -r` does): check and adopt what is there in "
        f"place, offline, with `clusterprep weights stage --from-cache {staging} --repo "
        f"org/{name}@main --staging {staging}`; nothing was downloaded"
        for name in ("alpha", "beta")]
    inodes = {p: p.stat().st_ino for p in staging.rglob("*")
              if p.is_file() and not p.is_symlink()}

    adopted = stage_cli(cli, staging, "--from-cache", str(staging), *repos)

    assert adopted.exit_code == 0, adopted.stdout + adopted.stderr
    document = adopted.json()["repos"]
    assert [(r["action"], r["files"], r["bytes"]) for r in document] == [
        ("adopted", 3, 0), ("adopted", 2, 0)]
    needed = [*(staging / ALPHA / "snapshots" / hubcache.ALPHA_MAIN).rglob("*"),
              *(staging / "models--org--beta" / "snapshots" / hubcache.BETA_MAIN).rglob("*")]
    assert sum(r["hashed_bytes"] for r in document) == \
        sum(p.stat().st_size for p in needed if p.is_file())  # each blob read once
    assert all(p.stat().st_ino == inode for p, inode in inodes.items())  # nothing copied
    again = stage_cli(cli, staging, "--from-cache", str(staging), *repos)
    assert [r["action"] for r in again.json()["repos"]] == ["present", "present"]

    synced = over(cli, cluster, "sync", staging, *repos, "--json")

    assert synced.exit_code == 0, synced.stdout + synced.stderr
    for node in cluster.nodes:
        assert files_in(node.home / CACHE) == {
            "config.json", "model.safetensors", "vae/diffusion/weights.bin",
            "tokenizer/tokenizer.json", "text_encoder/pytorch_model.bin"}, node.name


def test_a_hand_copied_file_that_is_damaged_or_gone_is_named_and_its_repo_not_adopted(
        cli, tmp_path):
    staging = copied_by_hand(tmp_path)
    model = staging / ALPHA / "blobs" / MAIN_MODEL
    garbled = bytearray(model.read_bytes())
    garbled[1000] ^= 0xFF
    model.write_bytes(bytes(garbled))
    tokenizer = staging / "models--org--beta" / "blobs" / hubcache.git_blob_sha1(
        b'{"vocab": []}\n')
    tokenizer.unlink()

    shown = cli("weights", "stage", "--staging", str(staging), "--from-cache", str(staging),
                "--repo", "org/alpha", "--repo", "org/beta")

    assert shown.exit_code == 1
    assert "checked in place:" in shown.stdout and "hashed against the blobs' names" in \
        shown.stdout
    failed = stage_cli(cli, staging, "--from-cache", str(staging), "--repo", "org/alpha",
                       "--repo", "org/beta").json()["repos"]
    assert f"1 of its 3 files do not hash to their blob's name (model.safetensors " \
           f"(blobs/{MAIN_MODEL}))" in failed[0]["error"]
    assert f"1 of its 2 files link to a blob that is not there (tokenizer/tokenizer.json " \
           f"(blobs/{tokenizer.name}))" in failed[1]["error"]
    assert records(staging) == []
