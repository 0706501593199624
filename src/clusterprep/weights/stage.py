"""`weights stage`: fill the staging cache on the head, once, for every node to copy from.

A repo is staged complete or not at all. Its revision's own file list (the Hub's listing, or
the snapshot of the local cache it is copied from) says what it holds; its allow_patterns say
which of those files are needed. Each needed file is written aside, hashed as it is written,
checked against its name (the sha256 for large files, the git blob sha1 for small ones) or
the Hub's listing, and renamed into place; only once every needed file is there and right is
the revision's record written (`weights/record.py`), then its ref. A stage that fails or is
killed leaves no record: the repo is not "present", not synced, and a rerun keeps every file
that arrived whole and fetches the rest. Two stagings at once write different aside files and
rename identical content: neither can corrupt the other.

Downloads go through huggingface_hub, which reads `HF_TOKEN` (or the token file) itself: the
token never passes through our code, arguments or output.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from clusterprep.errors import ClusterprepError
from clusterprep.localfiles import write_atomically
from clusterprep.probes._links import swap_link
from clusterprep.weights import record as records
from clusterprep.weights.manifest import SHA256_NAME, HashCache, StagingError
from clusterprep.weights.record import StagedRevision, aside_path, resolve_revision
from clusterprep.weights.spec import RepoRef

PRESENT, COPIED, DOWNLOADED, FAILED = "present", "copied", "downloaded", "failed"
ADOPTED, INTERRUPTED = "adopted", "interrupted"
CHUNK = 1 << 20
_GIT_SHA1_NAME = 40

if TYPE_CHECKING:
    from huggingface_hub.hf_api import RepoFile

OnFile = Callable[[RepoRef, str, int], None]


@dataclass
class StageResult:
    repo: RepoRef
    action: str
    commit: str | None = None
    files: int = 0
    bytes: int = 0                  # copied or downloaded
    error: str | None = None
    hashed: int = 0                 # bytes read to check files against their names
    seconds: float = 0.0


def local_hub_cache() -> Path:
    """This machine's hub cache, resolved as huggingface_hub resolves it."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def stage(
    staging: Path,
    repos: tuple[RepoRef, ...],
    *,
    from_cache: Path | None = None,
    on_file: OnFile | None = None,
) -> list[StageResult]:
    """Stage every repo not yet staged whole; one result per repo, in order. With
    `from_cache` the staging cache itself, what is there is adopted in place (`_adopt`)."""
    staging.mkdir(parents=True, exist_ok=True)
    in_place = from_cache is not None and from_cache.resolve() == staging.resolve()
    hashes = HashCache(staging)
    results = []
    try:
        for repo in repos:
            record = records.committed(staging, repo)
            if record is not None and not _damaged(staging, repo, record, hashes):
                results.append(StageResult(repo, PRESENT, record.commit,
                                           len(record.needed(repo))))
                continue
            records.remove_stale_asides([staging / repo.folder, staging / records.RECORDS])
            started = time.monotonic()
            try:
                if in_place:
                    result = _adopt(staging, repo, hashes)
                elif from_cache is not None:
                    result = _copy_from_cache(from_cache, staging, repo, hashes, on_file)
                elif records.unrecorded(staging, repo):
                    raise StagingError(records.adopt_advice(staging, [repo]) +
                                       "; nothing was downloaded")
                else:
                    result = _download(staging, repo, hashes)
            except (OSError, ClusterprepError) as e:
                result = StageResult(repo, FAILED, error=str(e))
            except KeyboardInterrupt:
                results.append(StageResult(repo, INTERRUPTED, error="interrupted: not staged "
                                           "(what arrived whole is kept for the next run)"))
                break
            result.seconds = time.monotonic() - started
            results.append(result)
    finally:
        hashes.save()
    return results


def _damaged(staging: Path, repo: RepoRef, record: StagedRevision,
             hashes: HashCache) -> list[Path]:
    """The staged blobs named by a sha256 that they no longer have (removed, to be staged
    again; huggingface_hub would take a blob that exists for a good one)."""
    damaged = []
    for path in record.needed(repo):
        blob = staging / repo.folder / "blobs" / record.files[path][0]
        if SHA256_NAME.match(blob.name) and hashes.sha256(blob) != blob.name:
            blob.unlink()
            damaged.append(blob)
    return damaged


