"""Ctrl-C, handled: the one way code that caught the cancellation of its task says so."""

from __future__ import annotations

import asyncio


def acknowledge() -> None:
    """The cancellation (Ctrl-C) of the current task was handled here: undo it, so that later
    awaits (a sweep, closing connections, the report) still run (Python 3.11+; earlier ones
    need nothing)."""
    uncancel = getattr(asyncio.current_task(), "uncancel", None)
    if uncancel is not None:
        uncancel()
