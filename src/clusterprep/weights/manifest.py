"""The manifest of a staged Hugging Face cache: every file and link a node must hold.

An entry is a path relative to the cache root (`models--org--name/blobs/HASH`), its kind (a
regular file, or a symlink kept relative, as the hub writes them), and a file's size and
sha256 or a link's target. Hashes are kept in `STAGING/.clusterprep-manifest.json`, keyed by
size and mtime, so only files that changed since the last run are hashed again.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clusterprep.errors import ClusterprepError
from clusterprep.weights.spec import RepoRef

HASH_CACHE = ".clusterprep-manifest.json"
FILE, SYMLINK = "file", "symlink"
_SHA256_NAME = re.compile(r"^[0-9a-f]{64}$")
_SKIPPED_SUFFIXES = (".incomplete", ".clusterprep-partial", ".lock")


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
    """Every entry of the staged repos, files before links, in a stable order."""

    root: Path
    repos: tuple[RepoRef, ...]
    entries: tuple[Entry, ...]

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


def resolve_revision(repo_dir: Path, revision: str) -> str | None:
    """The commit a revision names in a hub cache (`refs/REV`, or a snapshot folder)."""
    ref = repo_dir / "refs" / revision
    if ref.is_file():
        return ref.read_text().strip()
    if (repo_dir / "snapshots" / revision).is_dir():
        return revision
    return None


def build(staging: Path, repos: tuple[RepoRef, ...]) -> Manifest:
    """The manifest of `repos` in the staging cache. Raises StagingError for what is absent."""
    cache = _load_hash_cache(staging)
    used: dict[str, list[Any]] = {}
    entries: list[Entry] = []
    for repo in repos:
        repo_dir = staging / repo.folder
        commit = resolve_revision(repo_dir, repo.revision) if repo_dir.is_dir() else None
        if commit is None or not (repo_dir / "snapshots" / commit).is_dir():
            raise StagingError(f"{repo} is not staged in {staging}: run "
                               f"`clusterprep weights stage --repo {repo.id}@{repo.revision}`")
    for folder in dict.fromkeys(r.folder for r in repos):  # two revisions: one folder
        entries.extend(_walk(staging, staging / folder, cache, used))
    if any(cache.get(path) != known for path, known in used.items()):
        _save_hash_cache(staging, {**cache, **used})
    entries.sort(key=lambda e: (e.kind != FILE, e.path))
    return Manifest(staging, repos, tuple(entries))


def _walk(staging: Path, repo_dir: Path, cache: dict[str, list[Any]],
          used: dict[str, list[Any]]) -> list[Entry]:
    entries = []
    for folder, dirs, names in os.walk(repo_dir):
        dirs.sort()
        for name in sorted(names) + [d for d in dirs if os.path.islink(os.path.join(folder, d))]:
            if name.endswith(_SKIPPED_SUFFIXES):
                continue
            full = os.path.join(folder, name)
            rel = os.path.relpath(full, staging)
            if os.path.islink(full):
                entries.append(Entry(rel, SYMLINK, target=_relative_target(staging, full)))
                continue
            st = os.stat(full)
            known = cache.get(rel)
            if known is not None and known[:2] == [st.st_size, st.st_mtime_ns]:
                sha = known[2]
            else:
                sha = sha256_file(full)
                if folder.endswith("/blobs") and _SHA256_NAME.match(name) and sha != name:
                    raise StagingError(f"staged blob {full} is damaged: its sha256 is {sha}; "
                                       "delete it and stage again")
            used[rel] = [st.st_size, st.st_mtime_ns, sha]
            entries.append(Entry(rel, FILE, st.st_size, sha))
    return entries


def _relative_target(staging: Path, link: str) -> str:
    """A link's target, relative; an absolute link into the staged repo is made relative."""
    target = os.readlink(link)
    repo_dir = os.path.join(str(staging), os.path.relpath(link, staging).split("/", 1)[0])
    resolved = os.path.normpath(os.path.join(os.path.dirname(link), target))
    if not resolved.startswith(repo_dir + os.sep):
        raise StagingError(f"staged link {link} points outside its repo ({target})")
    return os.path.relpath(resolved, os.path.dirname(link)) if os.path.isabs(target) else target


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
    aside = staging / f"{HASH_CACHE}.{os.getpid()}"
    try:
        aside.write_text(json.dumps(cache))
        os.replace(aside, staging / HASH_CACHE)
    except OSError:
        pass  # a read-only staging cache is hashed again next time
