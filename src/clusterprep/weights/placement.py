"""Files of staged repos placed at paths of the code (`[[weights.place]]`), on every node.

The code (`[repo] path`) is one folder that every node sees (the repo step clones it once, in
the shared folder), so a placement is one symlink there for all nodes. It leads to the file's
snapshot path in the nodes' own hub cache (`CACHE/models--org--name/snapshots/COMMIT/FILE`):
each node resolves it in its own cache, so training reads the node's local, verified copy
(not the shared folder, which every rank of every node would read at once), and no second
copy has to be kept right. One link can lead into one path only: when the nodes' caches sit
at different paths, the placement fails on them, naming the caches, rather than serve some
nodes a file that is not theirs.

The placement runs after a sync (`place=True`), and `weights verify` checks it: one probe per
node (`probes/placement.py`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, Protocol, TypeVar

from clusterprep import suggest
from clusterprep.errors import NodeError
from clusterprep.fleet import Fleet
from clusterprep.fleet.gather import fold
from clusterprep.weights.answers import Placed, PlacementAnswer
from clusterprep.weights.manifest import Manifest, StagingError
from clusterprep.weights.spec import Placement

OK, PLACED, FAILED = "ok", "placed", "failed"


@dataclass(frozen=True)
class Target:
    """A placement with what its link must lead to: the file's snapshot path, relative to a
    hub cache, and its size."""

    placement: Placement
    snapshot_path: str
    size: int


@dataclass
class NodePlacement:
    node: str
    state: str                 # ok | placed | failed
    reason: str | None = None


@dataclass
class PlacementResult:
    placement: Placement
    cache: str | None          # the nodes' hub cache (None: they have no single one)
    link: str | None           # what the link leads to, in that cache
    nodes: list[NodePlacement] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(n.state != FAILED for n in self.nodes)


@dataclass
class PlacementReport:
    results: list[PlacementResult] = field(default_factory=list)
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        return not self.interrupted and all(r.ok for r in self.results)


class NodeState(Protocol):
    """A node of a sync's or a verify's report: its name, its cache, or why it failed."""

    node: str
    cache: str | None
    error: NodeError | None


class NodesReport(Protocol):
    @property
    def nodes(self) -> Sequence[NodeState]: ...

    interrupted: bool

    @property
    def ok(self) -> bool: ...


Report = TypeVar("Report", bound=NodesReport)


@dataclass
class WithPlacements(Generic[Report]):
    """A sync's or a verify's report, and the placements made or checked after it."""

    report: Report
    placements: PlacementReport

    @property
    def ok(self) -> bool:
        return self.report.ok and self.placements.ok

    @property
    def interrupted(self) -> bool:
        return self.report.interrupted or self.placements.interrupted


def targets(manifest: Manifest, placements: tuple[Placement, ...]) -> list[Target]:
    """Each placement's target in the manifest. Raises StagingError for a file not staged."""
    found = []
    for placement in placements:
        blob = manifest.blob_of(placement.repo, placement.file) \
            if placement.repo in manifest.commits else None
        if blob is None:
            raise StagingError(f"[[weights.place]] {placement.at}: {placement.repo} has no "
                               f"staged file {placement.file}")
        found.append(Target(placement, manifest.snapshot_path(placement.repo, placement.file),
                            blob.size))
    return found


async def after(work: Awaitable[Report], fleet: Fleet, code: Path | None,
                wanted: list[Target], *, place: bool,
                timeout: float | None = None) -> WithPlacements[Report]:
    """`work`'s report, then the placements made (`place`) or checked on each node it found
    whole, in that node's cache."""
    report = await work
    if not wanted or code is None or report.interrupted:
        return WithPlacements(report, PlacementReport())
    caches = {n.node: n.cache for n in report.nodes if n.error is None and n.cache}
    return WithPlacements(report, await _on_nodes(fleet, code, wanted, caches, place, timeout))


async def _on_nodes(fleet: Fleet, code: Path, wanted: list[Target], caches: dict[str, str],
                    place: bool, timeout: float | None) -> PlacementReport:
    paths = sorted(set(caches.values()))
    if len(paths) > 1:
        where = "; ".join(f"{path} on {fold(n for n, c in caches.items() if c == path)}"
                          for path in paths)
        why = (f"the nodes' hub caches sit at different paths ({where}): one link in the "
               "shared code folder can lead into one of them only; give every node the same "
               f"HF_HUB_CACHE and run `{suggest.command('weights', 'sync')}` again")
        return PlacementReport([PlacementResult(t.placement, None, None,
                                                [NodePlacement(n, FAILED, why) for n in caches])
                                for t in wanted])
    if not paths:
        return PlacementReport()
    links = [f"{paths[0]}/{t.snapshot_path}" for t in wanted]
    payload = {"action": "place" if place else "check", "code": str(code),
               "items": [[str(t.placement.at), link, t.size] for t, link in zip(wanted, links)]}
    nodes = [node for node in fleet.inventory.nodes if node.name in caches]
    results, interrupted = await fleet.probe("placement", payload, nodes=nodes, timeout=timeout,
                                             shape=PlacementAnswer)
    report = PlacementReport([PlacementResult(t.placement, paths[0], link)
                              for t, link in zip(wanted, links)], interrupted)
    for result in results:
        if result.answer is not None:
            answers = result.answer.items
        else:
            assert result.error is not None
            answers = [Placed(FAILED, f"{result.error.kind}: {result.error.message}")] \
                * len(wanted)
        for placed, answer in zip(report.results, answers):
            reason = answer.reason
            if answer.fix:
                reason = f"{reason}: run `{suggest.command(*answer.fix)}`"
            placed.nodes.append(NodePlacement(result.node, answer.state, reason))
    return report
