"""The launchers' own hostfile parsers, run for real on what `smoke` wrote: DeepSpeed's
(`deepspeed/launcher/runner.py`: fetch_hostfile, _parse_hostfile) and colossalai's
(`colossalai/cli/launcher/run.py`: fetch_hostfile, with hostinfo.py's HostInfo and
HostInfoList), taken from their released source distributions on the package index.

Neither package can be imported here: both import torch and their whole trees at import
(DeepSpeed's runner imports its accelerator and autotuner, colossalai's imports click and
torch). So the parser functions' own source is cut out of the released files and run with the
modules they use; only their logging (DeepSpeed's `logger`, colossalai's `click.echo`, and
colossalai's `exit()` on a bad file) stands in for the real thing. The sdists are cached under
/var/cache/clusterprep-ci keyed by version.
"""

from __future__ import annotations

import ast
import fcntl
import subprocess
import sys
import tarfile
from pathlib import Path

CACHE = Path("/var/cache/clusterprep-ci/launchers")
DEEPSPEED = ("deepspeed", "0.19.8", "deepspeed/launcher/runner.py",
             ["fetch_hostfile", "_parse_hostfile"])
COLOSSALAI = ("colossalai", "0.5.0", "colossalai/cli/launcher/hostinfo.py",
              ["HostInfo", "HostInfoList"])
COLOSSALAI_RUN = "colossalai/cli/launcher/run.py"


def sdist(name: str, version: str) -> Path:
    """The package's released source distribution, downloaded once per machine."""
    CACHE.mkdir(parents=True, exist_ok=True)
    archive = CACHE / f"{name}-{version}.tar.gz"
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not archive.exists():
            subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                            "--no-binary", ":all:", "-d", str(CACHE),
                            f"{name}=={version}"], check=True, capture_output=True,
                           stdin=subprocess.DEVNULL)
    return archive


def cut(name: str, version: str, path: str, wanted: list[str]) -> str:
    """The source of the top-level functions and classes `wanted` of `path` in the sdist."""
    with tarfile.open(sdist(name, version)) as archive:
        member = archive.extractfile(f"{name}-{version}/{path}")
        assert member is not None, path
        source = member.read().decode()
    tree = ast.parse(source)
    found = {node.name: ast.get_source_segment(source, node) for node in tree.body
             if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name in wanted}
    assert sorted(found) == sorted(wanted), f"{path} of {name} {version}: {sorted(found)}"
    return "\n\n".join(found[w] for w in wanted)


def deepspeed_parser() -> str:
    """A script: DeepSpeed's fetch_hostfile(argv[1]), printed as [[host, slots], ...]."""
    name, version, path, wanted = DEEPSPEED
    return ("import collections, json, logging, os, re, sys\n"
            "logger = logging.getLogger('deepspeed')\n"
            + cut(name, version, path, wanted)
            + "\nprint(json.dumps(list(fetch_hostfile(sys.argv[1]).items())))\n")


def colossalai_parser() -> str:
    """A script: colossalai's fetch_hostfile(argv[1], 22), printed as its hosts in order."""
    name, version, path, wanted = COLOSSALAI
    return ("import json, os, socket, sys\n"
            "class click:\n"
            "    @staticmethod\n"
            "    def echo(message): print(message, file=sys.stderr)\n"
            + cut(name, version, path, wanted) + "\n\n"
            + cut(name, version, COLOSSALAI_RUN, ["fetch_hostfile"]).replace(
                "def fetch_hostfile(hostfile_path: str, ssh_port: int) -> HostInfoList:",
                "def fetch_hostfile(hostfile_path, ssh_port):")
            + "\npool = fetch_hostfile(sys.argv[1], 22)\n"
              "print(json.dumps([host.hostname for host in pool.hostinfo_list]))\n")
