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
import signal
import sys
import tempfile
import time

STATES = {"R": "running", "S": "sleeping", "D": "in uninterruptible wait", "T": "stopped",
          "t": "stopped by a debugger", "Z": "exited", "I": "idle"}


def environment(pid):
    with open("/proc/%s/environ" % pid, "rb") as f:
        return f.read().split(b"\0")


def describe(pid, env):
    variables = dict(item.split(b"=", 1) for item in env if b"=" in item)
    with open("/proc/%s/stat" % pid) as f:
        state = f.read().rsplit(")", 1)[1].split()[0]
    with open("/proc/%s/cmdline" % pid, "rb") as f:
        command = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    rank = variables.get(b"RANK")
    return {"pid": int(pid), "state": STATES.get(state, state), "command": command[:300],
            "rank": int(rank) if rank and rank.isdigit() else None}


def marked(marker):
    me = os.getpid()
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == me:
            continue
        try:
            env = environment(pid)
            if marker in env:
                found.append(describe(pid, env))
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile, or not ours to read
    return found


def alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def main():
    request = json.loads(sys.stdin.buffer.read() or b"{}")
    found = marked(request["marker"].encode())
    for process in found:
        try:
            os.kill(process["pid"], signal.SIGKILL)
        except OSError:
            pass
    deadline = time.monotonic() + 5
    survivors = [p["pid"] for p in found]
    while survivors and time.monotonic() < deadline:
        time.sleep(0.05)
        survivors = [pid for pid in survivors if alive(pid)]
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
