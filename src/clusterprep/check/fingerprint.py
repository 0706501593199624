"""A node's raw fingerprint (from `probes/fingerprint.py`) as flat, comparable items.

Items are named `group:detail` (`package:torch`, `env:NCCL_DEBUG`, `ib:mlx5_0 port 1`).
`severity(item)` says how much a difference in that item matters: critical where it changes
what code runs or how nodes talk, warning otherwise.
"""

from __future__ import annotations

from typing import Any

from clusterprep.check.model import CRITICAL, WARNING

ABSENT = "(absent)"

# Environment variables whose differences change what code runs, not only how it is tuned.
_CRITICAL_ENV = {"LD_LIBRARY_PATH", "LD_PRELOAD", "PYTHONPATH", "PYTHONHOME"}
_CRITICAL_GROUPS = {"python", "shell", "package", "build", "shadowed", "torch", "nvcc", "gpu",
                    "nccl", "ib"}


def items(fingerprint: dict[str, Any]) -> dict[str, Any]:
    """Flatten a raw fingerprint into `{item: value}`; values are compared for equality."""
    found: dict[str, Any] = {}
    python = fingerprint.get("python", {})
    found["python:version"] = python.get("version")
    found["python:executable"] = python.get("executable")
    found["python:user site enabled"] = python.get("user_site_enabled")
    for name, path in fingerprint.get("shell_python", {}).items():
        found[f"shell:{name} on PATH"] = path or ABSENT
    for name, package in fingerprint.get("packages", {}).items():
        found[f"package:{name}"] = package.get("version")
        if package.get("build"):
            found[f"build:{name}"] = package["build"]
    for shadow in fingerprint.get("shadowed", []):
        found[f"shadowed:{shadow['package']}"] = (
            f"{shadow['version']} from {shadow['location']} ({shadow['via']})")
    torch = fingerprint.get("torch", {})
    for key in ("version", "cuda", "cudnn", "nccl", "gpus"):
        if key in torch:
            found[f"torch:{key}"] = torch[key]
    if "error" in torch:
        found["torch:import"] = torch["error"]
    found["nvcc:release"] = fingerprint.get("nvcc") or ABSENT
    gpus = fingerprint.get("gpus", {})
    found["gpu:count"] = gpus.get("count", 0)
    found["gpu:models"] = ", ".join(gpus.get("models", [])) or ABSENT
    found["gpu:driver"] = gpus.get("driver") or ABSENT
    system = fingerprint.get("system", {})
    for key in ("kernel", "glibc", "cpu"):
        found[f"system:{key}"] = system.get(key)
    for name, value in fingerprint.get("env", {}).items():
        found[f"env:{name}"] = value
    limits = fingerprint.get("limits", {})
    found["limits:open files"] = limits.get("open_files")
    found["limits:/dev/shm bytes"] = limits.get("shm_bytes")
    if "memlock" in limits:
        found["limits:memlock"] = kib(limits["memlock"]["soft"])
    found.update(_communication(fingerprint))
    return found


def kib(limit: int | None) -> str:
    """A memlock limit in bytes as `ulimit -l` words it."""
    return "unlimited" if limit is None else f"{limit // 1024} KiB"


def _communication(fingerprint: dict[str, Any]) -> dict[str, Any]:
    """Items of how a node talks: the NCCL it loads and its plugins, NCCL's config files, its
    RDMA ports and physical interfaces (addresses differ by design: not compared)."""
    found: dict[str, Any] = {}
    nccl = fingerprint.get("nccl") or {}
    library = nccl.get("library")
    found["nccl:library"] = (f"{library.get('version') or 'unknown version'} "
                             f"({library['real_path']})" if library else ABSENT)
    plugins = sorted(plugin["name"] for plugin in nccl.get("plugins", []))
    found["nccl:net plugins"] = ", ".join(plugins) or ABSENT
    for name, value in nccl_conf(fingerprint).items():
        found[f"nccl.conf:{name}"] = value
    fabric = fingerprint.get("fabric", {})
    for device in fabric.get("infiniband", []):
        found[f"ib:{device['device']} firmware"] = device.get("firmware") or ABSENT
        for port in device["ports"]:
            found[f"ib:{device['device']} port {port['port']}"] = port_text(port)
    for interface in fabric.get("interfaces", []):
        if interface["physical"]:
            found[f"net:{interface['name']}"] = f"{interface['state']}, mtu {interface['mtu']}"
    return found


def nccl_conf(fingerprint: dict[str, Any]) -> dict[str, str]:
    """The variables NCCL's config files set, the later file winning as in NCCL."""
    merged: dict[str, str] = {}
    for values in (fingerprint.get("nccl") or {}).get("conf", {}).values():
        merged.update(values)
    return merged


def port_text(port: dict[str, Any]) -> str:
    return ", ".join(str(port.get(key)) for key in ("state", "phys_state", "rate", "link_layer"))


def severity(item: str) -> str:
    group, _, detail = item.partition(":")
    if group == "ib" and detail.endswith(" firmware"):  # ports still talk; worth aligning
        return WARNING
    if group in _CRITICAL_GROUPS:
        return CRITICAL
    if group == "env" and detail in _CRITICAL_ENV:
        return CRITICAL
    return WARNING
