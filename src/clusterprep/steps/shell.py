"""Step `shell`: a managed block at the top of every node's ~/.bashrc.

The block initialises conda (or the venv), activates the env when the recipe says so, and
exports the recipe's variables. It goes above the interactive guard of Debian's and Ubuntu's
.bashrc so that non-interactive `ssh node cmd` (what launchers run) gets it too.
"""

from __future__ import annotations

import shlex

from clusterprep.errors import NodeError
from clusterprep.activation import bashrc_lines
from clusterprep.inventory import Node
from clusterprep.recipe import Recipe
from clusterprep.steps.base import CHANGED, OK, Outcome, Step, StepContext, failed

BEGIN = "# >>> clusterprep >>>"
END = "# <<< clusterprep <<<"


def bashrc_block(recipe: Recipe) -> str:
    """The exact text of the block, markers included, ending with a newline."""
    lines = [
        BEGIN,
        f"# Managed by clusterprep (recipe {recipe.name}); `clusterprep down shell` removes it.",
        "# Above the interactive guard on purpose: non-interactive `ssh node cmd` needs it too.",
        *bashrc_lines(recipe.env, recipe.activate),
    ]
    for variable, value in recipe.exports.items():
        lines.append(f"export {variable}={shlex.quote(value)}")
    lines.append(END)
    return "\n".join(lines) + "\n"


class ShellStep(Step):
    name = "shell"
    scope = "all"
    summary = "~/.bashrc initialises the env, also for non-interactive ssh"
    probe_name = "shell"
    verify_after_apply = False  # the probe re-reads ~/.bashrc after writing it

    def __init__(self, mode: str = "probe") -> None:
        self.mode = mode

    def payload(self, ctx: StepContext) -> dict[str, object]:
        return {"block": bashrc_block(ctx.recipe), "mode": self.mode}

    async def apply(self, ctx: StepContext, nodes: list[Node]) -> dict[str, Outcome | None]:
        return await self._write(ctx, nodes, "apply")

    async def remove(self, ctx: StepContext, nodes: list[Node]) -> dict[str, Outcome | None]:
        """`down shell`: take the block out, leaving the file's other bytes as they were."""
        return await self._write(ctx, nodes, "remove")

    async def _write(self, ctx: StepContext, nodes: list[Node],
                     mode: str) -> dict[str, Outcome | None]:
        self.mode = mode
        try:
            probed = await self.probe(ctx, nodes)
        finally:
            self.mode = "probe"
        answers: dict[str, Outcome | None] = {}
        for node in nodes:
            status = probed[node.name]
            if isinstance(status, NodeError):
                answers[node.name] = failed(status)
            elif mode == "remove":
                answers[node.name] = Outcome(CHANGED if status.data.get("changed") else OK,
                                             "block removed" if status.data.get("changed")
                                             else "no block")
            else:
                answers[node.name] = None
        return answers
