"""`clusterprep smoke`'s progress on stderr: a line as each phase starts and ends, and the
collective's milestones, as they happen (without rich: they print before any table)."""

from __future__ import annotations

import sys

from clusterprep.smoke.answers import Joined
from clusterprep.smoke.model import PhaseResult, SizeResult
from clusterprep.smoke.runner import SmokeListener


def counted(n: int, word: str, plural: str = "") -> str:
    return f"{n} {word if n == 1 else plural or word + 's'}"


class ProgressLines(SmokeListener):
    """One line on stderr per phase, and the collective's milestones, as they happen."""

    def __init__(self) -> None:
        self.joined = 0

    def phase_started(self, name: str) -> None:
        print(f"smoke: {name} ...", file=sys.stderr, flush=True)

    def phase_finished(self, result: PhaseResult) -> None:
        state = "interrupted" if result.interrupted else "ok" if result.ok else (
            f"FAILED ({counted(len(result.problems), 'problem')})")
        print(f"smoke: {result.name} {state} ({result.seconds:.1f} s)", file=sys.stderr,
              flush=True)

    def rank_joined(self, node: str, rank: int, joined: Joined) -> None:
        self.joined += 1
        if self.joined == joined.world:
            print(f"smoke: collective: all {self.joined} ranks joined (torch {joined.torch})",
                  file=sys.stderr, flush=True)

    def size_measured(self, node: str, size: SizeResult) -> None:
        print(f"smoke: collective: {size.bytes} bytes, busbw {size.busbw:.3f} GB/s, "
              f"#wrong {size.wrong}", file=sys.stderr, flush=True)