def _commit(staging: Path, repo: RepoRef, revision: StagedRevision) -> None:
    """The commit point: the record (with what an older one had staged), then the ref."""
    revision = revision.merged(records.load(staging, repo, revision.commit))
    records.save(staging, repo, revision)
    ref = staging / repo.folder / "refs" / repo.revision
    if repo.revision != revision.commit and not (
            ref.is_file() and ref.read_text().strip() == revision.commit):
        write_atomically(ref, revision.commit.encode(), aside=aside_path(ref))


# -- in place: a cache copied into the staging folder by hand --------------------------------

def _adopt(staging: Path, repo: RepoRef, hashes: HashCache) -> StageResult:
    """Check one revision where it lies (every needed file's link and blob, each blob hashed
    against its name in one read), then record it; nothing is copied. A missing or damaged
    file is named, and the repo is not recorded."""
    repo_dir = staging / repo.folder
    commit = resolve_revision(repo_dir, repo.revision) if repo_dir.is_dir() else None
    if commit is None or not (repo_dir / "snapshots" / commit).is_dir():
        raise StagingError(f"{repo} is not in {staging}: nothing to adopt; stage it from the "
                           "Hub (without --from-cache) or from a cache that holds it")
    blobs = _snapshot_blobs(repo_dir / "snapshots" / commit, repo_dir)
    needed = repo.select(sorted(blobs))
    if not needed:
        raise StagingError(f"{repo}: no file of its snapshot in {staging} matches "
                           f"allow_patterns {list(repo.allow_patterns or [])}")
    lacking = [f"{path} (blobs/{blobs[path].name})" for path in needed
               if not blobs[path].is_file()]
    result = StageResult(repo, ADOPTED, commit, len(needed))
    damaged = []
    for path in needed:
        if blobs[path].is_file():
            right, read = _check_blob(blobs[path], hashes)
            result.hashed += read
            if not right:
                damaged.append(f"{path} (blobs/{blobs[path].name})")
    if lacking or damaged:
        result.action, result.error = FAILED, (
            f"{repo} in {staging} is not adopted: "
            + "; ".join(f"{len(paths)} of its {len(needed)} files {what} ({_some(paths)})"
                        for paths, what in ((lacking, "link to a blob that is not there"),
                                            (damaged, "do not hash to their blob's name"))
                        if paths)
            + ". Copy those files again (or stage from the Hub, without --from-cache) "
              "and run again")
        return result
    listing = {path: (blob.name, blob.stat().st_size) for path, blob in blobs.items()
               if blob.is_file()}
    _commit(staging, repo, StagedRevision(repo.id, commit, listing, set(needed)))
    return result


def _check_blob(blob: Path, hashes: HashCache) -> tuple[bool, int]:
    """Whether a blob hashes to its name (its sha256, or its git blob sha1), and the bytes
    read to tell: one read gives both hashes, and the sha256 is remembered for the manifest
    (a sha256-named blob unchanged since it was last hashed is not read again)."""
    if SHA256_NAME.match(blob.name) and hashes.known_sha256(blob) is not None:
        return hashes.known_sha256(blob) == blob.name, 0
    size = blob.stat().st_size
    digests = _digests(blob.name, size)
    with open(blob, "rb") as reader:
        while block := reader.read(CHUNK):
            for digest in digests:
                digest.update(block)
    hashes.remember(blob, digests[0].hexdigest())
    named = SHA256_NAME.match(blob.name) or len(blob.name) == _GIT_SHA1_NAME
    return bool(named) and _matches(blob.name, digests), size


# -- from a local hub cache -----------------------------------------------------------------

