"""Scripts that run ON the nodes: stdlib-only Python (3.8+), JSON in on stdin, one JSON object out.

A probe travels with its input on the SSH channel's stdin, so it costs one round trip per node
and never puts data (or secrets) on a command line. The command that starts it reads exactly
the script's length from stdin and executes it; the script then reads the rest as its input.
"""

from __future__ import annotations

import re
import shlex
from importlib import resources

# A probe shares code with others through a part, `probes/_PART.py`, named on a line of its own
# in this exact form; `load` puts the part's source there, so the probe still travels as one
# script (and runs as it is from a checkout, where the import finds the part beside it). A part
# may use parts in the same way; each is inlined once, where it is first named.
_PART = re.compile(r"^from (_[a-z_]+) import [\w, ]+  # inlined by probes\.load$", re.MULTILINE)


def load(name: str) -> str:
    """The source of `probes/NAME.py`, with the parts it uses (and theirs) inlined."""
    inlined: set[str] = set()

    def inline(use: re.Match[str]) -> str:
        part = use.group(1)
        if part in inlined:
            return ""
        inlined.add(part)
        return _PART.sub(inline, _read(part))

    return _PART.sub(inline, _read(name))


def _read(name: str) -> str:
    return resources.files(__package__).joinpath(f"{name}.py").read_text(encoding="utf-8")


def command(script: str, python: str = "python3", isolated: bool = True) -> str:
    """The remote command that runs `script` (sent first on stdin) with the node's `python`.

    `isolated` (the default, for stdlib-only probes) starts Python with `-I -S`: no site
    packages, no PYTHON* variables, no user site. A node's broken PYTHONPATH or PYTHONHOME then
    cannot break the probe, and each start is a few milliseconds cheaper on every node. Probes
    that must see an environment as it is (the fingerprint, the wandb check) pass False.
    """
    size = len(script.encode())
    bootstrap = f"import sys; exec(compile(sys.stdin.buffer.read({size}), 'probe', 'exec'))"
    flags = " -I -S" if isolated else ""
    return f"{shlex.quote(python)}{flags} -c {shlex.quote(bootstrap)}"
