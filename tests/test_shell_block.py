"""The ~/.bashrc block: on top, byte-for-byte idempotent, removed exactly (probes/shell.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

PROBE = Path(__file__).resolve().parent.parent / "src" / "clusterprep" / "probes" / "shell.py"
BLOCK = "# >>> clusterprep >>>\nexport PYTHONNOUSERSITE=True\n# <<< clusterprep <<<\n"
GUARD = b"case $- in\n    *i*) ;;\n      *) return;;\nesac\n"


def shell_probe(home: Path, mode: str, block: str = BLOCK) -> dict:
    done = subprocess.run([sys.executable, str(PROBE)], input=json.dumps(
        {"block": block, "mode": mode}), capture_output=True, text=True, env={"HOME": str(home)},
        check=True)
    return json.loads(done.stdout)


@pytest.mark.parametrize("original", [
    GUARD + b"alias ll='ls -l'\n",
    b"no final newline",
    b"",
    b"\xff\xfe not utf-8\r\n" + GUARD,
])
def test_apply_then_remove_gives_back_the_same_bytes(tmp_path, original):
    bashrc = tmp_path / ".bashrc"
    bashrc.write_bytes(original)
    bashrc.chmod(0o640)
    assert shell_probe(tmp_path, "probe")["ok"] is False
    assert shell_probe(tmp_path, "apply")["changed"] is True
    applied = bashrc.read_bytes()
    assert applied == BLOCK.encode() + original  # above the interactive guard
    assert shell_probe(tmp_path, "apply")["changed"] is False
    assert bashrc.read_bytes() == applied
    assert shell_probe(tmp_path, "probe")["ok"] is True
    shell_probe(tmp_path, "remove")
    assert bashrc.read_bytes() == original
    assert bashrc.stat().st_mode & 0o777 == 0o640


def test_a_changed_recipe_replaces_the_block_in_place(tmp_path):
    bashrc = tmp_path / ".bashrc"
    bashrc.write_bytes(GUARD)
    shell_probe(tmp_path, "apply")
    newer = BLOCK.replace("True", "1")
    assert shell_probe(tmp_path, "probe", newer)["ok"] is False
    shell_probe(tmp_path, "apply", newer)
    assert bashrc.read_bytes() == newer.encode() + GUARD
    shell_probe(tmp_path, "remove", newer)
    assert bashrc.read_bytes() == GUARD


def test_a_bashrc_created_by_up_is_deleted_by_down(tmp_path):
    shell_probe(tmp_path, "apply")
    assert (tmp_path / ".bashrc").read_text().startswith("# >>> clusterprep >>> (file created)")
    assert shell_probe(tmp_path, "apply")["changed"] is False
    shell_probe(tmp_path, "remove")
    assert not (tmp_path / ".bashrc").exists()


def test_an_unterminated_block_is_refused_not_guessed(tmp_path):
    (tmp_path / ".bashrc").write_text("# >>> clusterprep >>>\nexport X=1\n")
    answer = shell_probe(tmp_path, "apply")
    assert answer["ok"] is False and "without its end line" in answer["error"]
