"""Stand-ins for what this machine has no hardware for (GPUs, InfiniBand, DCGM), given to one
simulated node at a time, each in the real thing's exact format, so that clusterprep's own code
path (the fingerprint probe reading sysfs, calling nvidia-smi and dcgmi, reading the kernel log)
is the real one:

- `fake_nvidia_smi`: an `nvidia-smi` answering `--query-gpu=` and `--query-remapped-rows=` in
  its CSV format: field names as `nvidia-smi --help-query-gpu` lists them, values spelled as
  it prints them ("Enabled", "Not Active", "[N/A]", "No"), `Field "x" is not a valid field to
  query.` for a field it does not know.
- `fake_infiniband`: a `/sys/class/infiniband` tree with the kernel's own files and wording
  (drivers/infiniband/core/sysfs.c: state `4: ACTIVE`, phys_state `5: LinkUp`, rate
  `400 Gb/sec (4X NDR)`, link_layer `InfiniBand`), mounted in the node's own mount namespace.
- `fake_kernel_log`: /dev/kmsg records (`PRIORITY,SEQUENCE,MICROSECONDS,FLAGS;MESSAGE`) with the
  NVIDIA driver's Xid lines, also mounted in the node's namespace.
- `fake_dcgmi`: a `dcgmi` whose `diag -r 1 -j` prints DCGM 4's JSON (dcgmi/Diag.cpp).
- `fake_nccl`: an NCCL library and net plugin files where the loader looks (LD_LIBRARY_PATH).
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from setupkit import add_to_bashrc

H100 = "NVIDIA H100 80GB HBM3"
BUSES = ("18", "2A", "3A", "5D", "9A", "AB", "BA", "DB")  # an 8-GPU HGX board's bus numbers


def healthy_gpu(index: int, model: str = H100, driver: str = "550.54.15") -> dict[str, str]:
    """One GPU as `nvidia-smi --query-gpu` shows a healthy, idle H100 (field: value)."""
    return {
        "index": str(index), "pci.bus_id": f"00000000:{BUSES[index % 8]}:00.0", "name": model,
        "driver_version": driver, "persistence_mode": "Enabled", "pstate": "P0",
        "ecc.mode.current": "Enabled", "ecc.errors.uncorrected.volatile.total": "0",
        "ecc.errors.uncorrected.aggregate.total": "0",
        "ecc.errors.corrected.aggregate.total": "0",
        "retired_pages.pending": "[N/A]",  # Hopper remaps rows instead of retiring pages
        "clocks_throttle_reasons.gpu_idle": "Active",
        "clocks_throttle_reasons.hw_slowdown": "Not Active",
        "clocks_throttle_reasons.hw_thermal_slowdown": "Not Active",
        "clocks_throttle_reasons.hw_power_brake_slowdown": "Not Active",
        "clocks_throttle_reasons.sw_thermal_slowdown": "Not Active",
        "pcie.link.gen.current": "5", "pcie.link.gen.max": "5",
        "pcie.link.width.current": "16", "pcie.link.width.max": "16",
        "remapped_rows.correctable": "0", "remapped_rows.uncorrectable": "0",
        "remapped_rows.pending": "No", "remapped_rows.failure": "No",
    }


# The stand-in itself: runs on the node under its system python3, reads the GPUs beside it.
_NVIDIA_SMI = r'''#!/usr/bin/python3
import json, os, sys
ALIASES = {"gpu_name": "name", "gpu_bus_id": "pci.bus_id", "gpu_uuid": "uuid",
           "retired_pages.dbe": "retired_pages.double_bit.count"}
gpus = json.load(open(os.path.join(os.path.dirname(os.path.realpath(__file__)),
                                   "nvidia-smi.json")))
args = dict(a.split("=", 1) for a in sys.argv[1:] if "=" in a)
query = args.get("--query-gpu") or args.get("--query-remapped-rows")
if query is None or "csv" not in args.get("--format", ""):
    print("fake nvidia-smi: unsupported arguments: %s" % " ".join(sys.argv[1:]))
    sys.exit(2)
fields = [f.strip() for f in query.split(",")]
known = lambda f: ALIASES.get(f, f.replace("clocks_event_reasons.", "clocks_throttle_reasons."))
for field in fields:
    if known(field) not in gpus[0]:
        print('Field "%s" is not a valid field to query.' % field)
        sys.exit(2)
if "noheader" not in args["--format"]:
    print(", ".join(fields))
for gpu in gpus:
    print(", ".join(gpu[known(f)] for f in fields))
'''


def fake_nvidia_smi(home: Path, gpus: int | list[dict[str, str]], model: str = H100,
                    driver: str = "550.54.15") -> None:
    """Give one node an `nvidia-smi` (in ~/bin, put first on PATH by ~/.bashrc) for `gpus`
    healthy GPUs, or for the GPUs given (as `healthy_gpu` makes them, then changed)."""
    devices = gpus if isinstance(gpus, list) else [healthy_gpu(i, model, driver)
                                                   for i in range(gpus)]
    bin_dir = home / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "nvidia-smi.json").write_text(json.dumps(devices))
    script = bin_dir / "nvidia-smi"
    script.write_text(_NVIDIA_SMI)
    script.chmod(0o755)
    if 'export PATH="/root/bin:$PATH"' not in (home / ".bashrc").read_text():
        add_to_bashrc(home, 'export PATH="/root/bin:$PATH"')


def ib_port(state: str = "4: ACTIVE", phys_state: str = "5: LinkUp",
            rate: str = "400 Gb/sec (4X NDR)", link_layer: str = "InfiniBand") -> dict[str, str]:
    """One port's sysfs files as the kernel writes them (healthy NDR InfiniBand by default)."""
    return {"state": state, "phys_state": phys_state, "rate": rate, "link_layer": link_layer,
            "lid": "0x1a", "sm_lid": "0x1", "lid_mask_count": "0", "cap_mask": "0xa751e848",
            "gids/0": "fe80:0000:0000:0000:a088:c203:0012:3456"}


