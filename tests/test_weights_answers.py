"""The weights probes answer in the shapes sync, verify, the loads and the placement read: the
real probes (hfcache, placement, weights_load, and hfreceive's event lines), run on this machine
as a node runs them, read into their types; an answer in another shape is the node's error
naming the field, never a file taken for present or a receiver's end missed."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from clusterprep import probes
from clusterprep.answers import Misfit, read
from clusterprep.errors import PROBE_FAILED
from clusterprep.weights.answers import (
    CacheAnswer,
    Done,
    Ended,
    LoadsAnswer,
    PlacementAnswer,
    Unreadable,
)
from clusterprep.weights.receiver import NodeSync, Receiver

REPO = "models--org--alpha"


def run_probe(name: str, payload: dict, env: dict[str, str] | None = None) -> dict:
    """The probe as a node runs it: its script and input on stdin, one JSON object out."""
    source = probes.load(name)
    done = subprocess.run(["bash", "-c", probes.command(source)],
                          input=source.encode() + json.dumps(payload).encode() + b"\n",
                          capture_output=True, timeout=60, env={**os.environ, **(env or {})})
    assert done.returncode == 0, done.stderr.decode()
    return json.loads(done.stdout.decode().strip().splitlines()[-1])


@pytest.fixture
def cache(tmp_path: Path) -> tuple[Path, list]:
    """A node's hub cache holding one good blob and one damaged one; the manifest's entries
    name a third that is not there."""
    root = tmp_path / "hub"
    blobs = root / REPO / "blobs"
    blobs.mkdir(parents=True)
    entries = []
    for name, body, written in (("good", b"weights", b"weights"), ("bad", b"vae", b"vaX"),
                                ("gone", b"t5", None)):
        sha = hashlib.sha256(body).hexdigest()
        if written is not None:
            (blobs / sha).write_bytes(written)
        entries.append([f"{REPO}/blobs/{sha}", "f", len(body), sha, None])
    return root, entries


def test_a_nodes_cache_answer_reads_into_its_type_naming_what_is_missing_and_corrupt(cache):
    root, entries = cache
    raw = run_probe("hfcache", {"action": "check", "entries": entries, "repos": [REPO],
                                "full": True, "hash_unstamped": False, "staging_token": None},
                    {"HF_HUB_CACHE": str(root)})
    answer = read(CacheAnswer, raw)
    assert answer.cache == str(root) and not answer.sees_staging
    assert answer.missing == [entries[2][0]]
    assert [(c.path, c.reason) for c in answer.corrupt] == [(entries[1][0], "sha256 differs")]
    assert answer.bad == [entries[2][0], entries[1][0]]


def test_a_cache_answer_with_a_renamed_field_is_the_nodes_named_error(cache):
    root, entries = cache
    raw = run_probe("hfcache", {"action": "check", "entries": entries, "repos": [REPO],
                                "full": False, "hash_unstamped": False, "staging_token": None},
                    {"HF_HUB_CACHE": str(root)})
    raw["absent"] = raw.pop("missing")
    with pytest.raises(Misfit) as misfit:
        read(CacheAnswer, raw)
    error = misfit.value.error("node03", "hfcache")
    assert error.kind == PROBE_FAILED and error.message == "node03: hfcache: missing: missing"


def test_a_placement_answer_reads_into_its_type_with_the_fix_for_each_failure(tmp_path):
    code, target = tmp_path / "code", tmp_path / "blob"
    code.mkdir()
    target.write_bytes(b"12345")
    raw = run_probe("placement", {"action": "check", "code": str(code), "items": [
        [str(code / "model.pt"), str(target), 5], [str(code / "vae.pt"), str(tmp_path / "no"), 1]]})
    answer = read(PlacementAnswer, raw)
    assert [(p.state, p.reason, p.fix) for p in answer.items] == [
        ("failed", "not placed", ["weights", "sync"]),
        ("failed", f"{tmp_path / 'no'} is not in this node's cache", ["weights", "sync"])]


def test_a_load_answer_reads_into_its_type_with_the_loaders_own_last_lines(tmp_path):
    raw = run_probe("weights_load", {
        "activate": "", "cwd": str(tmp_path), "env": {"HF_HUB_OFFLINE": "1"}, "tail": 5,
        "loads": [{"name": "t5", "command": "echo loaded", "timeout": 30, "gpu": False,
                   "stdin": None},
                  {"name": "vae", "command": "echo 'OSError: no file named x'; exit 3",
                   "timeout": 30, "gpu": False, "stdin": None},
                  {"name": "stdit", "command": "true", "timeout": 30, "gpu": True,
                   "stdin": None}]})
    answer = read(LoadsAnswer, raw)
    states = {load.name: (load.state, load.tail, load.exit) for load in answer.loads}
    assert states["t5"] == ("ok", [], 0)
    assert states["vae"] == ("failed", ["OSError: no file named x"], 3)
    assert states["stdit"][0] == ("ok" if answer.gpus else "skipped")


def receiver() -> tuple[Receiver, asyncio.Queue]:
    events: asyncio.Queue = asyncio.Queue()
    target = SimpleNamespace(node=SimpleNamespace(name="node02"), outcome=NodeSync("node02"))
    return Receiver(target, None, "10.0.0.2", events, lambda node, at: None), events


def test_a_receivers_last_word_is_read_as_its_type_and_recorded():
    async def scenario() -> None:
        node, events = receiver()
        failed = {"path": f"{REPO}/blobs/ab", "reason": "No space left on device",
                  "errno": 28, "unwritten": 4096, "where": "/hub"}
        done = {"event": "done", "error": None, "free_at_start": 10, "bytes": 8192,
                "written": 1, "failed": [failed], "passed_to": 3, "read": 0,
                "blocked": {"disk": 0.5}}
        node._lines("node02", "stdout", json.dumps(done).encode() + b"\n")
        _, event = events.get_nowait()
        assert isinstance(event, Done) and node.done == event and node.position == 8192
        node.ended = node.started
        node.record()
        outcome = node.target.outcome
        assert (outcome.files_written, outcome.free_at_start, outcome.blocked) == (1, 10,
                                                                                   {"disk": 0.5})
        assert outcome.disk_full and outcome.failed[0].unwritten == 4096

    asyncio.run(scenario())


def test_a_receiver_line_in_another_shape_is_unreadable_and_names_the_field():
    async def scenario() -> None:
        node, events = receiver()
        node._lines("node02", "stdout", b'{"event": "need", "from": 4096}\n')
        _, event = events.get_nowait()
        assert isinstance(event, Unreadable)
        assert event.error.kind == PROBE_FAILED
        assert event.error.message == "node02: hfreceive: at: missing"
        assert not isinstance(event, Ended) and node.done is None

    asyncio.run(scenario())
