"""Step `env`: the Python env created and the recipe's install commands run, once, on the head.

The env lives in the shared folder. The install commands run in one `bash -e` script, after
the env is activated as its own tooling does it (`activation.activate_lines`), from the repo
folder (the shared folder when the recipe has no repo). After they succeed, a stamp (a hash of
the env spec, its activation, the pins and the install commands) is written into the env: a
changed pin or command means the commands run again; an unchanged recipe means nothing runs. Output goes to
`{shared}/.clusterprep/logs/env.log`; on failure its last lines are shown with its path.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from pathlib import PurePosixPath

from clusterprep.activation import activate_lines
from clusterprep.inventory import Node
from clusterprep.recipe import Recipe
from clusterprep.steps.base import Outcome, Step, StepContext, run_logged

STAMP_FILE = ".clusterprep-env.json"
CREATING_SUFFIX = ".clusterprep-creating"  # beside the env while it is being made
# Nothing may stop to ask a question: there is no terminal on the other end.
_NON_INTERACTIVE = {
    "PIP_NO_INPUT": "1",
    "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    "CONDA_ALWAYS_YES": "true",
    "GIT_TERMINAL_PROMPT": "0",
    "DEBIAN_FRONTEND": "noninteractive",
}


def env_stamp(recipe: Recipe) -> str:
    """A hash of everything that decides what the install commands produce."""
    env = recipe.env
    spec = {"backend": env.backend, "python": env.python_version, "prefix": env.prefix,
            "activate": activate_lines(env), "pins": recipe.pins,
            "install": recipe.install_commands,
            "repo": recipe.repo.rev if recipe.repo else None}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


class EnvStep(Step):
    name = "env"
    scope = "head"
    summary = "the env created and the install commands run"
    probe_name = "env"

    def payload(self, ctx: StepContext) -> dict[str, object]:
        env = ctx.recipe.env
        return {"prefix": env.prefix, "python_version": env.python_version,
                "stamp": env_stamp(ctx.recipe)}

    async def apply(self, ctx: StepContext, nodes: list[Node]) -> dict[str, Outcome | None]:
        script = install_script(ctx.recipe)
        return {node.name: await run_logged(ctx, node, self.name, script) for node in nodes}


def install_script(recipe: Recipe) -> str:
    """The env created if missing, activated, and the install commands, echoed as they run."""
    env = recipe.env
    prefix = shlex.quote(env.prefix)
    if env.backend == "conda":
        assert env.conda is not None
        create = (f"{shlex.quote(env.conda)} create -y -p {prefix} "
                  f"python={shlex.quote(env.python_version)}")
    else:
        create = f"python{shlex.quote(env.python_version)} -m venv {prefix}"
    workdir = recipe.repo.path if recipe.repo else recipe.shared_dir
    exports = {**_NON_INTERACTIVE, **recipe.exports}
    lines = ["set -e"]
    lines += [f"export {k}={shlex.quote(v)}" for k, v in exports.items()]
    # A creation this step began and did not finish (the run was killed) leaves a marker
    # beside the env: that half-made env is removed and made again. An env clusterprep did
    # not start to make is never removed.
    creating = shlex.quote(env.prefix + CREATING_SUFFIX)
    lines += [
        f"if [ -e {creating} ]; then",
        f"    echo {shlex.quote('+ rm -rf ' + env.prefix + '  # left half-made by a run that ended')}",
        f"    rm -rf {prefix}",
        "fi",
        f"if [ ! -x {prefix}/bin/python ]; then",
        f"    mkdir -p {shlex.quote(str(PurePosixPath(env.prefix).parent))}",
        f"    touch {creating}",
        f"    echo {shlex.quote('+ ' + create)}",
        f"    {create}",
        f"    rm -f {creating}",
        "fi",
    ]
    for command in [*activate_lines(env), f"cd {shlex.quote(workdir)}",
                    *recipe.install_commands]:
        lines += [f"echo {shlex.quote('+ ' + command)}", command]
    stamp = json.dumps({"stamp": env_stamp(recipe), "recipe": recipe.source})
    temp = shlex.quote(f"{env.prefix}/{STAMP_FILE}.tmp")
    lines += [f"printf '%s\\n' {shlex.quote(stamp)} > {temp}",
              f"mv {temp} {shlex.quote(env.prefix + '/' + STAMP_FILE)}"]
    return "\n".join(lines) + "\n"
