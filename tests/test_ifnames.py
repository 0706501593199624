"""One reading of NCCL's and gloo's interface lists, shared by `check` (on the head) and
`smoke` (inside its node probe), so the two never judge one NCCL_SOCKET_IFNAME differently."""

from __future__ import annotations

import pytest

from clusterprep import probes
from clusterprep.probes._ifnames import named, selected

NAMES = ["lo", "eth0", "eth1", "ens5", "docker0", "ib0"]


@pytest.mark.parametrize(("spec", "chosen"), [
    ("eth", ["eth0", "eth1"]),             # a prefix
    ("eth,ib", ["eth0", "eth1", "ib0"]),   # a list of prefixes
    ("=eth0", ["eth0"]),                   # exact names
    ("=eth", []),
    ("^docker,lo", ["eth0", "eth1", "ens5", "ib0"]),  # excluding prefixes
    ("^=eth0", ["lo", "eth1", "ens5", "docker0", "ib0"]),  # excluding exact names
    (" eth0", []),                         # NCCL strips no spaces
])
def test_nccl_reads_prefixes_exact_names_and_exclusions(spec, chosen):
    assert selected("NCCL_SOCKET_IFNAME", spec, NAMES) == chosen


def test_an_hca_list_names_ports_that_are_not_part_of_the_device():
    devices = ["mlx5_0", "mlx5_1", "mlx5_10"]
    assert selected("NCCL_IB_HCA", "mlx5_0:1,mlx5_1:1", devices) == ["mlx5_0", "mlx5_1",
                                                                     "mlx5_10"]
    assert selected("NCCL_IB_HCA", "=mlx5_1:1", devices) == ["mlx5_1"]
    assert named("NCCL_IB_HCA", "=mlx5_1:1,mlx5_9") == ["mlx5_1", "mlx5_9"]
    assert named("NCCL_IB_HCA", "^mlx5_1") == []


def test_gloo_takes_exact_names_only():
    assert selected("GLOO_SOCKET_IFNAME", "eth0,ens5", NAMES) == ["eth0", "ens5"]
    assert selected("GLOO_SOCKET_IFNAME", "eth", NAMES) == []
    assert selected("GLOO_SOCKET_IFNAME", "^eth0", NAMES) == []


def test_the_smoke_probe_carries_the_same_reading():
    assert "def selected(variable, spec, names):" in probes.load("smoke_node")
    assert "def matching" not in probes.load("smoke_node")
