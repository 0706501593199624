"""Ctrl-C inside a phase: the phase stops its work on the nodes, keeps what it found, marks
itself interrupted and returns, so the run can still clean up and report."""

from __future__ import annotations

import asyncio


def acknowledge() -> None:
    """The phase has handled the cancellation (Ctrl-C): undo it, so later awaits (the sweep,
    closing connections) still run (Python 3.11+; earlier ones need nothing)."""
    task = asyncio.current_task()
    uncancel = getattr(task, "uncancel", None)
    if uncancel is not None:
        uncancel()
