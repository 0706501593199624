"""What each node runs: `torchrun --nnodes N --node_rank R --master_addr HEAD --master_port P
--nproc_per_node G SCRIPT ARGS` (as `colossalai run` starts it), or, raw, the user's own
command with NNODES, NODE_RANK, MASTER_ADDR and MASTER_PORT set; in the run folder, with the
recipe's exported variables."""

from __future__ import annotations

import posixpath
import shlex
from dataclasses import dataclass

MARKER = "CLUSTERPREP_LAUNCH_RUN"


@dataclass(frozen=True)
class LaunchPlan:
    """The gang: nodes in order (the head first), the master, the ranks per node, the env's
    python, the folder the run starts in, its variables, and the training command."""

    nodes: tuple[str, ...]
    master: str
    port: int
    nproc: dict[str, int]
    python: str
    cwd: str
    exports: dict[str, str]
    argv: tuple[str, ...]
    raw: bool = False

    @property
    def torchrun(self) -> str:
        """The env's own torchrun, beside its python (a bare `python3` means PATH's)."""
        if "/" not in self.python:
            return "torchrun"
        return posixpath.join(posixpath.dirname(self.python), "torchrun")

    def environment(self, node: str) -> dict[str, str]:
        """The variables the node's command runs with, beyond its login environment."""
        if not self.raw:
            return dict(self.exports)
        return {**self.exports, "NNODES": str(len(self.nodes)),
                "NODE_RANK": str(self.nodes.index(node)), "MASTER_ADDR": self.master,
                "MASTER_PORT": str(self.port)}

    def command(self, node: str) -> str:
        """The shell command the node's supervisor starts, in `cwd`."""
        if self.raw:
            return self.argv[0] if len(self.argv) == 1 else shlex.join(self.argv)
        return shlex.join([
            self.torchrun, "--nnodes", str(len(self.nodes)),
            "--node_rank", str(self.nodes.index(node)), "--master_addr", self.master,
            "--master_port", str(self.port), "--nproc_per_node", str(self.nproc[node]),
            "--max_restarts", "0", *self.argv])

    def line(self, node: str) -> str:
        """The node's exact command line, as a shell would run it."""
        variables = " ".join(f"{name}={shlex.quote(value)}"
                             for name, value in self.environment(node).items())
        env = f"env {variables} " if variables else ""
        return f"cd {shlex.quote(self.cwd)} && {env}{self.command(node)}"
