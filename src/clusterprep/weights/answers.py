"""What the weights probes answer (`probes/hfcache.py`, `probes/weights_load.py`,
`probes/placement.py`, and the events of `probes/hfreceive.py`), as types: read once where an
answer arrives (answers.read, through `Fleet.probe(shape=...)` or the receiver's event lines),
so sync, verify, the loads and the placement read attributes, and a probe that answers in
another shape is that node's named error, never a file taken as present."""

from __future__ import annotations

from dataclasses import dataclass, field

from clusterprep.errors import NodeError


@dataclass(frozen=True)
class Corrupt:
    path: str
    reason: str


@dataclass(frozen=True)
class CacheAnswer:
    """A node's hub cache against the manifest (hfcache): where the cache is and what said
    so, the paths missing or corrupt (relative to the cache), the revisions the manifest does
    not name (by repo folder), and whether the node read back the head's staging token."""

    cache: str
    cache_source: str
    missing: list[str]
    corrupt: list[Corrupt]
    extra_revisions: dict[str, list[str]]
    sees_staging: bool = False

    @property
    def bad(self) -> list[str]:
        """Every path that must be sent again."""
        return self.missing + [c.path for c in self.corrupt]


@dataclass(frozen=True)
class LoadAnswer:
    """One load on one node: ok, failed, timeout, skipped or not-run, its time and, where it
    did not load, the loader's last lines."""

    name: str
    state: str
    seconds: float
    tail: list[str] = field(default_factory=list)
    exit: int | None = None


@dataclass(frozen=True)
class LoadsAnswer:
    gpus: int
    loads: list[LoadAnswer]


@dataclass(frozen=True)
class Placed:
    """One link at a path of the code: its state, why, and the command words that mend it."""

    state: str
    reason: str | None = None
    fix: list[str] | None = None


@dataclass(frozen=True)
class PlacementAnswer:
    items: list[Placed]


# What a receiver (`probes/hfreceive.py`) says while a sync runs, one JSON line per event,
# by its "event" name; and the head's own word that the receiver's command ended.

@dataclass
class FileFailure:
    """A file a node could not write: why, and for a write that failed, how many of its bytes
    were not written and into which folder."""

    path: str
    reason: str
    unwritten: int = 0
    where: str | None = None
    errno: int | None = None


@dataclass(frozen=True)
class Progress:
    """Bytes of the stream the node holds, of them read from the staging itself, and the
    seconds its stream has waited so far, by cause."""

    bytes: int
    read: int
    blocked: dict[str, float]


@dataclass(frozen=True)
class Done(Progress):
    """The receiver's last word: its error (None: whole), what it wrote and could not, the
    link whose next node confirmed the whole stream."""

    error: str | None = None
    free_at_start: int | None = None
    written: int = 0
    failed: list[FileFailure] = field(default_factory=list)
    passed_to: int | None = None


@dataclass(frozen=True)
class Listening:
    port: int | None
    error: str | None = None


@dataclass(frozen=True)
class Need:
    """The node needs the stream from byte `at`."""

    at: int


@dataclass(frozen=True)
class Linked:
    """A link to the next node made (`ok`) or not, with why."""

    ok: bool
    link: int | None = None
    at: int | None = None
    error: str | None = None


@dataclass(frozen=True)
class Lost:
    """A link broke, on the node's upstream or downstream side."""

    side: str
    link: int | None = None
    at: int | None = None
    error: str | None = None


@dataclass(frozen=True)
class Ended:
    """The head's own event: the receiver's command ended (`Receiver.result` says how)."""


@dataclass(frozen=True)
class Unreadable:
    """The head's own event: the receiver said something this head cannot read."""

    error: NodeError


RECEIVER_EVENTS: dict[str, type] = {"progress": Progress, "done": Done, "listening": Listening,
                                    "need": Need, "linked": Linked, "lost": Lost}
ReceiverEvent = Progress | Listening | Need | Linked | Lost | Ended | Unreadable
