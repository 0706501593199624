"""What a launch's node probes say, as types: the supervisor's events (`probes/launch_node.py`,
one JSON line each) and the sweep's answer (`probes/smoke_sweep.py`, smoke's `Swept`). Read
once where they arrive (answers.read), so the gang reads attributes and an event in another
shape ends that node's run as a named error, never an exit the head misses."""

from __future__ import annotations

from dataclasses import dataclass

from clusterprep.smoke.answers import Found


@dataclass(frozen=True)
class Line:
    """One line of the node's output (torchrun's and its ranks', interleaved as printed)."""

    text: str


@dataclass(frozen=True)
class Started:
    pid: int


@dataclass(frozen=True)
class Hung:
    """Processes of the run stopped (state T) for --hung-after seconds."""

    processes: list[Found]


@dataclass(frozen=True)
class Exit:
    """How the node's launcher ended: its code, or the signal that killed it; whether the
    head's stop came first; the pids of the run the kernel's OOM killer killed."""

    code: int | None
    signal: int | None
    stopped: bool
    oom: list[int]


@dataclass(frozen=True)
class Left:
    """What the supervisor found of the run after its end, and which of it outlived SIGKILL."""

    left: list[Found]
    survivors: list[int]


EVENTS: dict[str, type] = {"line": Line, "started": Started, "hung": Hung, "exit": Exit,
                           "ended": Left}
