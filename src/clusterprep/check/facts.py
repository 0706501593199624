"""What the fingerprint probe (`probes/fingerprint.py` and its parts `_comms`, `_gpuhealth`,
`_hubcache`) answers, as types: read once where the answer arrives (answers.read, through
`Fleet.probe(shape=Fingerprint)`), so the drift, health and advice rules read attributes, and
a probe that renames or drops a field is that node's named error, never a rule gone quiet.

Only what the rules read is named here (the raw answer is kept whole for `--json`). A field
with a default is one the probe may leave out: nvidia-smi drops a field its driver does not
know, the remap fields come only after an ECC error, `why` only where something did not run.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Clock:
    """The probe's first line: the node's time as it started (seconds since the epoch)."""

    clock: float


@dataclass
class CheckResult:
    """A check as it ran on one node."""

    name: str
    ok: bool
    value: str | None
    expected: str | None
    message: str | None = None


@dataclass(frozen=True)
class Python:
    executable: str
    version: str
    user_site_enabled: bool


@dataclass(frozen=True)
class Package:
    version: str | None
    build: str | None = None  # a hash of its RECORD, for compiled packages only


@dataclass(frozen=True)
class Shadow:
    """A package imported from outside the env, and how it got in front of it."""

    package: str
    version: str | None
    location: str
    via: str


@dataclass(frozen=True)
class TorchFacts:
    version: str | None
    cuda: str | None
    cudnn: int | None
    nccl: str | None
    gpus: int


@dataclass(frozen=True)
class TorchError:
    """Why torch did not import (or did not say its facts)."""

    error: str


@dataclass(frozen=True)
class Gpu:
    """One GPU as `nvidia-smi --query-gpu` shows it, in its words ("Enabled", "Not Active")."""

    index: str | None
    bus_id: str | None
    name: str | None
    persistence: str | None = None
    ecc_volatile: str | None = None
    ecc_aggregate: str | None = None
    retired_pending: str | None = None
    idle: str | None = None
    hw_slowdown: str | None = None
    hw_thermal_slowdown: str | None = None
    hw_power_brake_slowdown: str | None = None
    sw_thermal_slowdown: str | None = None
    pcie_gen: str | None = None
    pcie_gen_max: str | None = None
    pcie_width: str | None = None
    pcie_width_max: str | None = None
    remap_pending: str | None = None
    remap_failure: str | None = None


@dataclass(frozen=True)
class Gpus:
    count: int
    models: list[str]
    driver: str | None
    devices: list[Gpu]
    error: str | None = None  # nvidia-smi could not read the GPUs


@dataclass(frozen=True)
class XidEvent:
    bus: str
    xid: int
    text: str


@dataclass(frozen=True)
class XidLog:
    readable: bool
    events: list[XidEvent]


@dataclass(frozen=True)
class DiagTest:
    test: str | None
    why: str


@dataclass(frozen=True)
class Verdict:
    failed: list[DiagTest]
    warned: list[DiagTest]


@dataclass(frozen=True)
class GpuDiag:
    """DCGM's quick diagnostic: per GPU (its id as text), the tests that did not pass."""

    ran: bool
    why: str = ""
    gpus: dict[str, Verdict] = field(default_factory=dict)


@dataclass(frozen=True)
class NcclLibrary:
    path: str
    real_path: str
    version: str | None


@dataclass(frozen=True)
class Plugin:
    name: str
    path: str


@dataclass(frozen=True)
class Nccl:
    library: NcclLibrary | None
    plugins: list[Plugin]
    conf: dict[str, dict[str, str]]  # config file -> the variables it sets


@dataclass(frozen=True)
class IbPort:
    port: int
    state: str | None
    phys_state: str | None
    rate: str | None
    link_layer: str | None


@dataclass(frozen=True)
class IbDevice:
    device: str
    firmware: str | None
    ports: list[IbPort]


@dataclass(frozen=True)
class Interface:
    name: str
    state: str | None
    mtu: int | None
    physical: bool


@dataclass(frozen=True)
class Fabric:
    infiniband: list[IbDevice]
    interfaces: list[Interface]


@dataclass(frozen=True)
class System:
    kernel: str
    glibc: str
    cpu: str | None


@dataclass(frozen=True)
class StartupLine:
    """A line of a shell startup file that sets a variable (or lowers `ulimit -l`)."""

    file: str
    line: int
    text: str


@dataclass(frozen=True)
class Memlock:
    soft: int | None  # bytes; None: unlimited
    hard: int | None
    ipc_lock: bool


@dataclass(frozen=True)
class Limits:
    open_files: int
    shm_bytes: int | None
    memlock: Memlock


@dataclass(frozen=True)
class Disk:
    hf_cache: str
    hf_cache_free: int | None
    shared_free: int | None


@dataclass(frozen=True)
class Fingerprint:
    """One node's fingerprint and the results of its install checks."""

    python: Python
    shell_python: dict[str, str | None]
    packages: dict[str, Package]
    shadowed: list[Shadow]
    torch: TorchFacts | TorchError
    nvcc: str | None
    gpus: Gpus
    xid: XidLog | None
    gpu_diag: GpuDiag | None
    nccl: Nccl
    fabric: Fabric
    system: System
    env: dict[str, str]
    startup_lines: dict[str, list[StartupLine]]
    limits: Limits
    disk: Disk
    checks: list[CheckResult]

    def setter(self, name: str) -> StartupLine | None:
        """The startup-file line in force for `name` (the last that sets it), if any."""
        lines = self.startup_lines.get(name)
        return lines[-1] if lines else None

    def nccl_conf(self) -> dict[str, str]:
        """The variables NCCL's config files set, the later file winning as in NCCL."""
        merged: dict[str, str] = {}
        for values in self.nccl.conf.values():
            merged.update(values)
        return merged
