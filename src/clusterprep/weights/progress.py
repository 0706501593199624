"""Work counted in bytes on each node as it goes: a sync's stream, a full verify's hashing."""

from __future__ import annotations


class NodeBytesListener:
    """Told how far each node has got; every method does nothing by default (renderers
    override)."""

    def planned(self, nodes: dict[str, int], total_bytes: int) -> None:
        """`nodes`: the bytes each node will work through; `total_bytes`: all of the work."""

    def advanced(self, node: str, done_bytes: int) -> None:
        """A node has worked through `done_bytes` so far."""

    def finished(self, node: str) -> None:
        """A node's work has ended."""
