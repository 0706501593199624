"""The command-line options that shape how nodes are reached (SSH's, Slurm's), free of any
backend's imports."""

from __future__ import annotations

from dataclasses import dataclass

HOST_KEY_POLICIES = ("strict", "accept-new", "off")

# A node that sends nothing and answers no keepalive for `--hung-after` seconds is cut out as
# hung (its commands end with a `hung` NodeError) instead of being waited on for minutes: a
# keepalive goes out after each quarter of that time without a byte from the node, and the
# connection is dropped when the fourth in a row goes unanswered. A silent but healthy command
# is not hung: its node's sshd answers the keepalives. OpenSSH's ServerAliveInterval is not
# used for this: with BatchMode it defaults to 300 s, which would let a frozen node stall a
# command for 20 minutes.
HUNG_AFTER = 20.0
KEEPALIVES_UNANSWERED = 3


@dataclass(frozen=True)
class SshOptions:
    """The command-line options that shape SSH connections."""

    config_file: str | None = None
    connect_timeout: float = 10.0
    host_keys: str | None = None  # strict | accept-new | off; None: what the ssh config says
    fanout: int = 64
    hung_after: float = HUNG_AFTER


@dataclass(frozen=True)
class SlurmOptions:
    """Where the nodes are: a job (allocation) id, or None to allocate them for this run."""

    job: str | None = None
    allocate_wait: float = 10.0  # seconds salloc may wait for free nodes
    hung_after: float = HUNG_AFTER  # seconds a started task may send nothing before it is cut
