"""Probe: end every process a smoke run started on this node, and say what each was doing.

torchrun starts each worker in a session of its own, so ending the launch command's session
leaves the workers running: this finds them by the run's marker, which every process the run
started inherits in its environment. Stdlib only; runs on the node.

Input: `{"marker": "NAME=VALUE", "prefix": P}`. Each process of this user whose
environment holds the marker is noted (pid, state, rank, command) and killed with SIGKILL
(which ends a stopped process too); the run's folders (named P... in the temporary folder)
are removed. Output: one JSON object,
`{"found": [...], "survivors": [pids still alive after 5 s]}`.
"""

import json
import os
import shutil
import sys
import tempfile

from _marked import end, marked  # inlined by probes.load


def main():
    request = json.loads(sys.stdin.buffer.read() or b"{}")
    found = marked(request["marker"].encode())
    survivors = end([p["pid"] for p in found], 0)
    prefix = request.get("prefix")
    if prefix and prefix.startswith("clusterprep-smoke-"):
        folder = tempfile.gettempdir()
        for name in os.listdir(folder):
            path = os.path.join(folder, name)
            try:
                ours = name.startswith(prefix) and os.lstat(path).st_uid == os.getuid()
            except OSError:
                continue
            if ours:
                shutil.rmtree(path, ignore_errors=True)
    print(json.dumps({"found": found, "survivors": survivors}))


main()
