"""Errors a user can act on.

Every exception here carries a message that says what failed and what to do next; the CLI
prints it and exits with status 2. Failures of single nodes are not exceptions: they are data
(`NodeError` in `fleet.transport`), because one node failing must not stop the others.
"""

from __future__ import annotations


class ClusterprepError(Exception):
    """Base class: a problem with the user's input or setup, reported without a traceback.

    `exit_code` is the command's exit status when this ends it: 2 (bad input or setup) unless
    a subclass says otherwise.
    """

    exit_code = 2


class InventoryError(ClusterprepError):
    """A nodes file or hostlist that cannot be used.

    Attributes:
        source: the file (or "hostlist" / "$CLUSTERPREP_NODES") the problem is in.
        line: the 1-based line number, when the problem is on one line.
    """

    def __init__(self, source: str, message: str, line: int | None = None) -> None:
        self.source = source
        self.line = line
        where = f"{source}:{line}" if line is not None else source
        super().__init__(f"{where}: {message}")


class SshConfigError(ClusterprepError):
    """OpenSSH could not resolve a host's settings (`ssh -G` failed)."""

    def __init__(self, host: str, detail: str) -> None:
        self.host = host
        super().__init__(f"cannot resolve ssh settings for {host!r}: {detail}")


class UsageError(ClusterprepError):
    """A command-line option with a value that cannot work."""


class RecipeError(ClusterprepError):
    """A recipe that cannot be used: unreadable TOML, an unknown key, a bad or missing value.

    Attributes:
        path: the recipe file (or `builtin:NAME`).
        key: the dotted key at fault (`env.backend`), or None for the file as a whole.
    """

    def __init__(self, path: str, key: str | None, message: str) -> None:
        self.path = path
        self.key = key
        where = f"{path}: {key}" if key else path
        super().__init__(f"{where}: {message}")


class SlurmError(ClusterprepError):
    """Slurm cannot give the nodes: no such job, a job not running, slurmctld not answering."""
