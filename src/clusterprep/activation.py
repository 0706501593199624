"""The env as a shell sees it: the shell lines that activate it the way its own tooling does.

conda: conda's shell hook (`. BASE/etc/profile.d/conda.sh`, which defines the `conda` shell
function), then `conda activate PREFIX`, which runs the env's `etc/conda/activate.d/*.sh`
(CUDA toolkit packages set variables there); a later bare `conda install` goes through that
function, so it installs into the active env and reactivates it. venv: `. PREFIX/bin/activate`.
After these lines, bare `python`, `pip`, `conda install` act on the env.

This is the one definition: `up`'s install commands run after `activate_lines`, `check`'s
command checks run in the environment they leave, and the managed ~/.bashrc block runs
`bashrc_lines`, the same lines guarded so that a shell still starts before the env exists.
"""

from __future__ import annotations

import posixpath
import shlex

from clusterprep.recipe import EnvSpec


def _conda_hook(env: EnvSpec) -> str:
    assert env.base_prefix is not None
    return shlex.quote(f"{env.base_prefix}/etc/profile.d/conda.sh")


def _venv_activate(env: EnvSpec) -> str:
    return shlex.quote(f"{env.prefix}/bin/activate")


def activate_lines(env: EnvSpec) -> list[str]:
    """Shell lines that activate `env`; under `set -e` a missing piece stops the script."""
    if env.backend == "conda":
        return [f". {_conda_hook(env)}", f"conda activate {shlex.quote(env.prefix)}"]
    return [f". {_venv_activate(env)}"]


def activate_script(env: EnvSpec) -> str:
    """`activate_lines` as one script that fails at the first line that fails."""
    return "set -e\n" + "\n".join(activate_lines(env)) + "\n"


def bashrc_lines(env: EnvSpec, activate: bool) -> list[str]:
    """`activate_lines` for every new shell, each only where its files exist (a shell must
    start before the env does): conda's hook always (so `conda` works), the env when
    `activate`."""
    if env.backend == "conda":
        hook, activation = activate_lines(env)
        lines = [f"if [ -f {_conda_hook(env)} ]; then", f"    {hook}"]
        if activate:
            lines.append(f"    if [ -d {shlex.quote(env.prefix)} ]; then {activation}; fi")
        return lines + ["fi"]
    if activate:
        return [f"if [ -f {_venv_activate(env)} ]; then {activate_lines(env)[0]}; fi"]
    return []


def interpreter_script(python: str) -> str:
    """For an interpreter that is not the recipe's env (`check --python PATH`): its folder
    first on PATH, so that `python`, `pip` and the tools beside it are its own."""
    folder = posixpath.dirname(python)
    if not folder:  # a bare name (`python3`): found on PATH as it is, nothing to put first
        return ""
    return f'export PATH={shlex.quote(folder)}:"$PATH"\n'
