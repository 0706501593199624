"""The collective's workers (smoke/worker.py) answer in the shapes smoke reads: a `joined` line
and `size` lines read into their types, and a line in another shape is a named problem, never a
torch version silently gone from the report. One real rank under the real torchrun and gloo
(tests/torchenv.py), on this machine alone."""

from __future__ import annotations

import json
import socket
import subprocess
from importlib import resources

import pytest
import torchenv

from clusterprep.answers import Misfit, read
from clusterprep.smoke.answers import Joined
from clusterprep.smoke.collective import CollectiveListener, RankEvents
from clusterprep.smoke.model import SizeResult


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def worker_lines(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    env, why = torchenv.ensure()
    if env is None:
        pytest.skip(why)
    worker = tmp_path_factory.mktemp("worker") / "smoke_allreduce.py"
    worker.write_bytes(resources.files("clusterprep.smoke").joinpath("worker.py").read_bytes())
    done = subprocess.run(
        [str(env / "bin" / "torchrun"), "--nnodes", "1", "--nproc_per_node", "1",
         "--master_addr", "127.0.0.1", "--master_port", str(free_port()), "--max_restarts", "0",
         str(worker), "--backend", "gloo", "--sizes", "4096", "--iters", "2", "--warmup", "1",
         "--timeout", "60"],
        capture_output=True, text=True, timeout=120, check=True, cwd=worker.parent)
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def test_a_real_workers_lines_read_into_smokes_types(worker_lines):
    kinds = [line["event"] for line in worker_lines]
    assert kinds == ["started", "joined", "size", "done"]
    joined = read(Joined, worker_lines[1])
    assert joined.world == 1 and joined.torch.startswith(torchenv.TORCH_VERSION)
    size = read(SizeResult, worker_lines[2])
    assert (size.bytes, size.wrong) == (4096, 0)


def test_a_joined_line_in_another_shape_is_a_named_problem_not_a_lost_version(worker_lines):
    events = RankEvents(CollectiveListener())
    renamed = {**worker_lines[1], "torch_version": worker_lines[1]["torch"]}
    del renamed["torch"]
    events.reader("node02", "stdout", json.dumps(renamed).encode() + b"\n")
    assert events.joined == {0} and events.torch is None
    assert events.misfits == ["rank 0's joined line: torch: missing"]
    with pytest.raises(Misfit):
        read(Joined, renamed)
