"""What a launch found: each node's ending (the first failure first), what was stale before
it, what survived it."""

from __future__ import annotations

from dataclasses import dataclass, field

EXITED, SIGNALLED, OOM, LOST, HUNG, STOPPED, UNSTARTED = (
    "exited", "signal", "oom-killed", "lost", "hung", "stopped", "not started")


@dataclass
class Ending:
    """How one node's launcher ended. `how`: exited (with `code`), signal, oom-killed, lost
    (its session: `detail` says why), hung, stopped (by the teardown), not started."""

    node: str
    how: str
    code: int | None = None
    signal: int | None = None
    rank: int | None = None
    detail: str = ""
    tail: list[str] = field(default_factory=list)
    seconds: float | None = None  # since the launch started, as the head learnt it
    peer_lost: bool = False  # its output says a peer went away: maybe another's consequence

    @property
    def ok(self) -> bool:
        return self.how == EXITED and self.code == 0


@dataclass
class Process:
    """A process on a node, named for the user: pid, command, state and why it matters."""

    node: str
    pid: int
    command: str
    state: str = ""
    why: str = ""


@dataclass
class LaunchReport:
    run: str
    nodes: list[str]
    master: str = ""
    port: int = 0
    argv: tuple[str, ...] = ()  # what was launched: SCRIPT ARGS (--raw: the command)
    again: tuple[str, ...] = ()  # the launch options a relaunch repeats (--raw, ...)
    excluded: tuple[str, ...] = ()  # the nodes this launch left out (--exclude)
    commands: dict[str, str] = field(default_factory=dict)
    log_dir: str | None = None
    endings: list[Ending] = field(default_factory=list)  # first failure first
    stale: list[Process] = field(default_factory=list)
    stale_killed: bool = False
    left: list[Process] = field(default_factory=list)  # found by the verify sweep (ended)
    survivors: list[Process] = field(default_factory=list)  # alive even after SIGKILL
    verified: list[str] = field(default_factory=list)  # nodes swept: nothing of the run left
    unverified: dict[str, str] = field(default_factory=dict)  # node -> why not verified
    dry_run: bool = False
    interrupted: bool = False
    seconds: float = 0.0
    teardown_seconds: float | None = None  # first failure -> every process gone

    @property
    def first_failure(self) -> Ending | None:
        return next((e for e in self.endings if not e.ok), None)

    @property
    def started(self) -> bool:
        return bool(self.endings)

    @property
    def ok(self) -> bool:
        if self.dry_run:
            return not self.blocking_stale
        return (self.started and all(e.ok for e in self.endings) and not self.survivors
                and not self.blocking_stale)

    @property
    def blocking_stale(self) -> list[Process]:
        return [] if self.stale_killed else self.stale
