"""A launch's files on the head: every node's whole output, one file per node, and the JSON
summary, in a folder of its own (by default a new one per launch under ./launches/)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import IO, Any

from clusterprep.localfiles import write_atomically


def default_folder(run: str) -> Path:
    return Path("launches") / f"{time.strftime('%Y%m%d-%H%M%S')}-{run}"


class RunLogs:
    """Appends each node's lines to `FOLDER/NODE.log` as they arrive."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._files: dict[str, IO[str]] = {}

    def open(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)

    def line(self, node: str, text: str) -> None:
        file = self._files.get(node)
        if file is None:
            file = self._files[node] = open(self.folder / f"{_safe(node)}.log", "a",
                                            encoding="utf-8", buffering=1)
        file.write(text + "\n")

    def close(self) -> None:
        for file in self._files.values():
            file.close()
        self._files.clear()


def write_summary(folder: Path, document: dict[str, Any]) -> Path:
    """The launch's JSON summary beside the logs, written whole or not at all."""
    path = folder / "summary.json"
    write_atomically(path, (json.dumps(document, indent=2) + "\n").encode())
    return path


def _safe(node: str) -> str:
    """A node's name as a file name (`alice@gpu-01` stays; a slash would not)."""
    return node.replace("/", "_")
