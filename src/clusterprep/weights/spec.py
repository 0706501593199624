"""What weights a ready node needs: the `[weights]` table of a recipe, typed and validated.

```toml
[weights]
repos = [{ id = "org/name", revision = "main", allow_patterns = ["vae/"] }, ...]
staging = "/shared/hf-hub"                              # default: {shared}/hf-hub

[[weights.place]]                # a file of a repo, at a path of the code ([repo] path)
repo = "org/name"
file = "model.pth"
at = "pretrained_models/model.pth"

[[weights.load]]                 # a command that loads models as the code does (verify --load)
name = "vae"
command = "python -c 'from diffusers import AutoencoderKL; ...'"
timeout = 600                                          # seconds (default 600)
gpu = false                      # true: only on nodes with a GPU
```

`revision` defaults to "main"; without `allow_patterns` the whole repo is needed. The patterns
mean what they mean to huggingface_hub's `snapshot_download` (its own matcher decides).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from clusterprep.errors import ClusterprepError

_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
_REVISION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_./-]*$")
_REPO_KEYS = ("id", "revision", "allow_patterns")
_PLACE_KEYS = ("repo", "file", "at")
_LOAD_KEYS = ("name", "command", "timeout", "gpu")
LOAD_TIMEOUT = 600.0


class WeightsSpecError(ClusterprepError):
    """A `[weights]` table (or `--repo` option) that cannot be used; names its source."""

    def __init__(self, source: str, message: str) -> None:
        self.source = source
        self.detail = message
        super().__init__(f"{source}: {message}")


@dataclass(frozen=True)
class RepoRef:
    """One Hugging Face model repo at one revision (a branch, tag or commit hash), and the
    files of it that are needed (`allow_patterns`; None: all of them)."""

    id: str
    revision: str = "main"
    allow_patterns: tuple[str, ...] | None = None

    @property
    def folder(self) -> str:
        """The repo's folder in a hub cache: `models--org--name`."""
        return "models--" + self.id.replace("/", "--")

    def select(self, paths: Iterable[str]) -> list[str]:
        """The paths of `paths` this repo needs, as `snapshot_download(allow_patterns=...)`
        would choose them, in their order."""
        from huggingface_hub.utils import filter_repo_objects

        patterns = list(self.allow_patterns) if self.allow_patterns is not None else None
        return list(filter_repo_objects(list(paths), allow_patterns=patterns))

    def __str__(self) -> str:
        return f"{self.id}@{self.revision}"


@dataclass(frozen=True)
class Placement:
    """A file of a staged repo, linked at a path of the code on every node (`at`, absolute)."""

    repo: RepoRef
    file: str
    at: Path


@dataclass(frozen=True)
class Load:
    """A command that loads models the way the training code does, run on every node inside
    the env, in the code's folder, offline (`weights verify --load`)."""

    name: str
    command: str
    timeout: float = LOAD_TIMEOUT
    gpu: bool = False


@dataclass(frozen=True)
class WeightsSpec:
    """The repos every node must hold, where they are staged (a hub cache layout), and the
    files placed at paths of the code."""

    repos: tuple[RepoRef, ...]
    staging: Path
    placements: tuple[Placement, ...] = ()
    code: Path | None = None
    loads: tuple[Load, ...] = ()

    @classmethod
    def from_table(cls, table: dict[str, Any], shared: Path, source: str,
                   code: Path | None = None) -> WeightsSpec:
        """Validate a `[weights]` TOML table; `source` names the file in every error. `code` is
        the recipe's `[repo] path`, which placements are relative to."""
        unknown = sorted(set(table) - {"repos", "staging", "place", "load"})
        if unknown:
            raise WeightsSpecError(source, f"[weights]: unknown key {unknown[0]!r} "
                                           "(known: repos, staging, place, load)")
        repos = table.get("repos", [])
        if not isinstance(repos, list):
            raise WeightsSpecError(source, "[weights] repos must be a list of "
                                           '{ id = "org/name", revision = "..." }')
        refs = _unique([_repo_from_table(item, source, i) for i, item in enumerate(repos, 1)],
                       source)
        staging = table.get("staging")
        if staging is not None and not isinstance(staging, str):
            raise WeightsSpecError(source, "[weights] staging must be a path (a string)")
        path = Path(staging.replace("{shared}", str(shared))) if staging else shared / "hf-hub"
        if not path.is_absolute():
            raise WeightsSpecError(source, f"[weights] staging must be absolute, not {path}")
        places = table.get("place", [])
        if not isinstance(places, list):
            raise WeightsSpecError(source, "[weights] place must be an array of tables: "
                                           "[[weights.place]] with repo, file, at")
        placements = tuple(_placement_from_table(item, refs, code, source, i)
                           for i, item in enumerate(places, 1))
        _no_two_at_one_path(placements, source)
        loads = table.get("load", [])
        if not isinstance(loads, list):
            raise WeightsSpecError(source, "[weights] load must be an array of tables: "
                                           "[[weights.load]] with name, command")
        return cls(refs, path, placements, code,
                   _unique_names([_load_from_table(item, source, i)
                                  for i, item in enumerate(loads, 1)], source))

    def only(self, repos: tuple[RepoRef, ...], staging: Path | None) -> WeightsSpec:
        """This spec narrowed to `repos` (from `--repo`; a repo it lists keeps its
        allow_patterns) and maybe another staging cache; placements of the others go."""
        known = {(r.id, r.revision): r for r in self.repos}
        chosen = tuple(known.get((r.id, r.revision), r) for r in repos)
        kept = tuple(p for p in self.placements if p.repo in chosen)
        return WeightsSpec(chosen, staging or self.staging, kept, self.code, self.loads)