def _copy_from_cache(source: Path, staging: Path, repo: RepoRef, hashes: HashCache,
                     on_file: OnFile | None) -> StageResult:
    """Copy one revision's needed files (blobs, snapshot links), then commit it."""
    src_repo = source / repo.folder
    commit = resolve_revision(src_repo, repo.revision) if src_repo.is_dir() else None
    if commit is None:
        raise StagingError(f"{repo} is not in the cache {source}")
    snapshot = src_repo / "snapshots" / commit
    blobs = _snapshot_blobs(snapshot, src_repo)
    needed = repo.select(sorted(blobs))
    if not needed:
        raise StagingError(f"{repo}: no file of its snapshot in {source} matches "
                           f"allow_patterns {list(repo.allow_patterns or [])}")
    lacking = [path for path in needed if not blobs[path].is_file()]
    if lacking:
        raise StagingError(
            f"{repo}: the cache {source} lacks {len(lacking)} of the {len(needed)} files "
            f"needed ({_some(lacking)}: the snapshot links to blobs that are not there); "
            "nothing was staged. Complete that cache, or stage from the Hub (without "
            "--from-cache), and run again")
    result = StageResult(repo, COPIED, commit, len(needed))
    dst_repo = staging / repo.folder
    for path in needed:
        blob = dst_repo / "blobs" / blobs[path].name
        result.bytes += _copy_blob(blobs[path], blob, hashes)
        _place_link(dst_repo / "snapshots" / commit / path, blob)
        if on_file is not None:
            on_file(repo, f"snapshots/{commit}/{path}", result.bytes)
    listing = {path: (blob.name, blob.stat().st_size if blob.is_file() else None)
               for path, blob in blobs.items()}
    _commit(staging, repo, StagedRevision(repo.id, commit, listing, set(needed)))
    return result


def _snapshot_blobs(snapshot: Path, src_repo: Path) -> dict[str, Path]:
    """Every file of a snapshot: its path -> the blob its link leads to (which may be
    missing). A snapshot entry that is not a link into blobs/ is not the hub's layout."""
    found = {}
    for folder, _, names in os.walk(snapshot):
        for name in names:
            link = Path(folder, name)
            if not link.is_symlink():
                raise StagingError(f"{link} is a file, not a link into blobs/: not a hub cache")
            blob = Path(os.path.normpath(link.parent / os.readlink(link)))
            if blob.parent != src_repo / "blobs":
                raise StagingError(f"{link} leads to {blob}, outside {src_repo / 'blobs'}")
            found[str(link.relative_to(snapshot))] = blob
    return found


def _copy_blob(src: Path, dst: Path, hashes: HashCache) -> int:
    """Copy a blob aside, hashing it, and rename it into place once its hash matches its
    name. A blob already there and right is kept. Returns the bytes copied."""
    if dst.is_file() and _right(dst, hashes):
        return 0
    dst.parent.mkdir(parents=True, exist_ok=True)
    aside = aside_path(dst)
    digests = _digests(dst.name, src.stat().st_size)
    try:
        with open(src, "rb") as reader, open(aside, "wb") as writer:
            while block := reader.read(CHUNK):
                writer.write(block)
                for digest in digests:
                    digest.update(block)
            writer.flush()
            os.fsync(writer.fileno())
        if not _matches(dst.name, digests):
            raise StagingError(f"{src} is damaged: its content does not hash to its name; "
                               "nothing of it was staged")
        os.replace(aside, dst)
    finally:
        aside.unlink(missing_ok=True)
    hashes.remember(dst, digests[0].hexdigest())
    return dst.stat().st_size


def _right(blob: Path, hashes: HashCache) -> bool:
    """Whether a blob's content hashes to its name (sha256, or git blob sha1)."""
    return _check_blob(blob, hashes)[0]


def _git_sha1(path: Path) -> str:
    digest = hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as reader:
        while block := reader.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _digests(name: str, size: int) -> list[hashlib._Hash]:
    """sha256 always (the manifest's hash); the git blob sha1 too for a blob named by one."""
    digests = [hashlib.sha256()]
    if len(name) == _GIT_SHA1_NAME:
        digests.append(hashlib.sha1(b"blob %d\0" % size))
    return digests


def _matches(name: str, digests: list[hashlib._Hash]) -> bool:
    if SHA256_NAME.match(name):
        return digests[0].hexdigest() == name
    return len(digests) < 2 or digests[1].hexdigest() == name


def _place_link(where: Path, blob: Path) -> None:
    """A relative link to `blob`, as the hub writes them, made aside and renamed."""
    target = os.path.relpath(blob, where.parent)
    if where.is_symlink() and os.readlink(where) == target:
        return
    swap_link(str(where), target, str(aside_path(where)))


