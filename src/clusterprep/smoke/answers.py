"""What smoke's node probes answer (`probes/smoke_node.py` stage by stage, the sweep, the
collective's workers, `smoke/worker.py`), as types:
read once where an answer arrives (answers.read), so the phases read attributes and a probe
that answers in another shape is that node's named error."""

from __future__ import annotations

from dataclasses import dataclass, field

from clusterprep.answers import key


@dataclass(frozen=True)
class Resolution:
    """What one name resolved to on a node: its addresses, or the resolver's error."""

    addresses: list[str] = field(default_factory=list)
    error: str = "?"


@dataclass(frozen=True)
class NamesAnswer:
    resolved: dict[str, Resolution]
    gpus: int = 0
    hostname: str = ""


@dataclass(frozen=True)
class Holder:
    """A process listening on the master port."""

    pid: int
    uid: int
    command: str


@dataclass(frozen=True)
class MasterOpened:
    """The head's listener: `master-listening`, or `master-taken` with why and by whom."""

    event: str
    in_use: bool = False
    error: str = ""
    holders: list[Holder] = field(default_factory=list)


@dataclass(frozen=True)
class Dialed:
    """A node's dial of the master: ok, or its cause (refused, timed out, not the head...)."""

    ok: bool
    cause: str = ""
    message: str = ""
    seconds: float | None = None


@dataclass(frozen=True)
class InterfaceChoice:
    """What one interface variable set on a node selects there."""

    variable: str
    value: str
    interfaces: list[str]
    selected: list[str]
    address: str | None


@dataclass(frozen=True)
class Listening:
    """A node's links listener: its address and port, or why it has none (`interface`: a
    variable selects no usable interface; `bind`: the address cannot be listened on)."""

    interfaces: list[InterfaceChoice]
    error: str | None = None
    address: str = "?"
    port: int = 0
    message: str = ""


@dataclass(frozen=True)
class PairCheck:
    """One dial of a peer's listener."""

    to: str
    ok: bool
    ms: float | None = None
    cause: str = ""
    message: str = ""


@dataclass(frozen=True)
class StreamSent:
    """The ring stream a node sent to the next node."""

    to: str
    ok: bool
    bytes: int = 0
    seconds: float = 0.0
    cause: str = "stream lost"
    message: str = "the stream did not arrive whole"


@dataclass(frozen=True)
class Sent:
    pairs: list[PairCheck]
    stream: StreamSent | None = None


@dataclass(frozen=True)
class StreamReceived:
    sender: str = key("from")
    bytes: int
    seconds: float


@dataclass(frozen=True)
class Received:
    streams: list[StreamReceived]
    heard: list[str | None] = field(default_factory=list)


@dataclass(frozen=True)
class Heard:
    """The nodes the head's rendezvous listener heard from."""

    nodes: list[str | None] = field(default_factory=list)


@dataclass(frozen=True)
class Found:
    """A process of the run still alive on a node when it was swept."""

    pid: int
    state: str
    command: str
    rank: int | None = None


@dataclass(frozen=True)
class Swept:
    found: list[Found]
    survivors: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class Joined:
    """A collective worker's `joined` line: the process group formed, under this torch."""

    world: int
    torch: str
