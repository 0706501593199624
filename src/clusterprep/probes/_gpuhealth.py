"""Probe part: a node's GPUs and their quick health. One `nvidia-smi --query-gpu` call for every
field (a second, `--query-remapped-rows`, only where an ECC error was ever counted), the NVIDIA
driver's Xid events from the kernel log where it can be read, and, when asked, DCGM's quick
diagnostic (`dcgmi diag -r 1`). probes.load inlines it into a raw string of the fingerprint
probe, compiled only where nvidia-smi is: no three single quotes in here. Stdlib only."""

import errno
import json
import os
import re
import shutil
import subprocess

# Field names as `nvidia-smi --help-query-gpu` lists them. The clocks_throttle_reasons.* names
# are the old spelling of clocks_event_reasons.*, which every driver since still accepts.
GPU_FIELDS = (
    ("index", "index"), ("bus_id", "pci.bus_id"), ("name", "name"),
    ("driver", "driver_version"), ("persistence", "persistence_mode"), ("pstate", "pstate"),
    ("ecc_mode", "ecc.mode.current"),
    ("ecc_volatile", "ecc.errors.uncorrected.volatile.total"),
    ("ecc_aggregate", "ecc.errors.uncorrected.aggregate.total"),
    ("ecc_corrected_aggregate", "ecc.errors.corrected.aggregate.total"),
    ("retired_pending", "retired_pages.pending"),
    ("idle", "clocks_throttle_reasons.gpu_idle"),
    ("hw_slowdown", "clocks_throttle_reasons.hw_slowdown"),
    ("hw_thermal_slowdown", "clocks_throttle_reasons.hw_thermal_slowdown"),
    ("hw_power_brake_slowdown", "clocks_throttle_reasons.hw_power_brake_slowdown"),
    ("sw_thermal_slowdown", "clocks_throttle_reasons.sw_thermal_slowdown"),
    ("pcie_gen", "pcie.link.gen.current"), ("pcie_gen_max", "pcie.link.gen.max"),
    ("pcie_width", "pcie.link.width.current"), ("pcie_width_max", "pcie.link.width.max"),
)
REMAP_FIELDS = (("bus_id", "gpu_bus_id"), ("remap_pending", "remapped_rows.pending"),
                ("remap_failure", "remapped_rows.failure"),
                ("remap_uncorrectable", "remapped_rows.uncorrectable"))
NOT_AVAILABLE = ("[N/A]", "N/A", "[Not Supported]", "Not Supported", "")
INVALID_FIELD = re.compile(r'Field "([^"]+)" is not a valid field to query')
XID = re.compile(r"NVRM: Xid \(PCI:([0-9A-Fa-f:.]+)\): (\d+), "
                 r"(?:pid=[^,]*, )?(?:name=[^,]*, )?(.*)")
SMI_LIMIT = 60  # seconds; a GPU in a bad state can hang nvidia-smi
DIAG_LIMIT = 600  # dcgmi diag -r 1 takes seconds, but a busy GPU can stretch it


