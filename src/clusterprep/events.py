"""Events a command prints while it runs, one JSON object per line on stdout, read as they
arrive: an output callback for `Transport.run` or `Fleet.run` that hands each event on."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any


class JsonLines:
    """Calls `on_event(node, event)` for each JSON object a node prints on a line of its own;
    other lines, and stderr, are passed over."""

    def __init__(self, on_event: Callable[[str, dict[str, Any]], None]) -> None:
        self._on_event = on_event
        self._partial: dict[str, bytes] = {}

    def __call__(self, node: str, stream: str, chunk: bytes) -> None:
        if stream != "stdout":
            return
        *lines, self._partial[node] = (self._partial.get(node, b"") + chunk).split(b"\n")
        for line in lines:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                self._on_event(node, event)
