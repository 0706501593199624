"""Probe answers are read once, into types: a field a probe renamed, dropped or filled with
the wrong kind of value is an error naming the node, the probe and the field, never a rule
that silently stops judging; and every shape smoke reads is what its probe really says."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from dataclasses import dataclass, field

import pytest

from clusterprep import probes
from clusterprep.answers import Misfit, key, read
from clusterprep.errors import PROBE_FAILED
from clusterprep.smoke import answers as smoke


@dataclass(frozen=True)
class Gpu:
    name: str
    memory_mib: int


@dataclass(frozen=True)
class Facts:
    hostname: str
    gpus: list[Gpu] = field(default_factory=list)
    load: float | None = None
    sender: str = key("from", default="")


def test_an_answer_that_fits_is_read_into_its_types():
    facts = read(Facts, {"hostname": "node01", "gpus": [{"name": "H100", "memory_mib": 81559}],
                         "load": 1, "from": "head", "newer_probe_says": "more"})
    assert facts == Facts("node01", [Gpu("H100", 81559)], 1.0, "head")


@pytest.mark.parametrize(("answer", "said"), [
    ({"gpus": []}, "hostname: missing"),
    ({"hostname": "n", "gpus": [{"name": "H100", "memory_mib": "n/a"}]},
     "gpus[0].memory_mib: expected a whole number, got 'n/a'"),
    ({"hostname": "n", "gpus": {"name": "H100"}}, "gpus: expected a list, got {'name': 'H100'}"),
    ({"hostname": "n", "gpus": [{"name": "H100", "memory_mib": True}]},
     "gpus[0].memory_mib: expected a whole number, got True"),
    ({"hostname": 7}, "hostname: expected text, got 7"),
    ([], "the answer: expected an object, got []"),
])
def test_an_answer_that_does_not_fit_names_the_field(answer, said):
    with pytest.raises(Misfit) as caught:
        read(Facts, answer)
    assert str(caught.value) == said
    error = caught.value.error("node03", "fingerprint")
    assert error.kind == PROBE_FAILED and error.message == f"node03: fingerprint: {said}"


class NodeProbe:
    """smoke's node probe run here, as on a node: stages in, events out, one at a time."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", probes.load("smoke_node")], text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)

    def say(self, message: dict) -> None:
        self.process.stdin.write(json.dumps(message) + "\n")
        self.process.stdin.flush()

    def hear(self) -> dict:
        return json.loads(self.process.stdout.readline())

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=30)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_every_shape_smoke_reads_is_what_its_probe_says():
    token, port = "t" * 32, free_port()
    node = NodeProbe()
    try:
        node.say({"stage": "names", "names": ["localhost", "no-such-name.invalid"]})
        names = read(smoke.NamesAnswer, node.hear())
        assert names.resolved["localhost"].addresses
        assert names.resolved["no-such-name.invalid"].error != "?"

        node.say({"stage": "rendezvous", "node": "here", "token": token, "port": port,
                  "listen": True, "master": "127.0.0.1", "timeout": 5})
        assert read(smoke.MasterOpened, node.hear()).event == "master-listening"
        node.say({"dial": True})
        dialed = read(smoke.Dialed, node.hear())
        assert dialed.ok and dialed.seconds is not None
        node.say({"stop": True})
        assert read(smoke.Heard, node.hear()).nodes == ["here"]

        node.say({"stage": "links", "node": "here", "token": token, "address": "127.0.0.1",
                  "variables": ["GLOO_SOCKET_IFNAME"], "timeout": 5})
        listening = read(smoke.Listening, node.hear())
        assert listening.error is None and listening.port > 0
        me = ["here", listening.address, listening.port]
        node.say({"peers": [me], "next": me, "seconds": 0.2})
        sent = read(smoke.Sent, node.hear())
        assert [p.ok for p in sent.pairs] == [True] and sent.stream and sent.stream.ok
        node.say({"stop": True})
        received = read(smoke.Received, node.hear())
        assert received.heard == ["here"] and received.streams[0].sender == "here"
        assert received.streams[0].bytes == sent.stream.bytes
    finally:
        node.close()


def test_the_sweep_answers_in_the_shape_smoke_reads(tmp_path):
    request = json.dumps({"marker": "CLUSTERPREP_TEST_NOTHING=1", "prefix": "none-"})
    done = subprocess.run([sys.executable, "-I", "-S", "-c", probes.load("smoke_sweep")],
                          input=request, capture_output=True, text=True, timeout=60,
                          check=True)
    assert read(smoke.Swept, json.loads(done.stdout)) == smoke.Swept([], [])
