"""The manifest of a staged Hugging Face cache: every file and link a node must hold.

An entry is a path relative to the cache root (`models--org--name/blobs/HASH`), its kind (a
regular file, or a symlink kept relative, as the hub writes them), and a file's size and
sha256 or a link's target. Per repo: its ref, and the snapshot link and blob of each file it
needs (its allow_patterns over the revision's file list), taken from the revision's staging
record (`weights/record.py`): a repo that was not staged whole has none, and no manifest.
Hashes are kept in `STAGING/.clusterprep-manifest.json`, keyed by size and mtime, so only
files that changed since the last run are hashed again.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clusterprep import suggest
from clusterprep.errors import ClusterprepError
from clusterprep.localfiles import write_atomically
from clusterprep.weights.record import adopt_advice, aside_path, committed, unrecorded
from clusterprep.weights.spec import RepoRef

HASH_CACHE = ".clusterprep-manifest.json"
FILE, SYMLINK = "file", "symlink"
SHA256_NAME = re.compile(r"^[0-9a-f]{64}$")


class StagingError(ClusterprepError):
    """The staging cache lacks a repo or revision, or holds a damaged file."""


@dataclass(frozen=True)
class Entry:
    """One file or symlink of the staged cache."""

    path: str
    kind: str
    size: int = 0
    sha256: str | None = None
    target: str | None = None

    @property
    def repo_folder(self) -> str:
        return self.path.split("/", 1)[0]

    def as_list(self) -> list[Any]:
        return [self.path, "f" if self.kind == FILE else "l", self.size, self.sha256, self.target]


@dataclass(frozen=True)
class Manifest:
    """Every entry of the staged repos, files before links, in a stable order; `commits`:
    the commit each repo's revision names."""

    root: Path
    repos: tuple[RepoRef, ...]
    entries: tuple[Entry, ...]
    commits: dict[RepoRef, str] = field(default_factory=dict)

    @property
    def files(self) -> list[Entry]:
        return [e for e in self.entries if e.kind == FILE]

    @property
    def links(self) -> list[Entry]:
        return [e for e in self.entries if e.kind == SYMLINK]

    @property
    def total_bytes(self) -> int:
        return sum(e.size for e in self.files)

    @property
    def folders(self) -> dict[str, list[RepoRef]]:
        """Each repo folder of the cache, and the revisions asked of it."""
        grouped: dict[str, list[RepoRef]] = {}
        for repo in self.repos:
            grouped.setdefault(repo.folder, []).append(repo)
        return grouped

    def by_path(self) -> dict[str, Entry]:
        return {e.path: e for e in self.entries}

    def snapshot_path(self, repo: RepoRef, file: str) -> str:
        """Where `file` of `repo` is in a hub cache (its snapshot link), relative to the root."""
        return f"{repo.folder}/snapshots/{self.commits[repo]}/{file}"

    def blob_of(self, repo: RepoRef, file: str) -> Entry | None:
        """The blob `file` of `repo` links to, when the manifest holds that file."""
        entries = self.by_path()
        link = entries.get(self.snapshot_path(repo, file))
        if link is None or link.target is None:
            return None
        return entries.get(os.path.normpath(os.path.join(os.path.dirname(link.path),
                                                         link.target)))


class HashCache:
    """The sha256 of the staging cache's files, remembered by (size, mtime)."""

    def __init__(self, staging: Path) -> None:
        self.staging = staging
        self.known = _load_hash_cache(staging)
        self.learned: dict[str, list[Any]] = {}

    def sha256(self, path: Path) -> str:
        """The file's sha256, hashed only when it changed since it was last hashed."""
        return self.known_sha256(path) or self.remember(path, sha256_file(path))

    def known_sha256(self, path: Path) -> str | None:
        """The sha256 hashed when the file was as it is now (size, mtime); None: unknown."""
        rel, st = os.path.relpath(path, self.staging), path.stat()
        known = self.learned.get(rel) or self.known.get(rel)
        if known is not None and known[:2] == [st.st_size, st.st_mtime_ns]:
            return known[2]
        return None

    def remember(self, path: Path, sha: str) -> str:
        """Note `sha` as the hash of `path` as it is now (hashed while it was written)."""
        st = path.stat()
        self.learned[os.path.relpath(path, self.staging)] = [st.st_size, st.st_mtime_ns, sha]
        return sha

    def save(self) -> None:
        """Add what was learned to the file (re-read first: another staging may have added)."""
        if self.learned:
            _save_hash_cache(self.staging, {**_load_hash_cache(self.staging), **self.learned})


def build(staging: Path, repos: tuple[RepoRef, ...]) -> Manifest:
    """The manifest of `repos` in the staging cache. Raises StagingError for what is absent."""
    hashes = HashCache(staging)
    entries: dict[str, Entry] = {}
    commits: dict[RepoRef, str] = {}
    records = {repo: committed(staging, repo) for repo in repos}
    _all_staged(staging, [repo for repo, record in records.items() if record is None])
    for repo in repos:
        record = records[repo]
        assert record is not None
        commits[repo] = record.commit
        ref = staging / repo.folder / "refs" / repo.revision
        if ref.is_file():
            entries[_rel(staging, ref)] = _file_entry(staging, ref, hashes)
        for path in record.needed(repo):
            blob = staging / repo.folder / "blobs" / record.files[path][0]
            link = staging / repo.folder / "snapshots" / record.commit / path
            entries[_rel(staging, blob)] = _file_entry(staging, blob, hashes)
            entries[_rel(staging, link)] = Entry(_rel(staging, link), SYMLINK,
                                                 target=os.path.relpath(blob, link.parent))
    hashes.save()
    ordered = sorted(entries.values(), key=lambda e: (e.kind != FILE, e.path))
    return Manifest(staging, repos, tuple(ordered), commits)


def _all_staged(staging: Path, absent: list[RepoRef]) -> None:
    """Raise for the repos not staged whole: those copied in by hand first, with the command
    that adopts them offline; then those to stage."""
    if not absent:
        return
    by_hand = [repo for repo in absent if unrecorded(staging, repo)]
    if by_hand:
        raise StagingError(adopt_advice(staging, by_hand))
    raise StagingError(f"{absent[0]} is not staged whole in {staging}: run `"
                       + suggest.command("weights", "stage", "--repo", str(absent[0])) + "`")


def _file_entry(staging: Path, path: Path, hashes: HashCache) -> Entry:
    sha = hashes.sha256(path)
    if path.parent.name == "blobs" and SHA256_NAME.match(path.name) and sha != path.name:
        raise StagingError(f"staged blob {path} is damaged: its sha256 is {sha}; "
                           f"run `{suggest.command('weights', 'stage')}` again to replace it")
    return Entry(_rel(staging, path), FILE, path.stat().st_size, sha)


def _rel(staging: Path, path: Path) -> str:
    return os.path.relpath(path, staging)


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _load_hash_cache(staging: Path) -> dict[str, list[Any]]:
    try:
        data = json.loads((staging / HASH_CACHE).read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _save_hash_cache(staging: Path, cache: dict[str, list[Any]]) -> None:
    final = staging / HASH_CACHE
    try:
        write_atomically(final, json.dumps(cache).encode(), aside=aside_path(final))
    except OSError:
        pass  # a read-only staging cache is hashed again next time