def fake_infiniband(node, devices: dict[str, dict[int, dict[str, str]]],
                    firmware: str = "28.39.1002") -> None:
    """Give a running node a /sys/class/infiniband with `devices` ({name: {port: files}}).

    The node sees the host's sysfs; the tree is mounted in the node's own mount namespace
    only: a tmpfs over /sys/class holding the host's entries (bound back one by one, so
    /sys/class/net still shows the real interfaces) beside the stand-in's infiniband folder.
    """
    tree = node.dir / "sys-class-infiniband"
    for device, ports in devices.items():
        base = tree / device
        (base / "ports").mkdir(parents=True, exist_ok=True)
        for name, text in {"fw_ver": firmware, "node_type": "1: CA", "hca_type": "MT4129",
                           "board_id": "MT_0000000838",
                           "node_guid": "a088:c203:0012:3456"}.items():
            (base / name).write_text(text + "\n")
        for number, files in ports.items():
            for name, text in files.items():
                path = base / "ports" / str(number) / name
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text + "\n")
    host = node.dir / "sys-class-host"
    host.mkdir(exist_ok=True)
    node.run(f"""set -e
        if ! mountpoint -q /sys/class/infiniband; then
            mount --bind /sys/class {shlex.quote(str(host))}
            mount -t tmpfs -o mode=755 sys-class /sys/class
            for entry in {shlex.quote(str(host))}/*; do
                mkdir "/sys/class/${{entry##*/}}"
                mount --bind "$entry" "/sys/class/${{entry##*/}}"
            done
            umount {shlex.quote(str(host))}
            mkdir /sys/class/infiniband
        fi
        mount --bind {shlex.quote(str(tree))} /sys/class/infiniband""", check=True)


