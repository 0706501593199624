"""`weights verify --load`: every node loads every model, offline, as the training code does.

Identical caches are not yet a loadable model: the env, the code and the weights must work
together. Each node runs the recipe's `[[weights.load]]` commands one after another (all nodes
at once, one round trip each: `probes/weights_load.py`) inside the env, in the code's folder,
with the hub offline, so a missing file fails there, with the loader's own words, instead of
downloading. Without loads, what huggingface_hub itself proves offline stands in for them
(`probes/hub_offline.py`: each revision and needed file resolves, scan_cache_dir is clean).
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from clusterprep import probes, suggest
from clusterprep.errors import NodeError
from clusterprep.fleet import Fleet
from clusterprep.inventory import Node
from clusterprep.weights.answers import LoadsAnswer
from clusterprep.weights.manifest import Manifest
from clusterprep.weights.spec import LOAD_TIMEOUT, Load, RepoRef

OK, FAILED, TIMEOUT, SKIPPED, NOT_RUN = "ok", "failed", "timeout", "skipped", "not-run"
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
HUB_CHECK = "huggingface_hub offline"
TAIL_LINES = 12
class Outcome(Protocol):
    interrupted: bool

    @property
    def ok(self) -> bool: ...


Report = TypeVar("Report", bound=Outcome)
# What a loader says when the env, not the weights, is at fault.
_ENV_FAULT = re.compile(r"ModuleNotFoundError|ImportError|command not found")


@dataclass
class LoadOutcome:
    """One load on one node."""

    name: str
    state: str                      # ok | failed | timeout | skipped (gpu, and no GPU here) |
    #                                 not-run (the env or the code's folder is not there)
    seconds: float = 0.0
    tail: list[str] = field(default_factory=list)   # the loader's last lines, when it failed
    next_step: str | None = None

    @property
    def ok(self) -> bool:
        return self.state in (OK, SKIPPED)


@dataclass
class NodeLoads:
    node: str
    loads: list[LoadOutcome] = field(default_factory=list)
    gpus: int = 0
    error: NodeError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and all(load.ok for load in self.loads)


@dataclass
class LoadReport:
    nodes: list[NodeLoads]
    hub_check: bool                 # no [[weights.load]]: huggingface_hub's own offline check
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        return not self.interrupted and all(node.ok for node in self.nodes)


def hub_check(manifest: Manifest) -> Load:
    """The load that stands in for a recipe's own: huggingface_hub, in the env, offline."""
    repos = [{"id": repo.id, "revision": repo.revision,
              "allow_patterns": list(repo.allow_patterns) if repo.allow_patterns else None,
              "files": _snapshot_files(manifest, repo)} for repo in manifest.repos]
    return Load(HUB_CHECK, f"python - {shlex.quote(json.dumps(repos))}", LOAD_TIMEOUT)


def _snapshot_files(manifest: Manifest, repo: RepoRef) -> list[str]:
    """The files of `repo` the manifest holds, as paths in its snapshot (`vae/config.json`)."""
    prefix = f"{repo.folder}/snapshots/{manifest.commits[repo]}/"
    return [link.path[len(prefix):] for link in manifest.links if link.path.startswith(prefix)]


@dataclass
class WithLoads(Generic[Report]):
    """A command's report, and the loads run after it (None: not asked for)."""

    report: Report
    loads: LoadReport | None = None

    @property
    def ok(self) -> bool:
        return self.report.ok and (self.loads is None or self.loads.ok)

    @property
    def interrupted(self) -> bool:
        return self.report.interrupted or bool(self.loads and self.loads.interrupted)


async def then_load(work: Awaitable[Report], fleet: Fleet, loads: tuple[Load, ...],
                    manifest: Manifest | None, *, activate: str, cwd: str | None,
                    timeout: float | None = None,
                    ready: Callable[[Report], set[str]] | None = None) -> WithLoads[Report]:
    """`work`'s report, then the loads on every node (unless it was interrupted), or on the
    nodes `ready(report)` names: a node whose env could not even start has its cause told
    by `work` already, and a load there would only say it again."""
    report = await work
    if report.interrupted:
        return WithLoads(report)
    names = ready(report) if ready is not None else None
    nodes = [node for node in fleet.inventory.nodes if names is None or node.name in names]
    if not nodes:
        return WithLoads(report)
    return WithLoads(report, await run_loads(fleet, loads, manifest, activate=activate,
                                             cwd=cwd, timeout=timeout, nodes=nodes))


async def run_loads(fleet: Fleet, loads: tuple[Load, ...], manifest: Manifest | None, *,
                    activate: str, cwd: str | None, timeout: float | None = None,
                    nodes: list[Node] | None = None) -> LoadReport:
    """Run every load on every node; each node's loads one after another (models that fill a
    GPU's memory load in turn). Without `loads`, huggingface_hub's offline check of the
    `manifest`'s repos. `activate`: the env's activation lines; `cwd`: the code's folder."""
    own = bool(loads)
    if not own:
        assert manifest is not None, "the hub check needs the staged repos"
    chosen = loads or (hub_check(manifest),)
    script = None if own else probes.load("hub_offline")
    payload = {
        "activate": activate, "cwd": cwd, "env": OFFLINE, "tail": TAIL_LINES,
        "loads": [{"name": load.name, "command": load.command, "timeout": load.timeout,
                   "gpu": load.gpu, "stdin": script} for load in chosen],
    }
    limit = timeout or sum(load.timeout for load in chosen) + 60
    results, interrupted = await fleet.probe("weights_load", payload, timeout=limit,
                                             nodes=nodes, shape=LoadsAnswer)
    by_name = {load.name: load for load in chosen}
    nodes = []
    for result in results:
        answer = result.answer
        if answer is None:
            nodes.append(NodeLoads(result.node, error=result.error))
            continue
        nodes.append(NodeLoads(result.node, [
            LoadOutcome(item.name, item.state, item.seconds, item.tail,
                        _next_step(by_name[item.name], item.state, item.tail))
            for item in answer.loads if item.name in by_name], answer.gpus))
    return LoadReport(nodes, not own, interrupted)


def _next_step(load: Load, state: str, tail: list[str]) -> str | None:
    if state in (OK, SKIPPED):
        return None
    again = suggest.command("weights", "verify", "--load")
    if state == NOT_RUN:
        return (f"the env or the code is not on this node as the recipe says: "
                f"{suggest.command('up')}, then {again}")
    if state == TIMEOUT:
        return (f"it ran past its timeout ({load.timeout:g} s): raise `timeout` in its "
                f"[[weights.load]], or see what holds it on that node; then {again}")
    if any(_ENV_FAULT.search(line) for line in tail):
        return (f"the env lacks what the loader needs: {suggest.command('up')}, "
                f"{suggest.command('check')}, then {again}")
    return f"a file the loader reads is missing or wrong: {suggest.command('weights', 'sync')}, " \
           f"then {again}"