def _some(paths: list[str], most: int = 3) -> str:
    shown = ", ".join(paths[:most])
    return shown + (f" and {len(paths) - most} more" if len(paths) > most else "")


# -- from the Hub ---------------------------------------------------------------------------

def _download(staging: Path, repo: RepoRef, hashes: HashCache) -> StageResult:
    """Download with huggingface_hub (it resumes and skips what is there by itself), then
    check every needed file against the Hub's listing, then commit."""
    from huggingface_hub import HfApi, hf_api, snapshot_download

    api = HfApi()
    repo_dir = staging / repo.folder
    try:
        commit = api.model_info(repo.id, revision=repo.revision).sha
        assert commit is not None, "the Hub named no commit"
        listing = {f.path: f for f in api.list_repo_tree(repo.id, revision=commit,
                                                         recursive=True)
                   if isinstance(f, hf_api.RepoFile)}
        needed = repo.select(sorted(listing))
        if not needed:
            raise StagingError(f"no file of {repo} matches allow_patterns "
                               f"{list(repo.allow_patterns or [])}")
        before = {path for path in needed if (repo_dir / "snapshots" / commit / path).exists()}
        # The commit, not the branch: the files are those of the listing even if the branch
        # moves meanwhile, and huggingface_hub writes no ref before they are all there.
        snapshot_download(repo.id, revision=commit, cache_dir=staging,
                          allow_patterns=list(repo.allow_patterns)
                          if repo.allow_patterns is not None else None)
    except ClusterprepError:
        raise
    except Exception as e:  # also a mirror's malformed answer: this repo fails, not the tool
        raise StagingError(f"cannot download {repo}: {type(e).__name__}: "
                           f"{str(e).splitlines()[0] if str(e) else ''}") from e
    wrong = [f"{path} ({why})" for path in needed
             if (why := _against_listing(repo_dir, commit, listing[path], hashes))]
    if wrong:
        raise StagingError(f"{repo}: {len(wrong)} downloaded files differ from the Hub's "
                           f"listing ({_some(wrong)}); they were removed and nothing was "
                           "staged: run again")
    files = {path: (_listed_blob(f), f.size) for path, f in listing.items()}
    for path in needed:  # as huggingface_hub named them (checked above: the links exist)
        files[path] = (Path(os.readlink(repo_dir / "snapshots" / commit / path)).name,
                       listing[path].size)
    _commit(staging, repo, StagedRevision(repo.id, commit, files, set(needed)))
    return StageResult(repo, DOWNLOADED, commit, len(needed),
                       sum(listing[path].size for path in needed if path not in before))


def _against_listing(repo_dir: Path, commit: str, listed: RepoFile, hashes: HashCache) -> str:
    """Why a downloaded file is not the one the Hub lists ('' when it is). A wrong blob is
    removed, so that a rerun downloads it again; a right one gets a relative link."""
    blob = _blob_of(repo_dir, commit, listed.path)
    if blob is None or not blob.is_file():
        return "not downloaded"
    if blob.stat().st_size != listed.size:
        why = f"{blob.stat().st_size} bytes, listed {listed.size}"
    elif listed.lfs is not None:
        why = "" if hashes.sha256(blob) == listed.lfs.sha256 else "sha256 differs"
    else:
        why = "" if _git_sha1(blob) == listed.blob_id else "git blob sha1 differs"
    if why:
        blob.unlink()
    else:
        _place_link(repo_dir / "snapshots" / commit / listed.path, blob)
    return why


def _blob_of(repo_dir: Path, commit: str, path: str) -> Path | None:
    """The blob a snapshot link leads to (None: no link)."""
    link = repo_dir / "snapshots" / commit / path
    try:
        return Path(os.path.normpath(link.parent / os.readlink(link)))
    except OSError:
        return None


def _listed_blob(listed: RepoFile) -> str:
    """The name the hub gives a file's blob: its sha256 when stored with LFS, else its git
    blob sha1."""
    return listed.lfs.sha256 if listed.lfs is not None else listed.blob_id
