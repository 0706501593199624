"""`weights stage`: fill the staging cache on the head, once, for every node to copy from.

A repo whose revision is already staged whole (every snapshot link resolves) is skipped. Else
it is taken from a local hub cache (`--from-cache`: the head's own, where a test inference
already put it) or downloaded with huggingface_hub, which reads `HF_TOKEN` (or the token file)
itself: the token never passes through our code, arguments or output.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from clusterprep.errors import ClusterprepError
from clusterprep.weights.manifest import resolve_revision
from clusterprep.weights.spec import RepoRef

PRESENT, COPIED, DOWNLOADED, FAILED = "present", "copied", "downloaded", "failed"


@dataclass
class StageResult:
    repo: RepoRef
    action: str
    commit: str | None = None
    files: int = 0
    bytes: int = 0
    error: str | None = None


def local_hub_cache() -> Path:
    """This machine's hub cache, resolved as huggingface_hub resolves it."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def staged_commit(staging: Path, repo: RepoRef) -> str | None:
    """The commit of `repo` when it is staged whole, else None."""
    repo_dir = staging / repo.folder
    commit = resolve_revision(repo_dir, repo.revision) if repo_dir.is_dir() else None
    snapshot = repo_dir / "snapshots" / commit if commit else None
    if snapshot is None or not snapshot.is_dir():
        return None
    for folder, _, names in os.walk(snapshot):
        for name in names:
            if not os.path.exists(os.path.join(folder, name)):
                return None  # a dangling link: its blob is missing
    return commit


def stage(
    staging: Path,
    repos: tuple[RepoRef, ...],
    *,
    from_cache: Path | None = None,
    on_file: Callable[[RepoRef, str, int], None] | None = None,
) -> list[StageResult]:
    """Stage every repo not yet staged whole; one result per repo, in order."""
    staging.mkdir(parents=True, exist_ok=True)
    results = []
    for repo in repos:
        commit = staged_commit(staging, repo)
        if commit is not None:
            results.append(StageResult(repo, PRESENT, commit))
            continue
        try:
            if from_cache is not None:
                results.append(_copy_from_cache(from_cache, staging, repo, on_file))
            else:
                results.append(_download(staging, repo))
        except (OSError, ClusterprepError) as e:
            results.append(StageResult(repo, FAILED, error=str(e)))
    return results


def _copy_from_cache(source: Path, staging: Path, repo: RepoRef,
                     on_file: Callable[[RepoRef, str, int], None] | None) -> StageResult:
    """Copy one revision (its ref, snapshot links and blobs) from a local hub cache."""
    src_repo = source / repo.folder
    commit = resolve_revision(src_repo, repo.revision) if src_repo.is_dir() else None
    if commit is None:
        raise ClusterprepError(f"{repo} is not in the cache {source}")
    result = StageResult(repo, COPIED, commit)
    dst_repo = staging / repo.folder
    if (src_repo / "refs" / repo.revision).is_file():
        _copy_file(src_repo / "refs" / repo.revision, dst_repo / "refs" / repo.revision)
    snapshot = src_repo / "snapshots" / commit
    for folder, _, names in os.walk(snapshot):
        for name in names:
            path = Path(folder) / name
            rel = path.relative_to(src_repo)
            if path.is_symlink():
                blob = Path(os.path.normpath(path.parent / os.readlink(path)))
                if not blob.is_file():
                    raise ClusterprepError(f"{repo}: {path} points to a missing blob {blob}")
                result.bytes += _copy_file(blob, dst_repo / blob.relative_to(src_repo))
                _place_link(dst_repo / rel, os.readlink(path))
            else:
                result.bytes += _copy_file(path, dst_repo / rel)
            result.files += 1
            if on_file is not None:
                on_file(repo, str(rel), result.bytes)
    return result


def _copy_file(src: Path, dst: Path) -> int:
    """Copy aside then rename; a file already there with the same size is kept. Bytes copied."""
    size = src.stat().st_size
    if dst.is_file() and dst.stat().st_size == size:
        return 0
    dst.parent.mkdir(parents=True, exist_ok=True)
    aside = dst.with_name(f".{dst.name}.clusterprep-partial")
    shutil.copyfile(src, aside)
    os.replace(aside, dst)
    return size


def _place_link(where: Path, target: str) -> None:
    if where.is_symlink() and os.readlink(where) == target:
        return
    where.parent.mkdir(parents=True, exist_ok=True)
    aside = where.with_name(f".{where.name}.clusterprep-partial")
    aside.unlink(missing_ok=True)
    os.symlink(target, aside)
    os.replace(aside, where)


def _download(staging: Path, repo: RepoRef) -> StageResult:
    """Download with huggingface_hub into the staging cache (it resumes and skips by itself)."""
    from huggingface_hub import snapshot_download

    try:
        path = snapshot_download(repo.id, revision=repo.revision, cache_dir=staging)
    except Exception as e:  # also a mirror's malformed answer: this repo fails, not the tool
        raise ClusterprepError(f"cannot download {repo}: {type(e).__name__}: "
                               f"{str(e).splitlines()[0] if str(e) else ''}") from e
    commit = Path(path).name
    files = [p for p in Path(path).rglob("*") if p.is_file()]
    return StageResult(repo, DOWNLOADED, commit, len(files), sum(p.stat().st_size for p in files))
