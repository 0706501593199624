"""What a smoke run found, phase by phase: results that the renderers only read."""

from __future__ import annotations

from dataclasses import dataclass, field

from clusterprep.fleet.gather import fold

NAMES, RENDEZVOUS, LINKS, COLLECTIVE, HANDOVER = (
    "names", "rendezvous", "links", "collective", "handover")
PHASES = (NAMES, RENDEZVOUS, LINKS, COLLECTIVE, HANDOVER)


@dataclass(frozen=True)
class Problem:
    """Something at fault: where (a node, or `a -> b` for a link), why, and what to do next."""

    where: str
    cause: str
    next_step: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"where": self.where, "cause": self.cause, "next_step": self.next_step}


@dataclass
class PhaseResult:
    """One phase's outcome; the problems say why it failed (none: it passed)."""

    name: str = ""
    problems: list[Problem] = field(default_factory=list)
    seconds: float = 0.0
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        return not self.problems and not self.interrupted


@dataclass
class NameRow:
    """One cluster name as every node resolves it: the address most nodes agree on (the
    head's when tied) and the nodes that see something else (an address or an error)."""

    name: str
    address: str | None
    agreeing: list[str]
    others: dict[str, str]

    def differing(self) -> list[tuple[str, str]]:
        """The other views, each once: (value, the folded nodes that see it)."""
        nodes: dict[str, list[str]] = {}
        for node, value in self.others.items():
            nodes.setdefault(value, []).append(node)
        return [(value, fold(names)) for value, names in nodes.items()]


@dataclass
class NamesResult(PhaseResult):
    name: str = NAMES
    master: str = ""
    rows: list[NameRow] = field(default_factory=list)
    gpus: dict[str, int] = field(default_factory=dict)
    addresses: dict[str, str] = field(default_factory=dict)  # node -> its agreed address


@dataclass
class Dial:
    """One node's connection to the head's master port."""

    node: str
    ok: bool
    cause: str = ""
    message: str = ""
    ms: float | None = None


@dataclass
class RendezvousResult(PhaseResult):
    name: str = RENDEZVOUS
    master: str = ""
    port: int = 0
    dials: list[Dial] = field(default_factory=list)


@dataclass
class Link:
    """A connection from one node to another; `mb_per_s` for the ring's measured links."""

    source: str
    target: str
    ok: bool
    cause: str = ""
    message: str = ""
    ms: float | None = None
    mb_per_s: float | None = None
    slow: bool = False


@dataclass
class LinksResult(PhaseResult):
    name: str = LINKS
    ring: list[Link] = field(default_factory=list)
    pairs_checked: int = 0
    pair_failures: list[Link] = field(default_factory=list)
    all_pairs: bool = False
    seconds_measured: float = 0.0
    median_mb_per_s: float | None = None
    interfaces: dict[str, str] = field(default_factory=dict)  # node -> "VAR=ifname (address)"


@dataclass
class SizeResult:
    """One all_reduce size, as nccl-tests prints it."""

    bytes: int
    count: int
    time_us: float
    algbw: float  # GB/s
    busbw: float  # GB/s
    wrong: int


@dataclass
class Leftover:
    """A process of the run still alive on a node when the run ended, killed by the sweep."""

    node: str
    pid: int
    state: str
    rank: int | None
    command: str


@dataclass
class CollectiveResult(PhaseResult):
    name: str = COLLECTIVE
    backend: str = ""
    world: int = 0
    nproc: dict[str, int] = field(default_factory=dict)
    torch: str | None = None
    sizes: list[SizeResult] = field(default_factory=list)
    joined: list[int] = field(default_factory=list)
    leftovers: list[Leftover] = field(default_factory=list)
    survivors: dict[str, list[int]] = field(default_factory=dict)
    swept: bool = False
    timed_out: bool = False


@dataclass
class HandoverResult(PhaseResult):
    name: str = HANDOVER
    hostfile: str = ""             # colossalai run, pdsh -w ^FILE, clush --hostfile
    deepspeed_hostfile: str = ""   # deepspeed --hostfile: `HOST slots=N`
    hosts: list[str] = field(default_factory=list)
    colossalai: str = ""
    deepspeed: str = ""
    torchrun: list[str] = field(default_factory=list)


@dataclass
class SmokeReport:
    """Every phase that ran, in order; a run stops at the first phase that fails."""

    nodes: list[str]
    phases: list[PhaseResult] = field(default_factory=list)
    last_phase: str = HANDOVER

    @property
    def interrupted(self) -> bool:
        return any(p.interrupted for p in self.phases)

    @property
    def ok(self) -> bool:
        ran = [p.name for p in self.phases]
        wanted = list(PHASES[:PHASES.index(self.last_phase) + 1])
        return ran == wanted and all(p.ok for p in self.phases)

    @property
    def failed_phase(self) -> PhaseResult | None:
        """The phase that stopped the run (failed or interrupted), if any."""
        return next((p for p in self.phases if not p.ok), None)

    @property
    def problems(self) -> list[Problem]:
        return [problem for phase in self.phases for problem in phase.problems]

    def phase(self, name: str) -> PhaseResult | None:
        return next((p for p in self.phases if p.name == name), None)
