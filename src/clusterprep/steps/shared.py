"""Step `shared`: the shared folder exists and is the same folder on every node.

The head writes a fresh random token into `{shared}/.clusterprep/shared-token`; every node
reads it back. A node that sees no folder, or a folder without that token (a local folder at
the same path), fails, and later steps skip it. Each node's free space is reported.
"""

from __future__ import annotations

import secrets

from clusterprep.errors import NodeError
from clusterprep.inventory import Node
from clusterprep.steps.base import (
    CHANGED, FAILED, OK, WOULD_CHANGE, Outcome, Probed, Status, Step, StepContext, failed,
)


class SharedStep(Step):
    name = "shared"
    scope = "head"
    summary = "the shared folder is the same folder on every node"
    probe_name = "shared"

    def __init__(self) -> None:
        self.token = ""
        self.mode = "read"

    def payload(self, ctx: StepContext) -> dict[str, object]:
        return {"dir": ctx.recipe.shared_dir, "token_file": f"{ctx.state_dir}/shared-token",
                "mode": self.mode, "token": self.token}

    def can_look_ahead(self, ctx: StepContext) -> bool:
        return False  # its probe writes a fresh token first: it cannot be asked ahead

    async def run(self, ctx: StepContext, nodes: list[Node],
                  before: Probed | None = None) -> dict[str, Outcome]:
        head = ctx.head
        outcomes: dict[str, Outcome] = {}
        created = False
        if ctx.dry_run:
            # Change nothing: compare every node with the token the head sees now, if any.
            self.mode, self.token = "read", ""
            seen = (await self.probe(ctx, [head]))[head.name]
            if isinstance(seen, NodeError):
                return {n.name: failed(seen) for n in nodes}
            if seen.data.get("reason") == "missing":
                return {n.name: Outcome(WOULD_CHANGE, f"would create {ctx.recipe.shared_dir} on "
                                        "the head, then check every node sees it") for n in nodes}
            self.token = seen.data.get("token") or ""
        else:
            self.mode, self.token = "write", secrets.token_hex(16)
            wrote = (await self.probe(ctx, [head]))[head.name]
            if isinstance(wrote, NodeError):
                outcome = failed(wrote)
                return {n.name: outcome if n.name == head.name else
                        Outcome(FAILED, "the head could not write the shared folder")
                        for n in nodes}
            created = bool(wrote.data.get("created"))
        self.mode = "read"
        seen_by = await self.probe(ctx, nodes)
        for node in nodes:
            status = seen_by[node.name]
            if isinstance(status, NodeError):
                outcomes[node.name] = failed(status)
                continue
            outcomes[node.name] = self._judge(ctx, status, created and node.name == head.name)
        return outcomes

    def _judge(self, ctx: StepContext, status: Status, created: bool) -> Outcome:
        folder = ctx.recipe.shared_dir
        free = status.data.get("free")
        data = {"free_bytes": free}
        if status.data.get("reason") == "missing":
            return Outcome(FAILED, f"{folder} does not exist on this node", data=data)
        if not status.ok:
            if ctx.dry_run and not self.token:
                return Outcome(WOULD_CHANGE, "not checked yet", data=data)
            return Outcome(FAILED, f"{folder} here is not the head's folder (the head's token "
                                   "is not in it): mount the shared folder", data=data)
        note = f"same folder; {_size(free)} free"
        if not status.data.get("writable"):
            note += "; not writable here"
        return Outcome(CHANGED if created else OK,
                       ("created; " if created else "") + note, data=data)


def _size(count: int | None) -> str:
    if count is None:
        return "? B"
    size = float(count)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1000
    return f"{size:.1f} PB"
