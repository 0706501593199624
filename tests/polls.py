"""Waiting in tests for something to be true, not for a fixed time: a fixed sleep is too long
on a fast machine and too short on a loaded one (two CPUs for every simulated node)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def until(condition: Callable[[], T], what: str, within: float = 30.0,
          every: float = 0.05) -> T:
    """Poll `condition` until it returns something true, and return that; fail naming `what`
    if it has not within `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"not within {within:g} s: {what}"
        time.sleep(every)
