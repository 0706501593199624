"""A node's fingerprint (`facts.Fingerprint`, from `probes/fingerprint.py`) as flat, comparable items.

Items are named `group:detail` (`package:torch`, `env:NCCL_DEBUG`, `ib:mlx5_0 port 1`).
`severity(item)` says how much a difference in that item matters: critical where it changes
what code runs or how nodes talk, warning otherwise.
"""

from __future__ import annotations

from typing import Any

from clusterprep.check.facts import Fingerprint, IbPort, TorchError
from clusterprep.check.model import CRITICAL, WARNING

ABSENT = "(absent)"

# Environment variables whose differences change what code runs, not only how it is tuned.
_CRITICAL_ENV = {"LD_LIBRARY_PATH", "LD_PRELOAD", "PYTHONPATH", "PYTHONHOME"}
_CRITICAL_GROUPS = {"python", "shell", "package", "build", "shadowed", "torch", "nvcc", "gpu",
                    "nccl", "ib"}


def items(facts: Fingerprint) -> dict[str, Any]:
    """Flatten a fingerprint into `{item: value}`; values are compared for equality."""
    found: dict[str, Any] = {}
    found["python:version"] = facts.python.version
    found["python:executable"] = facts.python.executable
    found["python:user site enabled"] = facts.python.user_site_enabled
    for name, path in facts.shell_python.items():
        found[f"shell:{name} on PATH"] = path or ABSENT
    for name, package in facts.packages.items():
        found[f"package:{name}"] = package.version
        if package.build:
            found[f"build:{name}"] = package.build
    for shadow in facts.shadowed:
        found[f"shadowed:{shadow.package}"] = (
            f"{shadow.version} from {shadow.location} ({shadow.via})")
    torch = facts.torch
    if isinstance(torch, TorchError):
        found["torch:import"] = torch.error
    else:
        for key in ("version", "cuda", "cudnn", "nccl", "gpus"):
            found[f"torch:{key}"] = getattr(torch, key)
    found["nvcc:release"] = facts.nvcc or ABSENT
    found["gpu:count"] = facts.gpus.count
    found["gpu:models"] = ", ".join(facts.gpus.models) or ABSENT
    found["gpu:driver"] = facts.gpus.driver or ABSENT
    found["system:kernel"] = facts.system.kernel
    found["system:glibc"] = facts.system.glibc
    found["system:cpu"] = facts.system.cpu
    for name, value in facts.env.items():
        found[f"env:{name}"] = value
    found["limits:open files"] = facts.limits.open_files
    found["limits:/dev/shm bytes"] = facts.limits.shm_bytes
    found["limits:memlock"] = kib(facts.limits.memlock.soft)
    found.update(_communication(facts))
    return found


def kib(limit: int | None) -> str:
    """A memlock limit in bytes as `ulimit -l` words it."""
    return "unlimited" if limit is None else f"{limit // 1024} KiB"


def _communication(facts: Fingerprint) -> dict[str, Any]:
    """Items of how a node talks: the NCCL it loads and its plugins, NCCL's config files, its
    RDMA ports and physical interfaces (addresses differ by design: not compared)."""
    found: dict[str, Any] = {}
    library = facts.nccl.library
    found["nccl:library"] = (f"{library.version or 'unknown version'} ({library.real_path})"
                             if library else ABSENT)
    plugins = sorted(plugin.name for plugin in facts.nccl.plugins)
    found["nccl:net plugins"] = ", ".join(plugins) or ABSENT
    for name, value in facts.nccl_conf().items():
        found[f"nccl.conf:{name}"] = value
    for device in facts.fabric.infiniband:
        found[f"ib:{device.device} firmware"] = device.firmware or ABSENT
        for port in device.ports:
            found[f"ib:{device.device} port {port.port}"] = port_text(port)
    for interface in facts.fabric.interfaces:
        if interface.physical:
            found[f"net:{interface.name}"] = f"{interface.state}, mtu {interface.mtu}"
    return found


def port_text(port: IbPort) -> str:
    return f"{port.state}, {port.phys_state}, {port.rate}, {port.link_layer}"


def severity(item: str) -> str:
    group, _, detail = item.partition(":")
    if group == "ib" and detail.endswith(" firmware"):  # ports still talk; worth aligning
        return WARNING
    if group in _CRITICAL_GROUPS:
        return CRITICAL
    if group == "env" and detail in _CRITICAL_ENV:
        return CRITICAL
    return WARNING
