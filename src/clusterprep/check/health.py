"""Health: what is wrong with a node whatever the other nodes are like. A GPU with uncorrected
ECC errors or a pending row remap, a PCIe link below its width, Xid events, a failed DCGM
diagnostic; an NCCL_SOCKET_IFNAME or NCCL_IB_HCA naming nothing usable; a memlock limit too low
for RDMA, a /dev/shm too small for NCCL. Each rule reads one node's fingerprint; the problems
it finds for one item across nodes become one Finding, with advice built from what was seen."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from clusterprep import suggest
from clusterprep.check.facts import Fingerprint, Gpu, XidEvent
from clusterprep.check.fingerprint import kib
from clusterprep.check.model import CRITICAL, HEALTH, WARNING, Finding, NodeState
from clusterprep.fleet.gather import fold
from clusterprep.probes._ifnames import named, selected

NODE = "{node}"  # in a problem's advice: the nodes that show it
SHM_FLOOR = 2**30  # NCCL's docs run containers with --shm-size=1g
# What a Xid means and what to do, for those NVIDIA's Xid catalog sends to a reset, a reboot or
# a replacement (docs.nvidia.com/deploy/xid-errors); any other Xid is a warning to look up.
XID_ACTIONS = {
    48: "an uncorrectable (double-bit) ECC error: reset the GPU or reboot; RMA it if it recurs",
    63: "a row remap or page retirement was recorded: reset the GPU or reboot to apply it",
    64: "a row remap or page retirement failed: drain the node and have the GPU replaced",
    74: "an NVLink error: check the links (`nvidia-smi nvlink -e`), then reset the GPU or reboot",
    79: "the GPU fell off the bus: reboot; reseat or replace the GPU if it happens again",
    94: "a contained ECC error: reset the GPU or reboot to remap the row",
    95: "an uncontained ECC error: reset the GPU or reboot",
    119: "its GSP firmware timed out: reset the GPU or reboot; update the driver if it recurs",
    120: "its GSP firmware failed: reset the GPU or reboot; update the driver if it recurs",
}
SLOWDOWNS = {"hw_slowdown": "HW slowdown", "hw_thermal_slowdown": "HW thermal slowdown",
             "hw_power_brake_slowdown": "HW power brake slowdown",
             "sw_thermal_slowdown": "SW thermal slowdown"}
USABLE_STATES = ("up", "unknown")  # `unknown`: interfaces without carrier logic, such as lo


@dataclass(frozen=True)
class Problem:
    """One thing wrong on one node: how bad, what was seen, what to do (NODE for the node)."""

    severity: str
    value: str
    advice: str


Check = Callable[[Fingerprint], list[Problem] | None]  # None: does not apply to this node


@dataclass(frozen=True)
class Rule:
    item: str
    healthy: str  # the value nodes without the problem show
    check: Check


def find_health(nodes: list[NodeState]) -> list[Finding]:
    """One Finding per rule that found a problem on any fingerprinted node."""
    findings = []
    for rule in RULES:
        healthy: list[str] = []
        problems: dict[str, list[Problem]] = {}
        for node in nodes:
            found = rule.check(node.facts) if node.facts is not None else None
            if found:
                problems[node.node] = found
            elif found is not None:
                healthy.append(node.node)
        if problems:
            findings.append(_finding(rule, healthy, problems))
    return findings


def _finding(rule: Rule, healthy: list[str], problems: dict[str, list[Problem]]) -> Finding:
    values = {rule.healthy: healthy} if healthy else {}
    advice: dict[str, list[str]] = {}
    for node, found in problems.items():
        values.setdefault("; ".join(p.value for p in found), []).append(node)
        for problem in found:
            advice.setdefault(problem.advice, []).append(node)
    severity = CRITICAL if any(p.severity == CRITICAL for found in problems.values()
                               for p in found) else WARNING
    words = "; ".join(text.replace(NODE, fold(names)) for text, names in advice.items())
    return Finding(severity, rule.item, list(problems), values, rule.healthy, HEALTH, words)


def _each_gpu(judge: Callable[[Gpu], list[Problem]]) -> Check:
    """A rule from a judgement of one GPU: it applies to nodes whose GPUs nvidia-smi read."""
    def check(facts: Fingerprint) -> list[Problem] | None:
        devices = facts.gpus.devices
        return [p for d in devices for p in judge(d)] if devices else None
    return check


def _gpu(device: Gpu) -> str:
    return f"GPU {device.index} ({device.bus_id})"


def _count(text: str | None) -> int:
    try:
        return int(text or 0)
    except ValueError:
        return 0


def _nvidia_smi(facts: Fingerprint) -> list[Problem] | None:
    gpus = facts.gpus
    if gpus.error is None:
        return [] if gpus.devices else None
    return [Problem(CRITICAL, gpus.error,
                    f"drain {NODE}: nvidia-smi cannot read its GPUs ({gpus.error[:120]}); "
                    "look for NVRM and Xid lines in `dmesg`, then reload the driver or reboot")]


def _ecc_now(d: Gpu) -> list[Problem]:
    if not _count(d.ecc_volatile):
        return []
    return [Problem(CRITICAL, f"{_gpu(d)}: {d.ecc_volatile} since the driver loaded",
                    f"drain {NODE}: {_gpu(d)} had uncorrectable memory errors, which crash or "
                    f"corrupt a run; reset it (`nvidia-smi -r -i {d.index}`, as root, no "
                    "process on it) or reboot, and have it replaced if they come back")]


def _ecc_past(d: Gpu) -> list[Problem]:
    if not _count(d.ecc_aggregate) or _count(d.ecc_volatile):
        return []
    return [Problem(WARNING, f"{_gpu(d)}: {d.ecc_aggregate} in its life",
                    f"watch {_gpu(d)} on {NODE}: it had uncorrectable memory errors before "
                    "(`nvidia-smi -q -d ECC,ROW_REMAPPER` shows them); drain it if new ones "
                    "appear or a row remap is pending")]


def _row_remaps(d: Gpu) -> list[Problem]:
    if d.remap_failure == "Yes":
        return [Problem(CRITICAL, f"{_gpu(d)}: row remapping failed",
                        f"drain {NODE} and have {_gpu(d)} replaced: its memory can no longer be "
                        "repaired by remapping rows")]
    if d.remap_pending == "Yes" or d.retired_pending == "Yes":
        what = "a row remap" if d.remap_pending == "Yes" else "a page retirement"
        return [Problem(CRITICAL, f"{_gpu(d)}: {what} pending",
                        f"reset {_gpu(d)} on {NODE} (`nvidia-smi -r -i {d.index}`) or "
                        f"reboot {NODE} before the next job: {what} takes effect only then")]
    return []


def _slowdown(d: Gpu) -> list[Problem]:
    active = [words for key, words in SLOWDOWNS.items() if getattr(d, key) == "Active"]
    if not active:
        return []
    return [Problem(WARNING, f"{_gpu(d)}: {', '.join(active)}",
                    f"cool or power {_gpu(d)} on {NODE} properly (fans, airflow, `nvidia-smi "
                    "-q -d TEMPERATURE,POWER`): it runs at half its clock or less, and every "
                    "rank waits for the slowest GPU")]


def _persistence(facts: Fingerprint) -> list[Problem] | None:
    devices = facts.gpus.devices
    if not devices:
        return None
    off = [str(d.index) for d in devices if d.persistence == "Disabled"]
    if not off:
        return []
    return [Problem(WARNING, f"off on GPU {','.join(off)}",
                    f"turn persistence mode on on {NODE}: `nvidia-smi -pm 1` as root, or run "
                    "nvidia-persistenced; without it each CUDA start waits for the driver")]


def _pcie(d: Gpu) -> list[Problem]:
    width, widest = _count(d.pcie_width), _count(d.pcie_width_max)
    gen, fastest = _count(d.pcie_gen), _count(d.pcie_gen_max)
    # The generation drops while a GPU idles (nvidia-smi --help-query-gpu): only a busy GPU's
    # is a finding. The width stays put on a healthy link.
    busy = d.idle == "Not Active"
    if width and widest and width < widest:
        return [Problem(CRITICAL, f"{_gpu(d)}: x{width} of x{widest}",
                        f"reseat {_gpu(d)} on {NODE} (or its riser or cable) and check the "
                        f"slot's BIOS settings: its link trained at x{width} of x{widest}, so "
                        "its transfers to the host and NIC are slower and every rank waits "
                        "for it")]
    if busy and gen and fastest and gen < fastest:
        return [Problem(CRITICAL, f"{_gpu(d)}: Gen{gen} of Gen{fastest} while busy",
                        f"reseat {_gpu(d)} on {NODE} and check the slot's BIOS settings: its "
                        f"link runs at Gen{gen} of Gen{fastest} under load")]
    return []


def _xids(facts: Fingerprint) -> list[Problem] | None:
    log = facts.xid
    if not log or not log.readable:
        return None
    seen: dict[tuple[str, int], list[XidEvent]] = {}
    for event in log.events:
        seen.setdefault((event.bus, event.xid), []).append(event)
    found = []
    for (bus, xid), events in seen.items():
        value = f"Xid {xid} on {bus} x{len(events)} ({events[-1].text[:80]})"
        if xid in XID_ACTIONS:
            found.append(Problem(CRITICAL, value, f"drain {NODE}: GPU {bus} logged Xid {xid}, "
                                 f"{XID_ACTIONS[xid]}"))
        else:
            found.append(Problem(WARNING, value, f"look up Xid {xid} (GPU {bus} on {NODE}) in "
                                 "NVIDIA's Xid catalog, docs.nvidia.com/deploy/xid-errors"))
    return found


def _gpu_diag(facts: Fingerprint) -> list[Problem] | None:
    diag = facts.gpu_diag
    if diag is None:
        return None
    if not diag.ran:
        return [Problem(WARNING, f"not run: {diag.why}",
                        f"make `dcgmi diag -r 1` work on {NODE} (install DCGM, start its host "
                        "engine: `systemctl start nvidia-dcgm`), then run "
                        f"`{suggest.command('check', '--gpu-diag')}` again")]
    found = []
    for gpu, verdict in diag.gpus.items():
        for kind, severity, failures in (("failed", CRITICAL, verdict.failed),
                                         ("warned", WARNING, verdict.warned)):
            if failures:
                tests = ", ".join(f"{t.test}" + (f" ({t.why})" if t.why else "")
                                  for t in failures)
                found.append(Problem(severity, f"GPU {gpu} {kind}: {tests}",
                                     f"drain {NODE}: DCGM's diagnostic {kind} GPU {gpu}; run "
                                     f"`dcgmi diag -r 2 -i {gpu}` there for the details"
                                     if severity == CRITICAL else
                                     f"read DCGM's warning for GPU {gpu} on {NODE}: {tests}"))
    return found


def _setting(facts: Fingerprint, name: str) -> tuple[str | None, str]:
    """(value of an NCCL variable as NCCL sees it, where it is set, in words)."""
    if name in facts.env:
        line = facts.setter(name)
        where = f"{line.file}:{line.line}" if line else "the environment"
        return facts.env[name], where
    return facts.nccl_conf().get(name), "NCCL's config file"


def _socket_ifname(facts: Fingerprint) -> list[Problem] | None:
    spec, where = _setting(facts, "NCCL_SOCKET_IFNAME")
    if not spec:
        return []
    interfaces = facts.fabric.interfaces
    names = [i.name for i in interfaces]
    chosen = [i for i in interfaces if i.name in selected("NCCL_SOCKET_IFNAME", spec, names)]
    usable = [i.name for i in interfaces if i.state in USABLE_STATES and i.name != "lo"]
    fix = (f"set NCCL_SOCKET_IFNAME (set in {where}) on {NODE} to an interface it has and "
           f"that is up ({', '.join(usable) or 'none is'}), the same one on every node where "
           "names allow")
    if not chosen:
        return [Problem(CRITICAL, f"{spec}: matches no interface (there: {', '.join(names)})",
                        fix)]
    if not any(i.state in USABLE_STATES for i in chosen):
        down = ", ".join(f"{i.name} {i.state}" for i in chosen)
        return [Problem(CRITICAL, f"{spec}: matches only interfaces that are down ({down})",
                        fix)]
    return []


def _ib_hca(facts: Fingerprint) -> list[Problem] | None:
    spec, where = _setting(facts, "NCCL_IB_HCA")
    if not spec:
        return []
    devices = facts.fabric.infiniband
    names = [d.device for d in devices]
    active = [d.device for d in devices if any(p.state == "ACTIVE" for p in d.ports)]
    chosen = selected("NCCL_IB_HCA", spec, names)
    unknown = [entry for entry in named("NCCL_IB_HCA", spec)
               if not selected("NCCL_IB_HCA", entry, names)]
    idle = [name for name in chosen if name not in active]
    if not unknown and not idle and chosen:
        return []
    what = "; ".join(part for part in (
        f"{', '.join(unknown)} matches no device there" if unknown else "",
        f"{', '.join(idle)} not active" if idle else "") if part) or "nothing selected"
    fix = (f"set NCCL_IB_HCA (set in {where}) on {NODE} to devices it has with active ports "
           f"({', '.join(active) or 'none'})"
           + (f", or bring the ports of {', '.join(idle)} up (`ibstat`)" if idle else ""))
    severity = CRITICAL if not set(chosen) & set(active) else WARNING
    return [Problem(severity, f"{spec}: {what}", fix)]


def _memlock(facts: Fingerprint) -> list[Problem] | None:
    if not facts.fabric.infiniband:
        return None
    limit = facts.limits.memlock
    if limit.soft is None or limit.ipc_lock:
        return []
    line = facts.setter("ulimit -l")
    if line:
        fix = (f"remove `{line.text}` from {NODE}'s {line.file} (line {line.line}): "
               "RDMA memory registration needs memlock unlimited")
    elif limit.hard is None:
        fix = (f"add `ulimit -l unlimited` to {NODE}'s ~/.bashrc (its hard limit allows it), "
               "or `* - memlock unlimited` in /etc/security/limits.d/ for every user")
    else:
        fix = (f"as root on {NODE}: `* - memlock unlimited` in /etc/security/limits.d/, "
               "LimitMEMLOCK=infinity for services that start ranks (slurmd), and "
               "`--ulimit memlock=-1` for containers; then log in again")
    return [Problem(CRITICAL, f"{kib(limit.soft)} (hard {kib(limit.hard)}), no "
                    "CAP_IPC_LOCK, RDMA devices present",
                    fix + " (ibv_reg_mr fails otherwise, NVIDIA/nccl-tests#206)")]


def _shm(facts: Fingerprint) -> list[Problem] | None:
    size = facts.limits.shm_bytes
    if not facts.gpus.count or size is None:
        return None
    if size >= SHM_FLOOR:
        return []
    return [Problem(CRITICAL, f"{size / 2**20:.0f} MiB",
                    f"give {NODE} a larger /dev/shm (NCCL keeps its intra-node buffers there "
                    "and fails with 'No space left', NVIDIA/nccl#342): `--shm-size=1g` or "
                    "`--ipc=host` for a container, `mount -o remount,size=50% /dev/shm` on a "
                    "host")]


RULES = (
    Rule("gpu:nvidia-smi", "answers", _nvidia_smi),
    Rule("gpu:uncorrected ECC errors", "none since the driver loaded", _each_gpu(_ecc_now)),
    Rule("gpu:row remap or page retirement", "none pending or failed", _each_gpu(_row_remaps)),
    Rule("gpu:Xid events", "none in the kernel log", _xids),
    Rule("gpu:PCIe link", "at its maximum width", _each_gpu(_pcie)),
    Rule("gpu:DCGM diagnostic", "passed", _gpu_diag),
    Rule("gpu:uncorrected ECC errors in the GPU's life", "none", _each_gpu(_ecc_past)),
    Rule("gpu:clock slowdown", "none", _each_gpu(_slowdown)),
    Rule("gpu:persistence mode", "on", _persistence),
    Rule("env:NCCL_SOCKET_IFNAME", "unset, or names an interface that is up", _socket_ifname),
    Rule("env:NCCL_IB_HCA", "unset, or names active RDMA devices", _ib_hca),
    Rule("limits:memlock", "unlimited, or CAP_IPC_LOCK", _memlock),
    Rule("limits:/dev/shm bytes", "1 GiB or more", _shm),
)
