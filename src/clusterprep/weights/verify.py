"""Is every node's Hugging Face cache what was staged? One offline probe per node.

Per node and repo: complete, missing files (named), corrupt files (named, with why), and
revisions the node holds that were not staged. Sizes are compared by default, with a file
hashed unless its stat still matches the stamp clusterprep took when it wrote and hashed it
(size, mtime, ctime, inode: any write since changes the ctime); `full` hashes every file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from clusterprep.errors import NodeError
from clusterprep.events import JsonLines
from clusterprep.fleet import Fleet
from clusterprep.fleet.transport import OutputCallback
from clusterprep.inventory import Node
from clusterprep.weights.answers import CacheAnswer
from clusterprep.weights.manifest import Manifest
from clusterprep.weights.progress import NodeBytesListener


@dataclass
class RepoState:
    """One repo on one node. Paths are relative to the repo's folder (`blobs/HASH`)."""

    repo: str                       # org/name
    revisions: list[str]
    missing: list[str] = field(default_factory=list)
    corrupt: list[tuple[str, str]] = field(default_factory=list)
    extra_revisions: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.missing and not self.corrupt


@dataclass
class NodeCache:
    """One node's cache, or why it could not be read."""

    node: str
    cache: str | None = None
    cache_source: str | None = None
    repos: list[RepoState] = field(default_factory=list)
    sees_staging: bool = False      # it read back the token the head wrote into the staging
    error: NodeError | None = None

    @property
    def complete(self) -> bool:
        return self.error is None and all(r.complete for r in self.repos)


@dataclass
class VerifyReport:
    manifest: Manifest
    nodes: list[NodeCache]
    full: bool
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        return not self.interrupted and all(n.complete for n in self.nodes)


async def check_caches(
    fleet: Fleet,
    manifest: Manifest,
    *,
    full: bool = False,
    for_sync: bool = False,
    nodes: list[Node] | None = None,
    timeout: float | None = None,
    hashing: NodeBytesListener | None = None,
    staging_token: tuple[str, str] | None = None,
) -> tuple[list[NodeCache], dict[str, list[str]], bool]:
    """Probe every node's cache against the manifest.

    `for_sync` also hashes files clusterprep has no stamp for (a cache filled by hand), so
    that only what differs is sent, and records stamps for the files found right. `hashing`
    hears how many bytes each node has hashed so far. `staging_token` (path, value): each node
    says whether it reads that value there.
    Returns the per-node states, the raw bad paths per node, and whether interrupted.
    """
    payload = {
        "entries": [e.as_list() for e in manifest.entries],
        "repos": list(manifest.folders),
        "full": full,
        "hash_unstamped": for_sync,  # and records stamps: a sync writes the cache anyway
        "staging_token": list(staging_token) if staging_token else None,
    }
    results, interrupted = await fleet.probe(
        "hfcache", payload, nodes=nodes, timeout=timeout,
        on_output=_hashing_reader(hashing) if hashing else None, shape=CacheAnswer)
    states, bad = [], {}
    for result in results:
        if result.answer is None:
            states.append(NodeCache(result.node, error=result.error))
            continue
        states.append(_node_cache(result.node, result.answer, manifest))
        bad[result.node] = result.answer.bad
    return states, bad, interrupted


def _hashing_reader(listener: NodeBytesListener) -> OutputCallback:
    """Reads the progress lines the probe prints while it hashes, as they arrive."""

    def on_event(node: str, event: dict[str, Any]) -> None:
        if event.get("event") == "progress":
            listener.advanced(node, int(event["bytes"]))

    return JsonLines(on_event)


def _node_cache(node: str, answer: CacheAnswer, manifest: Manifest) -> NodeCache:
    repos = {folder: RepoState(refs[0].id, [r.revision for r in refs])
             for folder, refs in manifest.folders.items()}
    for path in answer.missing:
        folder, _, inside = path.partition("/")
        repos[folder].missing.append(inside)
    for corrupt in answer.corrupt:
        folder, _, inside = corrupt.path.partition("/")
        repos[folder].corrupt.append((inside, corrupt.reason))
    for folder, revisions in answer.extra_revisions.items():
        repos[folder].extra_revisions.extend(revisions)
    return NodeCache(node, answer.cache, answer.cache_source, list(repos.values()),
                     answer.sees_staging)


async def verify(fleet: Fleet, manifest: Manifest, *, full: bool = False,
                 timeout: float | None = None,
                 listener: NodeBytesListener | None = None) -> VerifyReport:
    """Compare every node's cache with the staged manifest; read-only, offline. With `full`,
    `listener` hears how far each node's hashing has got."""
    listener = listener or NodeBytesListener()
    if full:
        size = sum(entry.size for entry in manifest.files)
        listener.planned({node.name: size for node in fleet.inventory.nodes}, size)
    states, _, interrupted = await check_caches(fleet, manifest, full=full, timeout=timeout,
                                                hashing=listener if full else None)
    for state in states:
        listener.finished(state.node)
    return VerifyReport(manifest, states, full, interrupted)
