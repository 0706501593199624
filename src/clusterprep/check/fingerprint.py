"""A node's raw fingerprint (from `probes/fingerprint.py`) as flat, comparable items.

Items are named `group:detail` (`package:torch`, `env:NCCL_DEBUG`). `severity(item)` says how
much a difference in that item matters: critical where it changes what code runs or how nodes
talk, warning otherwise.
"""

from __future__ import annotations

from typing import Any

from clusterprep.check.model import CRITICAL, WARNING

ABSENT = "(absent)"

# Environment variables whose differences change what code runs, not only how it is tuned.
_CRITICAL_ENV = {"LD_LIBRARY_PATH", "LD_PRELOAD", "PYTHONPATH", "PYTHONHOME"}
_CRITICAL_GROUPS = {"python", "shell", "package", "build", "shadowed", "torch", "nvcc", "gpu"}


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
    return found


def severity(item: str) -> str:
    group, _, detail = item.partition(":")
    if group in _CRITICAL_GROUPS:
        return CRITICAL
    if group == "env" and detail in _CRITICAL_ENV:
        return CRITICAL
    return WARNING
