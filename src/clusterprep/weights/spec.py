"""What weights a ready node needs: the `[weights]` table of a recipe, typed and validated.

```toml
[weights]
repos = [{ id = "org/name", revision = "main" }, ...]   # revision defaults to "main"
staging = "/shared/hf-hub"                              # default: {shared}/hf-hub
```
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clusterprep.errors import ClusterprepError

_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
_REVISION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_./-]*$")


class WeightsSpecError(ClusterprepError):
    """A `[weights]` table (or `--repo` option) that cannot be used; names its source."""

    def __init__(self, source: str, message: str) -> None:
        self.source = source
        super().__init__(f"{source}: {message}")


@dataclass(frozen=True)
class RepoRef:
    """One Hugging Face model repo at one revision (a branch, tag or commit hash)."""

    id: str
    revision: str = "main"

    @property
    def folder(self) -> str:
        """The repo's folder in a hub cache: `models--org--name`."""
        return "models--" + self.id.replace("/", "--")

    def __str__(self) -> str:
        return f"{self.id}@{self.revision}"


@dataclass(frozen=True)
class WeightsSpec:
    """The repos every node must hold, and where they are staged (a hub cache layout)."""

    repos: tuple[RepoRef, ...]
    staging: Path

    @classmethod
    def from_table(cls, table: dict[str, Any], shared: Path, source: str) -> WeightsSpec:
        """Validate a `[weights]` TOML table; `source` names the file in every error."""
        unknown = sorted(set(table) - {"repos", "staging"})
        if unknown:
            raise WeightsSpecError(source, f"[weights]: unknown key {unknown[0]!r} "
                                           "(known: repos, staging)")
        repos = table.get("repos", [])
        if not isinstance(repos, list):
            raise WeightsSpecError(source, "[weights] repos must be a list of "
                                           '{ id = "org/name", revision = "..." }')
        refs = [_repo_from_table(item, source, i) for i, item in enumerate(repos, 1)]
        staging = table.get("staging")
        if staging is not None and not isinstance(staging, str):
            raise WeightsSpecError(source, "[weights] staging must be a path (a string)")
        path = Path(staging.replace("{shared}", str(shared))) if staging else shared / "hf-hub"
        if not path.is_absolute():
            raise WeightsSpecError(source, f"[weights] staging must be absolute, not {path}")
        return cls(_unique(refs, source), path)


def _repo_from_table(item: object, source: str, index: int) -> RepoRef:
    where = f"[weights] repos entry {index}"
    if not isinstance(item, dict):
        raise WeightsSpecError(source, f'{where}: expected {{ id = "org/name" }}, got {item!r}')
    unknown = sorted(set(item) - {"id", "revision"})
    if unknown:
        raise WeightsSpecError(source, f"{where}: unknown key {unknown[0]!r} (known: id, revision)")
    return repo_ref(item.get("id"), item.get("revision", "main"), source, where)


def repo_ref(repo_id: object, revision: object, source: str, where: str) -> RepoRef:
    """A validated RepoRef; errors name `source` and `where`."""
    if not isinstance(repo_id, str) or not _REPO_ID.match(repo_id):
        raise WeightsSpecError(source, f"{where}: repo id must look like org/name, got {repo_id!r}")
    if not isinstance(revision, str) or not _REVISION.match(revision) or ".." in revision:
        raise WeightsSpecError(source, f"{where}: bad revision {revision!r}")
    return RepoRef(repo_id, revision)


def parse_repo_option(text: str) -> RepoRef:
    """`--repo org/name[@revision]`."""
    repo_id, _, revision = text.partition("@")
    return repo_ref(repo_id, revision or "main", "--repo", repr(text))


def _unique(refs: list[RepoRef], source: str) -> tuple[RepoRef, ...]:
    seen: set[str] = set()
    for ref in refs:
        if ref.id in seen:
            raise WeightsSpecError(source, f"[weights] lists {ref.id} twice")
        seen.add(ref.id)
    return tuple(refs)

