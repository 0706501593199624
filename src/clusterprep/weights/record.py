"""The record that a revision is staged whole: the commit point of `weights stage`.

`STAGING/.clusterprep-staged/models--org--name/COMMIT.json` holds the revision's own file list
(the Hub's listing, or the snapshot of the cache it was copied from: path -> blob name, size)
and which of those files are staged whole (copied or downloaded, then hashed and found right).
It is written, atomically, only once every file the repo needs is there and right; the ref
(`refs/main`) is written after it. A repo's revision is staged when its record says every
needed file is staged and those files are still there: half-staged data (an interrupted or
failed stage, a cache copied by hand) has no record, so it is never "present", never synced,
and no manifest is built from it.
"""

from __future__ import annotations

import json
import os
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from clusterprep import suggest
from clusterprep.localfiles import write_atomically
from clusterprep.weights.spec import RepoRef

RECORDS = ".clusterprep-staged"
PARTIAL = ".clusterprep-partial"
_ASIDE = re.compile(r"^\..+\.(?P<host>[^.]+)-(?P<pid>\d+)" + re.escape(PARTIAL) + "$")


@dataclass
class StagedRevision:
    """One revision of a repo in a staging cache: its files, and those staged whole."""

    repo: str
    commit: str
    files: dict[str, tuple[str, int | None]]     # path -> (blob name, size; None: unknown)
    staged: set[str] = field(default_factory=set)

    def needed(self, ref: RepoRef) -> list[str]:
        """The files `ref` needs (its allow_patterns over the revision's file list)."""
        return ref.select(sorted(self.files))

    def lacking(self, ref: RepoRef) -> list[str]:
        """The needed files not staged whole."""
        return [path for path in self.needed(ref) if path not in self.staged]

    def merged(self, older: StagedRevision | None) -> StagedRevision:
        """This record with what an older record of the same commit had staged (the same
        commit is the same content, whatever the source)."""
        if older is None:
            return self
        return StagedRevision(self.repo, self.commit, {**older.files, **self.files},
                              older.staged | self.staged)


def record_path(staging: Path, ref: RepoRef, commit: str) -> Path:
    return staging / RECORDS / ref.folder / f"{commit}.json"


def load(staging: Path, ref: RepoRef, commit: str) -> StagedRevision | None:
    """The record of `commit`, or None (absent or unreadable: as if never staged)."""
    try:
        data = json.loads(record_path(staging, ref, commit).read_text())
        files = {path: (blob, size) for path, (blob, size) in data["files"].items()}
        return StagedRevision(data["repo"], data["commit"], files, set(data["staged"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def save(staging: Path, ref: RepoRef, record: StagedRevision) -> None:
    """Write the record whole or not at all (aside, then renamed)."""
    final = record_path(staging, ref, record.commit)
    final.parent.mkdir(parents=True, exist_ok=True)
    data = {"repo": record.repo, "commit": record.commit,
            "files": {path: list(what) for path, what in sorted(record.files.items())},
            "staged": sorted(record.staged)}
    write_atomically(final, json.dumps(data, indent=1).encode(), aside=aside_path(final))


def resolve_revision(repo_dir: Path, revision: str) -> str | None:
    """The commit a revision names in a hub cache (`refs/REV`, or a snapshot folder)."""
    ref = repo_dir / "refs" / revision
    if ref.is_file():
        return ref.read_text().strip()
    if (repo_dir / "snapshots" / revision).is_dir():
        return revision
    return None


def committed(staging: Path, ref: RepoRef) -> StagedRevision | None:
    """The record of `ref`'s revision when every file it needs is staged whole and still
    there (each snapshot link leads to its blob, of its size); else None."""
    repo_dir = staging / ref.folder
    commit = resolve_revision(repo_dir, ref.revision) if repo_dir.is_dir() else None
    record = load(staging, ref, commit) if commit else None
    if record is None or record.lacking(ref):
        return None
    for path in record.needed(ref):
        blob, size = record.files[path]
        link = repo_dir / "snapshots" / record.commit / path
        try:
            if (os.path.normpath(link.parent / os.readlink(link)) != str(repo_dir / "blobs" / blob)
                    or (repo_dir / "blobs" / blob).stat().st_size != size):
                return None
        except OSError:
            return None
    return record


def unrecorded(staging: Path, ref: RepoRef) -> bool:
    """Whether the staging cache holds `ref`'s revision (its ref or snapshot folder) without
    a record that it was staged whole: a cache put there by hand, as the tutorial's `cp -r`."""
    repo_dir = staging / ref.folder
    commit = resolve_revision(repo_dir, ref.revision) if repo_dir.is_dir() else None
    return (commit is not None and (repo_dir / "snapshots" / commit).is_dir()
            and committed(staging, ref) is None)


def adopt_advice(staging: Path, refs: Iterable[RepoRef]) -> str:
    """What to say of repos found in the staging cache with no record: the offline command
    that checks them where they lie and records them (never a download first)."""
    refs = list(refs)
    repos = [word for ref in refs for word in ("--repo", str(ref))]
    return (f"{', '.join(map(str, refs))} {'is' if len(refs) == 1 else 'are'} in {staging} "
            "with no record of being staged and checked (copied there by hand, as the "
            "tutorial's `cp -r` does): check and adopt what is there in place, offline, with "
            f"`{suggest.command('weights', 'stage', '--from-cache', str(staging), *repos)}`")


def aside_path(final: Path) -> Path:
    """Where a file is written before it is renamed to `final`: named after this host and
    process, so that two stagings at once never write the same file."""
    return final.with_name(f".{final.name}.{_host()}-{os.getpid()}{PARTIAL}")


def remove_stale_asides(folders: Iterable[Path]) -> None:
    """Remove what stagings on this host left aside when they died (their process is gone);
    files of living stagings, or of other hosts, are theirs."""
    host = _host()
    for top in folders:
        for folder, _, names in os.walk(top):
            for name in names:
                match = _ASIDE.match(name)
                if match and match["host"] == host and not _alive(int(match["pid"])):
                    Path(folder, name).unlink(missing_ok=True)


def _host() -> str:
    return socket.gethostname().split(".")[0]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
