"""Code the probes share, checked as the nodes run it: where a node's hub cache is (the rule
huggingface_hub itself follows, asked of the real huggingface_hub), and files written whole."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from clusterprep.probes import _atomic, load

HUB_SAYS = "import json, huggingface_hub.constants as c; print(json.dumps(c.HF_HUB_CACHE))"
PART_SAYS = ("import json, sys; sys.path.insert(0, %r); from _hubcache import hub_cache; "
             "print(json.dumps(hub_cache()))" % str(Path(_atomic.__file__).parent))


def _run(code: str, env: dict[str, str], cwd: Path) -> object:
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=cwd, check=True,
                          capture_output=True, text=True)
    return json.loads(done.stdout)


@pytest.mark.parametrize("settings, source", [
    ({}, "default"),
    ({"XDG_CACHE_HOME": "/srv/xdg"}, "default"),
    ({"HF_HOME": "~/hf"}, "HF_HOME"),
    ({"HF_HOME": "relative/hf"}, "HF_HOME"),
    ({"HF_HOME": "$WORK/hf", "WORK": "/scratch/me"}, "HF_HOME"),
    ({"HF_HOME": "/hf", "HF_HUB_CACHE": "~/hub-here"}, "HF_HUB_CACHE"),
    ({"HUGGINGFACE_HUB_CACHE": "old/style"}, "HUGGINGFACE_HUB_CACHE"),
    ({"HF_HUB_CACHE": "/new", "HUGGINGFACE_HUB_CACHE": "/old"}, "HF_HUB_CACHE"),
    ({"HF_HOME": ""}, "HF_HOME"),
])
def test_a_nodes_hub_cache_is_where_huggingface_hub_puts_it(tmp_path, settings, source):
    # A relative path is relative to the folder the process runs in, for huggingface_hub too.
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path / "home"), **settings}
    hub = _run(HUB_SAYS, env, tmp_path)
    cache, decided_by = _run(PART_SAYS, env, tmp_path)
    assert cache == os.path.abspath(os.path.join(tmp_path, hub))
    assert decided_by == source


def test_every_probe_that_needs_the_hub_cache_uses_the_one_rule():
    for name in ("hfcache", "fingerprint"):
        assert "def hub_cache():" in load(name), name
    assert "HF_HUB_CACHE" not in load("hfreceive")  # it is told the cache by the head


def test_a_file_is_written_whole_or_not_at_all(tmp_path):
    final = tmp_path / "stamps.json"
    _atomic.write_atomically(str(final), b"first")
    os.chmod(final, 0o640)
    _atomic.write_atomically(str(final), b"second", like=os.stat(final))
    assert final.read_bytes() == b"second" and final.stat().st_mode & 0o777 == 0o640
    aside = _atomic.Aside(str(final))
    aside.write(b"half")
    assert final.read_bytes() == b"second"  # nothing under the final name until commit
    aside.discard()
    assert sorted(p.name for p in final.parent.iterdir()) == ["stamps.json"]


def test_a_writer_killed_mid_write_leaves_the_old_file_and_a_named_partial(tmp_path):
    final = tmp_path / "token"
    final.write_bytes(b"old")
    script = ("import sys, os; sys.path.insert(0, %r); from _atomic import Aside; "
              "a = Aside(%r); a.write(b'new, half'); os.kill(os.getpid(), 9)"
              % (str(Path(_atomic.__file__).parent), str(final)))
    subprocess.run([sys.executable, "-c", script])
    assert final.read_bytes() == b"old"
    left = [p.name for p in tmp_path.iterdir() if p.name != "token"]
    assert len(left) == 1 and left[0].endswith(_atomic.PARTIAL)


def test_each_part_is_inlined_once_however_many_parts_use_it():
    source = load("hfreceive")
    assert source.count("def write_atomically(") == 1
    assert source.count("def stamp_of(") == 1
    assert "inlined by probes.load" not in source
