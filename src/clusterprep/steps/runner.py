"""Drive steps over the fleet: every step on the nodes still in the running, then a result.

A node that fails a step (or cannot be reached) is skipped by the later steps and named in
the result; the others go on. When the head fails, later steps stop: they build on it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from clusterprep.errors import PROBE_FAILED, NodeError
from clusterprep import probes
from clusterprep.fleet import Fleet, ProbeResult
from clusterprep.inventory import Node
from clusterprep.recipe import Recipe
from clusterprep.steps import all_steps
from clusterprep.steps.base import (
    CHANGED, FAILED, SKIPPED, WOULD_CHANGE, Outcome, Probed, Step, StepContext,
)


@dataclass
class UpResult:
    """Per node, per step: ok | changed | failed | skipped (| would-change, for `plan`)."""

    recipe: str
    steps: list[str]
    nodes: list[str]
    head: str
    dry_run: bool
    outcomes: dict[str, dict[str, Outcome]] = field(default_factory=dict)  # step -> node -> ..
    interrupted: bool = False

    def outcome(self, step: str, node: str) -> Outcome:
        return self.outcomes[step][node]

    @property
    def failed_nodes(self) -> list[str]:
        return [n for n in self.nodes
                if any(self.outcomes[s][n].state == FAILED for s in self.outcomes)]

    @property
    def ok(self) -> bool:
        return not self.interrupted and not self.failed_nodes

    @property
    def changes(self) -> int:
        wanted = WOULD_CHANGE if self.dry_run else CHANGED
        return sum(o.state == wanted for by_node in self.outcomes.values()
                   for o in by_node.values())


class Listener:
    """Progress events; every method does nothing by default."""

    def step_started(self, step: Step, nodes: int) -> None: ...

    def step_finished(self, step: Step, outcomes: dict[str, Outcome]) -> None: ...


def select_steps(only: list[str] | None, skip: list[str] | None,
                 recipe: Recipe) -> list[Step]:
    steps = [s for s in all_steps() if (not only or s.name in only)
             and not (skip and s.name in skip)]
    if recipe.repo is None:
        steps = [s for s in steps if s.name != "repo"]
    return steps


async def run_steps(fleet: Fleet, recipe: Recipe, steps: list[Step], *, dry_run: bool = False,
                    timeout: float | None = None, listener: Listener | None = None) -> UpResult:
    """Run `steps` in order; `dry_run` (plan) probes only and reports what would change."""
    listener = listener or Listener()
    inventory = fleet.inventory
    ctx = StepContext(fleet, recipe, dry_run=dry_run, timeout=timeout)
    result = UpResult(recipe.source, [s.name for s in steps], inventory.names,
                      inventory.head.name, dry_run)
    active = list(inventory.nodes)
    stopped_by: str | None = None  # the step the head failed
    ahead: dict[str, Probed] = {}  # probe answers asked ahead, valid while nothing changes
    asked_ahead = False
    for index, step in enumerate(steps):
        targets = [] if stopped_by else active
        if (not asked_ahead and targets and step.needs_probe(ctx)
                and step.can_look_ahead(ctx)):
            ahead, asked_ahead = await look_ahead(ctx, steps[index:], targets), True
        listener.step_started(step, len(targets))
        outcomes = await step.run(ctx, targets, ahead.get(step.name)) if targets else {}
        if any(o.state == CHANGED for o in outcomes.values()):
            ahead = {}  # answers asked before this change may be stale: later steps ask again
        for name in inventory.names:
            if name not in outcomes:
                why = (f"the head failed {stopped_by}" if stopped_by
                       else "failed an earlier step")
                outcomes[name] = Outcome(SKIPPED, why)
        result.outcomes[step.name] = outcomes
        listener.step_finished(step, outcomes)
        active = [n for n in active if outcomes[n.name].state not in (FAILED, SKIPPED)]
        if not stopped_by and outcomes[inventory.head.name].state in (FAILED, SKIPPED):
            stopped_by = step.name
    result.interrupted = fleet.interrupted
    return result


async def look_ahead(ctx: StepContext, steps: list[Step], nodes: list[Node]) -> dict[str, Probed]:
    """Ask the probes of the coming steps that allow it, all in one round trip per node.

    On a cluster that is already set up (the common second `up`, or `plan`), this is the
    only round trip those steps make. Nothing to gain from a single step: then nothing is asked.
    """
    asked = []
    for step in steps:
        if not step.needs_probe(ctx):
            continue
        if not step.can_look_ahead(ctx):
            break  # its probe changes something: it and the steps after it ask for themselves
        asked.append(step)
    if len(asked) < 2:
        return {}
    calls = [{"name": step.probe_name, "source": probes.load(step.probe_name),
              "payload": step.payload(ctx)} for step in asked]
    results, _ = await ctx.fleet.probe("batch", {"calls": calls}, nodes=nodes,
                                       timeout=ctx.timeout)
    answers: dict[str, Probed] = {}
    for i, step in enumerate(asked):
        answers[step.name] = step.judge([_one_of(result, i) for result in results])
    return answers


def _one_of(batch: ProbeResult, index: int) -> ProbeResult:
    """The answer of the index-th probe inside one node's batch answer."""
    if batch.error is not None or batch.data is None:
        return batch
    call = batch.data["results"][index]
    if call["error"] is not None or call["output"] is None:
        message = f"probe {call['name']} failed: {call['error'] or 'no answer'}"
        return ProbeResult(batch.node, None, batch.command, NodeError(PROBE_FAILED, message))
    return ProbeResult(batch.node, json.loads(call["output"]), batch.command, None)


async def run_down(fleet: Fleet, recipe: Recipe, timeout: float | None = None) -> UpResult:
    """`down shell`: remove the managed ~/.bashrc block on every node."""
    from clusterprep.steps.shell import ShellStep

    inventory = fleet.inventory
    ctx = StepContext(fleet, recipe, timeout=timeout)
    removed = await ShellStep().remove(ctx, list(inventory.nodes))
    result = UpResult(recipe.source, ["shell"], inventory.names, inventory.head.name, False)
    result.outcomes["shell"] = {n: o or Outcome(FAILED, "no answer") for n, o in removed.items()}
    return result
