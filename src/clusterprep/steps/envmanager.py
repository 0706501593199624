"""Step `env-manager`: Miniconda in the shared folder, from the pinned, checksummed installer.

Downloaded and installed once, on the head, with `-b -p BASE`; the sha256 is checked before
anything runs. Every node then runs `BASE/bin/conda --version`. Nothing to do for venv.
"""

from __future__ import annotations

from clusterprep.inventory import Node
from clusterprep.steps.base import FAILED, OK, Outcome, Probed, Step, StepContext, failed


class EnvManagerStep(Step):
    name = "env-manager"
    scope = "head"
    summary = "Miniconda installed in the shared folder (conda backend)"
    probe_name = "envmanager"

    def __init__(self) -> None:
        self.mode = "probe"

    def payload(self, ctx: StepContext) -> dict[str, object]:
        env = ctx.recipe.env
        return {"mode": self.mode, "base_prefix": env.base_prefix, "url": env.installer_url,
                "sha256": env.installer_sha256, "download_dir": f"{ctx.state_dir}/downloads",
                "log": ctx.log_path(self.name)}

    def needs_probe(self, ctx: StepContext) -> bool:
        return ctx.recipe.env.backend == "conda"

    async def run(self, ctx: StepContext, nodes: list[Node],
                  before: Probed | None = None) -> dict[str, Outcome]:
        if not self.needs_probe(ctx):
            return {n.name: Outcome(OK, "venv backend: nothing to install") for n in nodes}
        return await super().run(ctx, nodes, before)

    async def apply(self, ctx: StepContext, nodes: list[Node]) -> dict[str, Outcome | None]:
        self.mode = "apply"
        try:
            answers, _ = await ctx.fleet.probe(self.probe_name, self.payload(ctx), nodes=nodes,
                                               timeout=ctx.timeout)
        finally:
            self.mode = "probe"
        log = ctx.log_path(self.name)
        results: dict[str, Outcome | None] = {}
        for answer in answers:
            if answer.error is not None:
                results[answer.node] = failed(answer.error)
            elif not (answer.data or {}).get("ok"):
                data = answer.data or {}
                message = str(data.get("error", "install failed"))
                if data.get("tail"):
                    message += f"; last lines of {log}:\n" + "\n".join(data["tail"])
                results[answer.node] = Outcome(FAILED, message, log=log)
            else:
                results[answer.node] = None
        return results
