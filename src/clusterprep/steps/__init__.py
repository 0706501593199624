"""Setup steps, in the order `up` runs them. One file per step; `runner` drives them."""

from clusterprep.steps.base import Step
from clusterprep.steps.env import EnvStep
from clusterprep.steps.envmanager import EnvManagerStep
from clusterprep.steps.repo import RepoStep
from clusterprep.steps.shared import SharedStep
from clusterprep.steps.shell import ShellStep

STEP_NAMES = ("shared", "env-manager", "shell", "repo", "env")


def all_steps() -> list[Step]:
    """A fresh instance of every step, in order."""
    return [SharedStep(), EnvManagerStep(), ShellStep(), RepoStep(), EnvStep()]


__all__ = ["STEP_NAMES", "Step", "all_steps"]
