"""Errors a user can act on.

Every exception here carries a message that says what failed and what to do next; the CLI
prints it and exits with status 2. Failures of single nodes are not exceptions: they are data,
a `NodeError` with one of the kinds below, because one node failing must not stop the others.
"""

from __future__ import annotations

from dataclasses import dataclass

# Why a node could not be reached or a command did not finish. Connection failures:
DNS = "dns"                # the host name does not resolve
REFUSED = "refused"        # nothing listens on the SSH port
TIMEOUT = "timeout"        # no answer within --connect-timeout
AUTH = "auth"              # the server refused every key
HOST_KEY = "host-key"      # the host key changed, or is unknown under strict checking
UNREACHABLE = "unreachable"  # any other network or SSH-level failure
# Command failures on a node that was reached:
COMMAND_TIMEOUT = "command-timeout"  # the command outlived --timeout and was killed
DISCONNECTED = "disconnected"        # the connection dropped while the command ran
HUNG = "hung"                        # the node stopped answering (no bytes, no keepalive reply)
SHELL_STARTUP = "shell-startup"      # the node's login shell exited before running the command
INTERRUPTED = "interrupted"          # the user pressed Ctrl-C before the node finished
PROBE_FAILED = "probe-failed"        # a probe exited non-zero or printed no JSON object
UNEXPECTED = "unexpected"            # an exception no backend anticipated, kept to its node

CONNECTION_KINDS = (DNS, REFUSED, TIMEOUT, AUTH, HOST_KEY, UNREACHABLE)


@dataclass(frozen=True)
class NodeError:
    """Why a node gave no (complete) answer: a `kind` from the constants above and a message."""

    kind: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "message": self.message}


class NodeUnreachable(Exception):
    """Raised when a node's connection cannot be opened; carries the classified `NodeError`."""

    def __init__(self, error: NodeError) -> None:
        super().__init__(error.message)
        self.error = error


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
