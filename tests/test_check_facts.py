"""The fingerprint probe's answer is read once, into check's types (check/facts.py): a real
answer reads; a field the probe renamed, dropped or filled with the wrong kind of value is
that node's error naming the field, never a health rule that silently stops judging; and
every field the rules read is one the probe really writes, on a node with GPUs, DCGM, NCCL,
InfiniBand and Xid events in its kernel log, and on nodes where those do not answer.

This machine has no GPU, RDMA device or DCGM: gpukit's stand-ins answer for them in the real
tools' formats (nvidia-smi's CSV, DCGM's JSON, the kernel's sysfs and /dev/kmsg wording), in
a mount namespace of the probe's own; the probe itself, and torch, are the real ones.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import platform
import shlex
import subprocess
import sys
import time
import typing
from pathlib import Path
from typing import Any

import gpukit
import pytest
import torchenv

from clusterprep import probes
from clusterprep.answers import Misfit, read
from clusterprep.check.facts import Clock, Fingerprint, TorchError, TorchFacts
from clusterprep.errors import PROBE_FAILED

DRIVER_DOWN = ("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
               "Make sure that the latest NVIDIA driver is installed and running.")


class ProbeNode:
    """This machine as one node for gpukit's stand-ins: its home folder, and the mounts they
    ask for, made in the probe's own mount namespace when it runs (the host's stay as they
    are)."""

    def __init__(self, home: Path) -> None:
        self.dir = home
        self.mounts: list[str] = []
        self.clock: dict[str, Any] = {}
        home.mkdir(parents=True, exist_ok=True)
        (home / ".bashrc").write_text("case $- in *i*) ;; *) return;; esac\n")

    def run(self, command: str, check: bool = False) -> None:
        self.mounts.append(command)

    def fingerprint(self, python: str = sys.executable, gpu_diag: bool = False,
                    **env: str) -> dict[str, Any]:
        """The probe's answer (its last line), run by `python` with HOME here, this node's
        bin/ first on PATH and `env`; its first line, the clock, is kept in `clock`."""
        source = probes.load("fingerprint")
        payload = {"shared": "/tmp", "gpu_diag": gpu_diag,
                   "checks": [{"name": "bash", "command": "echo $BASH_VERSION"}]}
        script = "\n".join(self.mounts + ["exec " + probes.command(source, python, False)])
        environment = {**os.environ, "HOME": str(self.dir),
                       "PATH": f"{self.dir / 'bin'}:{os.environ['PATH']}", **env}
        done = subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "bash", "-c", script],
            input=source.encode() + json.dumps(payload).encode(), env=environment,
            capture_output=True, timeout=300, check=False)
        assert done.returncode == 0, done.stderr.decode()[-2000:]
        first, *_, last = done.stdout.splitlines()
        self.clock = json.loads(first)
        return json.loads(last)


@pytest.fixture(scope="module")
def plain_node(tmp_path_factory: pytest.TempPathFactory) -> ProbeNode:
    """This machine as it is: no torch in this Python, no nvidia-smi, no RDMA device."""
    return ProbeNode(tmp_path_factory.mktemp("plain"))


@pytest.fixture(scope="module")
def plain(plain_node: ProbeNode) -> dict[str, Any]:
    return plain_node.fingerprint()


@pytest.fixture(scope="module")
def equipped(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A node with the real torch in its env, two GPUs (one with a past ECC error, so its rows
    are asked too), DCGM failing GPU 1, an NCCL with a net plugin and a config file, an
    InfiniBand port, an Xid in its kernel log, a package from outside the env, and startup
    lines setting NCCL_SOCKET_IFNAME and lowering memlock."""
    env, why = torchenv.ensure()
    if env is None:
        pytest.skip(why)
    home = tmp_path_factory.mktemp("equipped")
    node = ProbeNode(home)
    gpukit.fake_nvidia_smi(home, [gpukit.healthy_gpu(0), {
        **gpukit.healthy_gpu(1), "ecc.errors.uncorrected.aggregate.total": "2"}])
    remap_failed = ("Page Retirement/Row Remap", "GPU 1 has uncorrectable memory errors")
    gpukit.fake_dcgmi(home, 2, failing={1: remap_failed})
    gpukit.fake_nccl(home, plugins=("libnccl-net.so",))
    gpukit.fake_infiniband(node, {"mlx5_0": {1: gpukit.ib_port()}})
    gpukit.fake_kernel_log(node, [gpukit.xid("0000:18:00", 79, "GPU has fallen off the bus.")])
    outside = home / "outside"
    (outside / "oddity-1.0.dist-info").mkdir(parents=True)
    (outside / "oddity-1.0.dist-info" / "METADATA").write_text("Name: oddity\nVersion: 1.0\n")
    (home / "nccl.conf").write_text("NCCL_IB_DISABLE=0\n")
    with open(home / ".bashrc", "a") as bashrc:
        bashrc.write("export NCCL_SOCKET_IFNAME=eth0\nulimit -l 64\n")
    return node.fingerprint(
        str(env / "bin" / "python"), gpu_diag=True, NCCL_SOCKET_IFNAME="eth0",
        NCCL_CONF_FILE=str(home / "nccl.conf"), PYTHONPATH=str(outside),
        LD_LIBRARY_PATH=str(home / "nccl" / "lib"))


