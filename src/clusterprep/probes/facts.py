"""Probe: what a node is (hostname, OS, CPUs, GPUs). Stdlib only; runs on the node."""

import json
import os
import platform
import shutil
import subprocess
import sys


def os_name():
    try:
        with open("/etc/os-release") as f:
            fields = dict(line.rstrip("\n").split("=", 1) for line in f if "=" in line)
        return fields.get("PRETTY_NAME", "").strip('"') or platform.platform()
    except OSError:
        return platform.platform()


def gpus():
    if shutil.which("nvidia-smi") is None:
        return [], None
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return [], "nvidia-smi failed: %s" % e
    if out.returncode != 0:
        return [], "nvidia-smi exited %d: %s" % (out.returncode, out.stderr.strip()[-200:])
    found = []
    for line in out.stdout.strip().splitlines():
        name, _, driver = line.partition(",")
        found.append({"name": name.strip(), "driver": driver.strip()})
    return found, None


def main():
    sys.stdin.buffer.read()  # this probe takes no input
    found, gpu_error = gpus()
    print(json.dumps({
        "hostname": platform.node(),
        "os": os_name(),
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "gpus": found,
        "gpu_error": gpu_error,
        "python": platform.python_version(),
    }))


main()
