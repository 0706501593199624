"""Builds a Hugging Face hub cache in the real layout, as huggingface_hub itself writes it.

The Hub cannot be reached from tests: this stands in for what `hf_hub_download` leaves behind
(blobs named by sha256 for LFS files and by git sha1 for small files, `refs/`, snapshots of
relative symlinks, `.locks/` at the root). `build_staging` then stages it where it lies, with
clusterprep's own `weights stage` code, as `weights stage --from-cache DIR --staging DIR` does.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

MB = 1 << 20


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def blob_name(data: bytes) -> str:
    """LFS files (large) are named by sha256, small files by their git sha1."""
    return hashlib.sha256(data).hexdigest() if len(data) > 10_000 else git_blob_sha1(data)


def add_revision(cache: Path, repo_id: str, ref: str | None, commit: str,
                 files: dict[str, bytes]) -> None:
    """Put one revision of `repo_id` into `cache`, as hf_hub_download would."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    (cache / ".locks" / repo.name).mkdir(parents=True, exist_ok=True)
    if ref is not None:
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / ref).write_text(commit)
    for rel, data in files.items():
        blob = repo / "blobs" / blob_name(data)
        if not blob.exists():
            blob.write_bytes(data)
        link = repo / "snapshots" / commit / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))


def pseudo_random(seed: str, size: int) -> bytes:
    out = bytearray()
    block = hashlib.sha256(seed.encode()).digest()
    while len(out) < size:
        block = hashlib.sha256(block).digest()
        out += block * 64
    return bytes(out[:size])


ALPHA_V1 = "1" * 40
ALPHA_MAIN = "a" * 40
BETA_MAIN = "b" * 40
REPOS = ["org/alpha", "org/beta"]


def build_hub_cache(cache: Path) -> Path:
    """Two repos; org/alpha in two revisions (main and v1) sharing a blob; nested paths."""
    config = b'{"model_type": "alpha"}\n'
    add_revision(cache, "org/alpha", "v1", ALPHA_V1, {
        "config.json": config,
        "model.safetensors": pseudo_random("alpha-v1", 2 * MB),
    })
    add_revision(cache, "org/alpha", "main", ALPHA_MAIN, {
        "config.json": config,
        "model.safetensors": pseudo_random("alpha-main", 3 * MB),
        "vae/diffusion/weights.bin": pseudo_random("alpha-vae", 2 * MB + 123),
    })
    add_revision(cache, "org/beta", "main", BETA_MAIN, {
        "tokenizer/tokenizer.json": b'{"vocab": []}\n',
        "text_encoder/pytorch_model.bin": pseudo_random("beta-te", 4 * MB + 7),
    })
    return cache


def build_staging(cache: Path) -> Path:
    """`build_hub_cache`, staged where it lies (every revision of it, whole)."""
    from clusterprep.weights.stage import FAILED, stage
    from clusterprep.weights.spec import RepoRef

    build_hub_cache(cache)
    revisions = (RepoRef("org/alpha"), RepoRef("org/alpha", "v1"), RepoRef("org/beta"))
    results = stage(cache, revisions, from_cache=cache)
    assert all(r.action != FAILED for r in results), results
    return cache
