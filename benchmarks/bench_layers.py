"""The shape of the code, side by side for two checkouts: how long `clusterprep --version`
takes to start (median of 20, the two interleaved), how many modules pull asyncssh in when
they load, the import cycles (function-level imports included: they hide a cycle, they do not
remove it), the longest modules, and what `duplicates` reports for src/.

    python3 benchmarks/bench_layers.py [BEFORE_CHECKOUT]   # e.g. a `git worktree` of an old commit
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from importgraph import cycles, modules  # noqa: E402 (the tests check the same graph)

RUNS = 20


def start_seconds(src: Path) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import sys; from clusterprep.cli import main; "
                    "sys.argv = ['clusterprep', '--version']; main()"],
                   env={"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"}, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def importable(src: Path) -> list[str]:
    """The modules, but `__main__` (importing it runs the CLI)."""
    return sorted(name for name in modules(src) if not name.endswith("__main__"))


def asyncssh_importers(src: Path) -> list[str]:
    names = importable(src)
    script = ("import importlib, json, subprocess, sys\n"
              "names = json.loads(sys.argv[1]); found = []\n"
              "for name in names:\n"
              "    code = f'import {name}, sys; sys.exit(\"asyncssh\" in sys.modules)'\n"
              "    if subprocess.run([sys.executable, '-W', 'ignore', '-c', code]).returncode:\n"
              "        found.append(name)\n"
              "print(json.dumps(found))")
    import json
    out = subprocess.run([sys.executable, "-c", script, json.dumps(names)],
                         env={"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def longest(src: Path, count: int = 5) -> list[tuple[int, str]]:
    sizes = [(len(p.read_text().splitlines()), str(p.relative_to(src)))
             for p in (src / "clusterprep").rglob("*.py")]
    return sorted(sizes, reverse=True)[:count]


def duplicates(src: Path) -> str:
    if not shutil.which("duplicates"):
        return "(duplicates not on PATH)"
    out = subprocess.run(["duplicates", "--repo", str(src)], capture_output=True, text=True)
    return out.stdout.splitlines()[0] if out.stdout else out.stderr.strip()


def main() -> None:
    trees = {"now": ROOT / "src"}
    if len(sys.argv) > 1:
        trees = {"before": Path(sys.argv[1]) / "src", **trees}
    times: dict[str, list[float]] = {label: [] for label in trees}
    for _ in range(RUNS):
        for label, src in trees.items():
            times[label].append(start_seconds(src))
    for label, src in trees.items():
        print(f"## {label}: {src}")
        print(f"clusterprep --version: median {statistics.median(times[label]) * 1000:.0f} ms "
              f"of {RUNS}")
        importers = asyncssh_importers(src)
        print(f"modules importing asyncssh when they load: {len(importers)} of "
              f"{len(importable(src))}")
        found = cycles(src)
        print(f"import cycles: {len(found)}" + "".join(f"\n  {' -> '.join(c)}" for c in found))
        print("longest modules: " + ", ".join(f"{p} {n}" for n, p in longest(src)))
        print(f"duplicates: {duplicates(src)}")


if __name__ == "__main__":
    main()
