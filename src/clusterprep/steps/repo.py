"""Step `repo`: the code at the pinned commit in the shared folder, seen alike by every node.

Cloned once, on the head (into a temporary folder, renamed when complete, so an interrupted
clone never looks finished), then checked out detached at the recipe's commit.
"""

from __future__ import annotations

import shlex

from clusterprep.inventory import Node
from clusterprep.steps.base import Outcome, Step, StepContext, run_logged


class RepoStep(Step):
    name = "repo"
    scope = "head"
    summary = "the code at the pinned commit, same path on every node"
    probe_name = "repo"

    def payload(self, ctx: StepContext) -> dict[str, object]:
        assert ctx.recipe.repo is not None
        return {"path": ctx.recipe.repo.path, "rev": ctx.recipe.repo.rev}

    async def apply(self, ctx: StepContext, nodes: list[Node]) -> dict[str, Outcome | None]:
        assert ctx.recipe.repo is not None
        repo = ctx.recipe.repo
        path, partial = shlex.quote(repo.path), shlex.quote(repo.path + ".clusterprep-partial")
        url, rev = shlex.quote(repo.url), shlex.quote(repo.rev)
        script = f"""set -e
export GIT_TERMINAL_PROMPT=0
if [ ! -e {path} ]; then
    rm -rf {partial}
    echo "+ git clone --no-checkout {url}"
    git clone --no-checkout {url} {partial}
    mv {partial} {path}
elif [ ! -d {path}/.git ]; then
    echo "{repo.path} exists and is not a git checkout: move it away or set [repo] path" >&2
    exit 1
fi
cd {path}
if ! git cat-file -e {rev}^{{commit}} 2>/dev/null; then
    echo "+ git fetch origin"
    git fetch origin || true
    git cat-file -e {rev}^{{commit}} 2>/dev/null || git fetch origin {rev}
fi
echo "+ git checkout --detach {rev}"
git checkout --detach {rev}
"""
        return {node.name: await run_logged(ctx, node, self.name, script) for node in nodes}