def drop_ipc_lock(home: Path) -> None:
    """Make a node's ssh sessions run without CAP_IPC_LOCK, the capability that lets root pin
    memory past the memlock limit: the simulated nodes log in as root, but training runs as
    an ordinary user (or as a container's root, which lacks it too). Done first thing in
    ~/.bashrc: the session's shell starts again under setpriv, without it."""
    bashrc = home / ".bashrc"
    bashrc.write_text(
        'if [ -z "$GPUKIT_NO_IPC_LOCK" ] && [ -n "$BASH_EXECUTION_STRING" ]; then\n'
        "    export GPUKIT_NO_IPC_LOCK=1\n"
        "    exec setpriv --bounding-set -ipc_lock --inh-caps -ipc_lock "
        '/bin/bash -c "$BASH_EXECUTION_STRING"\n'
        "fi\n" + bashrc.read_text())


def fake_kernel_log(node, messages: list[str]) -> None:
    """Give a running node a /dev/kmsg holding `messages` as kernel log records."""
    records = "".join(f"4,{900 + i},{(1234 + i) * 1000000},-;{text}\n"
                      for i, text in enumerate(messages))
    log = node.dir / "kmsg"
    log.write_text(records)
    node.run(f"mount --bind {shlex.quote(str(log))} /dev/kmsg", check=True)


def xid(bus: str, code: int, text: str, pid: int = 4242) -> str:
    """An Xid line as the NVIDIA driver logs it."""
    return f"NVRM: Xid (PCI:{bus}): {code}, pid={pid}, name=python, {text}"


def fake_dcgmi(home: Path, gpus: int, failing: dict[int, tuple[str, str]] | None = None) -> None:
    """Give one node a `dcgmi` whose `diag -r 1 -j` passes every GPU but those in `failing`
    ({gpu: (test, warning)}), as DCGM 4 prints it."""
    failing = failing or {}

    def results(test: str) -> list[dict]:
        return [{"entity_group": "GPU", "entity_group_id": 1, "entity_id": gpu,
                 "status": "Fail" if failing.get(gpu, ("",))[0] == test else "Pass",
                 **({"warnings": [{"warning": failing[gpu][1], "error_id": 28,
                                   "error_category": 10, "error_severity": 2}]}
                    if failing.get(gpu, ("",))[0] == test else {})}
                for gpu in range(gpus)]

    document = {"DCGM Diagnostic": {"test_categories": [
        {"category": "Deployment", "tests": [
            {"name": name, "results": results(name), "test_summary": {"status": "Pass"}}
            for name in ("Denylist", "NVML Library", "CUDA Main Library", "Permissions and "
                         "OS-related Blocks", "Persistence Mode", "Environment Variables",
                         "Page Retirement/Row Remap", "Graphics Processes", "Inforom")]}]},
        "metadata": {"version": "4.2.3", "Driver Version Detected": "550.54.15"}}
    bin_dir = home / "bin"
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / "dcgmi"
    script.write_text("#!/bin/sh\n"
                      'if [ "$*" != "diag -r 1 -j" ]; then echo "fake dcgmi: $*" >&2; exit 2; fi\n'
                      f"cat <<'JSON'\n{json.dumps(document, indent=4)}\nJSON\n"
                      f"exit {1 if failing else 0}\n")
    script.chmod(0o755)


def fake_nccl(home: Path, version: str = "2.19.3", plugins: tuple[str, ...] = ()) -> None:
    """Give one node an NCCL library (libnccl.so.VERSION and its links) and net plugins in
    ~/nccl/lib, on LD_LIBRARY_PATH. The probe reads only their names and links (it never
    loads them), so the files stand in as empty files."""
    lib = home / "nccl" / "lib"
    lib.mkdir(parents=True, exist_ok=True)
    (lib / f"libnccl.so.{version}").write_bytes(b"")
    for link in ("libnccl.so.2", "libnccl.so"):
        (lib / link).symlink_to(f"libnccl.so.{version}")
    for plugin in plugins:
        (lib / plugin).write_bytes(b"")
    add_to_bashrc(home, "export LD_LIBRARY_PATH=/root/nccl/lib")