def _table(item: object, keys: tuple[str, ...], source: str, where: str,
           expected: str) -> dict[str, Any]:
    """`item` as an entry's table of only the `keys` it may have; else the error naming it."""
    if not isinstance(item, dict):
        raise WeightsSpecError(source, f"{where}: expected {expected}, got {item!r}")
    unknown = sorted(set(item) - set(keys))
    if unknown:
        raise WeightsSpecError(source, f"{where}: unknown key {unknown[0]!r} "
                                       f"(known: {', '.join(keys)})")
    return item


def _repo_from_table(item: object, source: str, index: int) -> RepoRef:
    where = f"[weights] repos entry {index}"
    item = _table(item, _REPO_KEYS, source, where, '{ id = "org/name" }')
    ref = repo_ref(item.get("id"), item.get("revision", "main"), source, where)
    patterns = item.get("allow_patterns")
    if patterns is None:
        return ref
    if (not isinstance(patterns, list) or not patterns
            or not all(isinstance(p, str) and p for p in patterns)):
        raise WeightsSpecError(source, f"{where}: allow_patterns must be a non-empty list of "
                                       f'patterns, as for snapshot_download (["vae/"]), '
                                       f"not {patterns!r}")
    return RepoRef(ref.id, ref.revision, tuple(patterns))


def repo_ref(repo_id: object, revision: object, source: str, where: str = "") -> RepoRef:
    """A validated RepoRef; errors name `source` and `where` (the entry, where it has one)."""
    at = f"{where}: " if where else ""
    if not isinstance(repo_id, str) or not _REPO_ID.match(repo_id):
        raise WeightsSpecError(source, f"{at}repo id must look like org/name, got {repo_id!r}")
    if not isinstance(revision, str) or not _REVISION.match(revision) or ".." in revision:
        raise WeightsSpecError(source, f"{at}bad revision {revision!r}")
    return RepoRef(repo_id, revision)


def parse_repo_option(text: str) -> RepoRef:
    """`--repo org/name[@revision]`."""
    repo_id, _, revision = text.partition("@")
    return repo_ref(repo_id, revision or "main", "--repo")


def _placement_from_table(item: object, repos: tuple[RepoRef, ...], code: Path | None,
                          source: str, index: int) -> Placement:
    where = f"[[weights.place]] entry {index}"
    if not isinstance(item, dict):
        raise WeightsSpecError(source, f"{where}: expected a table with repo, file, at")
    unknown = sorted(set(item) - set(_PLACE_KEYS))
    missing = [key for key in _PLACE_KEYS if not isinstance(item.get(key), str)]
    if unknown or missing:
        raise WeightsSpecError(source, f"{where}: " + (
            f"unknown key {unknown[0]!r}" if unknown else f"{missing[0]} must be a string") +
            f" (keys: {', '.join(_PLACE_KEYS)})")
    repo = next((r for r in repos if r.id == item["repo"]), None)
    if repo is None:
        raise WeightsSpecError(source, f"{where}: repo {item['repo']!r} is not in [weights] "
                                       "repos: list it there too, so it is staged and synced")
    file = _relative(item["file"], source, f"{where}: file")
    if not repo.select([file]):
        raise WeightsSpecError(source, f"{where}: {file} is not among the files of {repo.id} "
                                       f"that allow_patterns {list(repo.allow_patterns or [])} "
                                       "select: it would never be staged")
    if code is None:
        raise WeightsSpecError(source, f"{where}: `at` is a path of the code, and this recipe "
                                       "has no [repo] section saying where the code is")
    return Placement(repo, file, code / _relative(item["at"], source, f"{where}: at"))


def _load_from_table(item: object, source: str, index: int) -> Load:
    where = f"[[weights.load]] entry {index}"
    item = _table(item, _LOAD_KEYS, source, where, "a table with name, command")
    for key in ("name", "command"):
        if not isinstance(item.get(key), str) or not item[key].strip():
            raise WeightsSpecError(source, f"{where}: {key} must be a non-empty string")
    timeout = item.get("timeout", LOAD_TIMEOUT)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
        raise WeightsSpecError(source, f"{where}: timeout must be a number of seconds above 0, "
                                       f"not {timeout!r}")
    gpu = item.get("gpu", False)
    if not isinstance(gpu, bool):
        raise WeightsSpecError(source, f"{where}: gpu must be true or false, not {gpu!r}")
    return Load(item["name"], item["command"], float(timeout), gpu)


def _unique_names(loads: list[Load], source: str) -> tuple[Load, ...]:
    seen: set[str] = set()
    for load in loads:
        if load.name in seen:
            raise WeightsSpecError(source, f"[[weights.load]] names two loads {load.name!r}")
        seen.add(load.name)
    return tuple(loads)


def _relative(text: str, source: str, where: str) -> str:
    path = PurePosixPath(text)
    if not text or path.is_absolute() or ".." in path.parts or str(path) == ".":
        raise WeightsSpecError(source, f"{where} must be a relative path inside its folder, "
                                       f"without '..', not {text!r}")
    return str(path)


def _no_two_at_one_path(placements: tuple[Placement, ...], source: str) -> None:
    seen: set[Path] = set()
    for placement in placements:
        if placement.at in seen:
            raise WeightsSpecError(source, f"[[weights.place]] places two files at "
                                           f"{placement.at}")
        seen.add(placement.at)


def _unique(refs: list[RepoRef], source: str) -> tuple[RepoRef, ...]:
    seen: set[str] = set()
    for ref in refs:
        if ref.id in seen:
            raise WeightsSpecError(source, f"[weights] lists {ref.id} twice")
        seen.add(ref.id)
    return tuple(refs)
