"""What a setup step is: probe every node, apply only what differs, verify; and its outcomes.

A step with `scope = "head"` changes something in the shared folder, so it applies once, on the
head, and then verifies on every node (they must all see the result). A step with
`scope = "all"` applies on each node that differs. Steps talk to nodes only through the Fleet.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import Any

from clusterprep.errors import NodeError
from clusterprep.fleet import Fleet, ProbeResult
from clusterprep.inventory import Node
from clusterprep.recipe import Recipe

OK, CHANGED, FAILED, SKIPPED, WOULD_CHANGE = "ok", "changed", "failed", "skipped", "would-change"
LOG_TAIL_LINES = 20


@dataclass
class Status:
    """A probe's verdict on one node: already right (`ok`), or not and why."""

    ok: bool
    reason: str
    conflict: bool = False  # wrong in a way `apply` must not touch (the user decides)
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class Outcome:
    """What a step did (or, under `plan`, would do) on one node."""

    state: str
    message: str = ""
    log: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class StepContext:
    """What every step gets: the fleet, the recipe, and whether this is a dry run (`plan`)."""

    fleet: Fleet
    recipe: Recipe
    dry_run: bool = False
    timeout: float | None = None

    @property
    def head(self) -> Node:
        return self.fleet.inventory.head

    @property
    def state_dir(self) -> str:
        """`{shared}/.clusterprep`: tokens, downloads and logs."""
        return f"{self.recipe.shared_dir}/.clusterprep"

    def log_path(self, step: str) -> str:
        return f"{self.state_dir}/logs/{step}.log"


Probed = dict[str, "Status | NodeError"]


class Step:
    """Base class. Subclasses set `name`, `scope`, `summary` and implement `payload`/`apply`.

    The default `run` is probe -> apply what differs -> verify, with the probe script
    `probes/<probe_name>.py` answering `{"ok", "reason", "conflict"?}`.
    """

    name = ""
    scope = "all"  # or "head"
    summary = ""
    probe_name = ""
    # False when `apply` already re-reads and checks what it wrote on the node, in the same
    # round trip: a separate verify round would only repeat that check.
    verify_after_apply = True

    def payload(self, ctx: StepContext) -> dict[str, Any]:
        raise NotImplementedError

    async def apply(self, ctx: StepContext, nodes: list[Node]) -> dict[str, Outcome | None]:
        """Change `nodes` (the head only, for head steps); None = done, else a FAILED Outcome."""
        raise NotImplementedError

    def needs_probe(self, ctx: StepContext) -> bool:
        """False when this run of the step decides from the recipe alone, asking no node."""
        return True

    def can_look_ahead(self, ctx: StepContext) -> bool:
        """True when this step's probe may be sent before the steps ahead of it have run, in
        one round trip with the others' (the runner then uses its answers while nothing has
        changed). False for a probe that changes something (the shared step's token)."""
        return True

    async def probe(self, ctx: StepContext, nodes: list[Node]) -> Probed:
        results, _ = await ctx.fleet.probe(self.probe_name, self.payload(ctx), nodes=nodes,
                                           timeout=ctx.timeout)
        return self.judge(results)

    def judge(self, results: list[ProbeResult]) -> Probed:
        """The per-node verdicts in this step's probe answers."""
        probed: Probed = {}
        for r in results:
            if r.error is not None:
                probed[r.node] = r.error
            elif r.data is not None and r.data.get("error"):
                probed[r.node] = NodeError("step", str(r.data["error"]))
            else:
                data = r.data or {}
                probed[r.node] = Status(bool(data.get("ok")), str(data.get("reason", "")),
                                        bool(data.get("conflict")), data)
        return probed

    async def run(self, ctx: StepContext, nodes: list[Node],
                  before: Probed | None = None) -> dict[str, Outcome]:
        """Probe (unless `before` already holds this step's answers for `nodes`), apply what
        differs, verify."""
        if before is None or any(node.name not in before for node in nodes):
            before = await self.probe(ctx, nodes)
        outcomes: dict[str, Outcome] = {}
        pending = []
        for node in nodes:
            status = before[node.name]
            if isinstance(status, NodeError):
                outcomes[node.name] = failed(status)
            elif status.conflict:
                outcomes[node.name] = Outcome(FAILED, status.reason)
            elif status.ok:
                outcomes[node.name] = Outcome(OK, status.reason)
            else:
                pending.append(node)
        if not pending:
            return outcomes
        if ctx.dry_run:
            for node in pending:
                status = before[node.name]
                assert isinstance(status, Status)
                via = " (done once, on the head)" if self.scope == "head" else ""
                outcomes[node.name] = Outcome(WOULD_CHANGE, status.reason + via)
            return outcomes
        if self.scope == "head":
            await self._apply_on_head(ctx, pending, outcomes)
        else:
            applied = await self.apply(ctx, pending)
            for node in pending:
                if applied.get(node.name) is not None:
                    outcomes[node.name] = applied[node.name]  # type: ignore[assignment]
        rest = [n for n in pending if n.name not in outcomes]
        if self.verify_after_apply:
            await self._verify(ctx, rest, outcomes)
        else:
            for node in rest:
                outcomes[node.name] = Outcome(CHANGED, "written and checked")
        return outcomes

    async def _apply_on_head(self, ctx: StepContext, pending: list[Node],
                             outcomes: dict[str, Outcome]) -> None:
        head = ctx.head
        if not any(node.name == head.name for node in pending):
            return  # the head is right; the others see something else: verify says so
        failure = (await self.apply(ctx, [head])).get(head.name)
        if failure is not None:
            outcomes[head.name] = failure
            for node in pending:
                if node.name != head.name:
                    outcomes[node.name] = Outcome(SKIPPED, f"{self.name} failed on the head")

    async def _verify(self, ctx: StepContext, nodes: list[Node],
                      outcomes: dict[str, Outcome]) -> None:
        if not nodes:
            return
        after = await self.probe(ctx, nodes)
        for node in nodes:
            status = after[node.name]
            if isinstance(status, NodeError):
                outcomes[node.name] = failed(status)
            elif status.ok:
                outcomes[node.name] = Outcome(CHANGED, status.reason)
            else:
                where = " (the head is right: is the shared folder the same here?)" \
                    if self.scope == "head" and node.name != ctx.head.name else ""
                outcomes[node.name] = Outcome(FAILED, f"still wrong after the change: "
                                                      f"{status.reason}{where}")


def failed(error: NodeError) -> Outcome:
    return Outcome(FAILED, f"{error.kind}: {error.message}")


async def run_logged(ctx: StepContext, node: Node, step: str, script: str) -> Outcome | None:
    """Run a bash script on `node`, all output to the step's log in the shared folder.

    Returns None on success, else a FAILED Outcome with the log's last lines and its path.
    """
    log = ctx.log_path(step)
    command = (
        f"mkdir -p {shlex.quote(ctx.state_dir + '/logs')} && "
        f"bash -c {shlex.quote(script)} > {shlex.quote(log)} 2>&1 < /dev/null; "
        f"rc=$?; [ $rc -eq 0 ] || tail -n {LOG_TAIL_LINES} {shlex.quote(log)}; exit $rc"
    )
    outcome = await ctx.fleet.run(command, timeout=ctx.timeout, nodes=[node])
    result = outcome.results[0]
    if result.error is not None:
        return Outcome(FAILED, f"{result.error.kind}: {result.error.message}", log=log)
    if result.exit_code != 0:
        tail = result.stdout.decode(errors="replace").rstrip()
        return Outcome(FAILED, f"exit code {result.exit_code}; last lines of {log}:\n{tail}",
                       log=log)
    return None