def run_tool(argv, limit):
    """(exit status, stdout + stderr) of a program, or (None, why it could not run)."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=limit)
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, str(e)
    return done.returncode, (done.stdout + done.stderr).strip()


def smi_query(switch, fields):
    """Rows of `nvidia-smi --query-...` as dicts, or (None, error). A field this driver does not
    know is dropped and the query asked again (it names the field), not failed."""
    fields = list(fields)
    while True:
        status, output = run_tool(
            ["nvidia-smi", "%s=%s" % (switch, ",".join(f for _, f in fields)),
             "--format=csv,noheader,nounits"], SMI_LIMIT)
        unknown = INVALID_FIELD.search(output or "")
        if unknown and any(f == unknown.group(1) for _, f in fields):
            fields = [(k, f) for k, f in fields if f != unknown.group(1)]
            continue
        if status != 0:
            return None, "nvidia-smi %s: %s" % (
                "timed out or could not start" if status is None else "exited %d" % status,
                (output or "no output")[-300:])
        rows = []
        for line in output.splitlines():
            values = [v.strip() for v in line.split(", ")]
            if len(values) == len(fields):
                rows.append({key: None if value in NOT_AVAILABLE else value
                             for (key, _), value in zip(fields, values)})
        return rows, None


def gpus():
    """Every GPU nvidia-smi sees, with the fields health is judged on."""
    devices, error = smi_query("--query-gpu", GPU_FIELDS)
    if error:
        return {"count": 0, "models": [], "driver": None, "devices": [], "error": error}
    # A row is remapped only after an ECC error, which the aggregate counters (kept in the
    # GPU's InfoROM for its life) record: healthy GPUs need no second nvidia-smi call.
    if any(number(d.get(k)) for d in devices
           for k in ("ecc_volatile", "ecc_aggregate", "ecc_corrected_aggregate")):
        remaps, error = smi_query("--query-remapped-rows", REMAP_FIELDS)
        by_bus = {r["bus_id"]: r for r in remaps or []}
        for device in devices:
            device.update((k, v) for k, v in by_bus.get(device["bus_id"], {}).items()
                          if k != "bus_id")
            if error:
                device["remap_error"] = error
    return {"count": len(devices), "models": sorted({d["name"] for d in devices if d["name"]}),
            "driver": devices[0]["driver"] if devices else None, "devices": devices}


def number(text):
    try:
        return int(text)
    except (TypeError, ValueError):
        return 0


def xid_events():
    """The NVIDIA driver's Xid events still in the kernel log (/dev/kmsg: since boot, as far as
    the ring buffer reaches), or why it could not be read (dmesg_restrict, a container)."""
    try:
        fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    except OSError as e:
        return {"readable": False, "why": "/dev/kmsg: %s" % e.strerror, "events": []}
    events, pending = [], b""
    try:
        while True:
            try:
                chunk = os.read(fd, 65536)  # one record per read from the device
            except BlockingIOError:
                break
            except OSError as e:
                if e.errno == errno.EPIPE:  # records overwritten while reading; go on
                    continue
                # One optional section must not cost the node its whole fingerprint.
                return {"readable": False, "why": "/dev/kmsg: %s" % e.strerror,
                        "events": events}
            if not chunk:
                break
            *records, pending = (pending + chunk).split(b"\n")
            events += [event for event in map(xid_event, records) if event]
    finally:
        os.close(fd)
    return {"readable": True, "events": events[-50:]}


def xid_event(record):
    """One /dev/kmsg record ('PRIORITY,SEQ,MICROSECONDS,FLAGS;MESSAGE') as an Xid event."""
    if b"NVRM: Xid" not in record:
        return None
    head, _, message = record.decode("utf-8", "replace").partition(";")
    match = XID.search(message)
    if not match:
        return None
    fields = head.split(",")
    seconds = number(fields[2]) / 1e6 if len(fields) > 2 else None
    return {"bus": match.group(1), "xid": int(match.group(2)), "text": match.group(3)[:200],
            "seconds_since_boot": seconds}


def gpu_diag():
    """DCGM's quick diagnostic (`dcgmi diag -r 1 -j`): per GPU, the tests that did not pass."""
    if shutil.which("dcgmi") is None:
        return {"ran": False, "why": "dcgmi is not installed"}
    status, output = run_tool(["dcgmi", "diag", "-r", "1", "-j"], DIAG_LIMIT)
    start = (output or "").find("{")
    try:
        document = json.loads(output[start:]) if start >= 0 else None
    except ValueError:
        document = None
    if not isinstance(document, dict):
        return {"ran": False, "why": "dcgmi diag %s: %s" % (
            "could not run" if status is None else "exited %d" % status,
            (output or "no output")[-300:])}
    # DCGM 4 names its root "DCGM Diagnostic" and each result's GPU `entity_id`; DCGM 3
    # named them "DCGM GPU Diagnostic" and `gpu_ids` (dcgmi/Diag.cpp, NvvsJsonStrings.h).
    root = document.get("DCGM Diagnostic") or document.get("DCGM GPU Diagnostic") or {}
    if root.get("runtime_error"):
        return {"ran": False, "why": "dcgmi diag: %s" % root["runtime_error"][:300]}
    verdicts = {}
    for category in root.get("test_categories") or []:
        for test in category.get("tests") or []:
            for result in test.get("results") or []:
                if result.get("entity_group", "GPU") != "GPU":
                    continue
                ids = result.get("entity_id", result.get("gpu_ids", ""))
                for gpu in str(ids).split(","):
                    verdict = verdicts.setdefault(gpu.strip(), {"failed": [], "warned": []})
                    status_word = str(result.get("status", "")).lower()
                    if status_word.startswith(("fail", "warn")):
                        warnings = result.get("warnings") or []
                        first = warnings[0] if warnings else ""
                        text = first.get("warning", "") if isinstance(first, dict) else first
                        kind = "failed" if status_word.startswith("fail") else "warned"
                        verdict[kind].append({"test": test.get("name"), "why": str(text)[:200]})
    return {"ran": True, "gpus": verdicts}
