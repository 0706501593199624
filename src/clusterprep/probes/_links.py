"""Probe part: a symlink put in place at once, never half-made or briefly absent."""

import os


def swap_link(where, target, spare):
    """Make `where` a symlink to `target`: made as `spare` (a name of the caller's), then
    renamed over `where`, replacing a link that leads elsewhere."""
    os.makedirs(os.path.dirname(where), exist_ok=True)
    if os.path.lexists(spare):
        os.unlink(spare)
    os.symlink(target, spare)
    os.replace(spare, where)
