"""Shared fixtures: simulated clusters of real sshd nodes (see tests/cluster.py)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cluster  # noqa: E402  (needs the sys.path line above)


def _require_simulation() -> None:
    reason = cluster.check_environment()
    if reason is not None:
        pytest.skip(reason)


@pytest.fixture(scope="session")
def cluster4(tmp_path_factory: pytest.TempPathFactory) -> Iterator[cluster.SimCluster]:
    """A started 4-node cluster shared by the whole session.

    Tests that stop a node, break its auth or rotate its key must undo it (or use
    make_cluster instead): the next test gets the same cluster.
    """
    _require_simulation()
    sim = cluster.SimCluster(tmp_path_factory.mktemp("cluster4"), 4)
    try:
        sim.start()
        yield sim
    finally:
        sim.stop()


@pytest.fixture
def make_cluster(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[[int], cluster.SimCluster]]:
    """A factory: make_cluster(n) returns a started n-node cluster, stopped at teardown."""
    _require_simulation()
    made: list[cluster.SimCluster] = []

    def make(n: int) -> cluster.SimCluster:
        sim = cluster.SimCluster(tmp_path_factory.mktemp(f"cluster{n}-"), n)
        made.append(sim)
        sim.start()
        return sim

    try:
        yield make
    finally:
        for sim in made:
            sim.stop()