@pytest.fixture(scope="module")
def without_dcgm(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A GPU node asked for DCGM's diagnostic, without DCGM."""
    home = tmp_path_factory.mktemp("without-dcgm")
    node = ProbeNode(home)
    gpukit.fake_nvidia_smi(home, 1)
    return node.fingerprint(gpu_diag=True)


@pytest.fixture(scope="module")
def driver_down(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A node whose nvidia-smi cannot reach the driver (nvidia-smi's own words, exit 9)."""
    home = tmp_path_factory.mktemp("driver-down")
    node = ProbeNode(home)
    smi = home / "bin" / "nvidia-smi"
    smi.parent.mkdir()
    smi.write_text(f"#!/bin/sh\necho {shlex.quote(DRIVER_DOWN)}\nexit 9\n")
    smi.chmod(0o755)
    return node.fingerprint()


def test_this_machines_fingerprint_reads_into_its_types(plain_node, plain):
    assert abs(read(Clock, plain_node.clock).clock - time.time()) < 300
    facts = read(Fingerprint, plain)
    assert facts.python.version == platform.python_version()
    assert isinstance(facts.torch, TorchError) and "torch" in facts.torch.error
    assert (facts.gpus.count, facts.gpus.devices, facts.xid, facts.gpu_diag) == (0, [], None,
                                                                                 None)
    assert "lo" in [interface.name for interface in facts.fabric.interfaces]
    assert facts.limits.open_files > 0 and facts.disk.shared_free
    (bash,) = facts.checks
    assert bash.name == "bash" and bash.ok and bash.value


def test_a_well_equipped_nodes_fingerprint_reads_into_its_types(equipped):
    facts = read(Fingerprint, equipped)
    assert isinstance(facts.torch, TorchFacts) and facts.torch.version.startswith("2.13.0")
    assert [gpu.index for gpu in facts.gpus.devices] == ["0", "1"]
    assert facts.gpus.devices[1].ecc_aggregate == "2"
    assert facts.gpus.devices[1].remap_pending == "No"
    assert [(event.bus, event.xid) for event in facts.xid.events] == [("0000:18:00", 79)]
    assert facts.gpu_diag.ran and facts.gpu_diag.gpus["1"].failed[0].test == (
        "Page Retirement/Row Remap")
    assert facts.nccl.library.version == "2.19.3"
    assert [plugin.name for plugin in facts.nccl.plugins] == ["libnccl-net.so"]
    assert facts.nccl_conf() == {"NCCL_IB_DISABLE": "0"}
    assert facts.fabric.infiniband[0].ports[0].state == "ACTIVE"
    assert [shadow.package for shadow in facts.shadowed] == ["oddity"]
    assert facts.packages["torch"].build
    assert facts.setter("ulimit -l").text == "ulimit -l 64"
    assert facts.setter("NCCL_SOCKET_IFNAME").line > 0


def test_nodes_whose_gpus_or_dcgm_do_not_answer_read_too(without_dcgm, driver_down):
    diag = read(Fingerprint, without_dcgm).gpu_diag
    assert (diag.ran, diag.why) == (False, "dcgmi is not installed")
    gpus = read(Fingerprint, driver_down).gpus
    assert gpus.count == 0 and DRIVER_DOWN in gpus.error


def _renamed(answer: dict, path: str, new: str) -> dict:
    changed = copy.deepcopy(answer)
    *keys, last = path.split("/")
    target = changed
    for key in keys:
        target = target[int(key)] if isinstance(target, list) else target[key]
    target[new] = target.pop(last)
    return changed


def _set(answer: dict, path: str, value: Any) -> dict:
    changed = copy.deepcopy(answer)
    *keys, last = path.split("/")
    target = changed
    for key in keys:
        target = target[int(key)] if isinstance(target, list) else target[key]
    if value is dataclasses.MISSING:
        del target[int(last) if isinstance(target, list) else last]
    else:
        target[int(last) if isinstance(target, list) else last] = value
    return changed


# (a change a newer or older probe might make, what the node's error then says)
MISFITS = [
    (lambda a: _renamed(a, "gpus/devices", "gpu_list"), "gpus.devices: missing"),
    (lambda a: _renamed(a, "fabric/infiniband/0/ports", "links"),
     "fabric.infiniband[0].ports: missing"),
    (lambda a: _set(a, "gpus/devices/1/pcie_width", 16),
     "gpus.devices[1].pcie_width: expected text, got 16"),
    (lambda a: _set(a, "limits/memlock/soft", "unlimited"),
     "limits.memlock.soft: expected a whole number, got 'unlimited'"),
    (lambda a: _set(a, "xid/events/0/xid", "79"),
     "xid.events[0].xid: expected a whole number, got '79'"),
    (lambda a: _set(a, "startup_lines/ulimit -l/0/line", dataclasses.MISSING),
     "startup_lines['ulimit -l'][0].line: missing"),
    (lambda a: _set(a, "torch/version", dataclasses.MISSING), "torch.version: missing"),
    (lambda a: _set(a, "checks/0/ok", "yes"), "checks[0].ok: expected true or false, got 'yes'"),
    (lambda a: _set(a, "gpu_diag/gpus/1", []),
     "gpu_diag.gpus['1']: expected an object, got []"),
]


@pytest.mark.parametrize(("change", "said"), MISFITS, ids=[said for _, said in MISFITS])
def test_an_answer_in_another_shape_is_the_nodes_error_naming_the_field(equipped, change, said):
    with pytest.raises(Misfit) as caught:
        read(Fingerprint, change(equipped))
    error = caught.value.error("node03", "fingerprint")
    assert (error.kind, error.message) == (PROBE_FAILED, f"node03: fingerprint: {said}")


def fields_read(kind: Any) -> set[str]:
    """Every field of the types under `kind`, as `Type.field` (`Gpu.pcie_width`)."""
    if dataclasses.is_dataclass(kind):
        hints = typing.get_type_hints(kind)
        return set().union(*({f"{kind.__name__}.{field.name}"} | fields_read(hints[field.name])
                             for field in dataclasses.fields(kind)))
    return set().union(set(), *(fields_read(arg) for arg in typing.get_args(kind)))


def fields_written(kind: Any, data: Any) -> set[str]:
    """The fields of `fields_read(kind)` that `data`, a real answer, holds somewhere."""
    if dataclasses.is_dataclass(kind):
        if not isinstance(data, dict):
            return set()
        hints = typing.get_type_hints(kind)
        return set().union(set(), *({f"{kind.__name__}.{field.name}"}
                                    | fields_written(hints[field.name], data[field.name])
                                    for field in dataclasses.fields(kind)
                                    if field.name in data))
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is list and isinstance(data, list):
        return set().union(set(), *(fields_written(args[0], item) for item in data))
    if origin is dict and isinstance(data, dict):
        return set().union(set(), *(fields_written(args[1], value) for value in data.values()))
    return set().union(set(), *(fields_written(arg, data) for arg in args))


def test_every_field_the_rules_read_is_one_the_probe_writes(
        plain_node, plain, equipped, without_dcgm, driver_down):
    written = set().union(*(fields_written(Fingerprint, answer)
                            for answer in (plain, equipped, without_dcgm, driver_down)))
    assert fields_read(Fingerprint) - written == set()
    assert fields_read(Clock) - fields_written(Clock, plain_node.clock) == set()

