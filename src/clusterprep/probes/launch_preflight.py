"""Probe: before a launch, what this node brings to it: its GPU count, and the stale
processes that would break it (a rank of an earlier launch or smoke run, anything holding the
master port or a GPU), each with pid and command; with `kill`, it ends them. Stdlib only.

Input: `{"port": P or null (only the head's port matters), "markers": ["NAME=", ...],
"kill": bool, "grace": S}`. Output: `{"gpus": N, "stale": [{pid, command, state, why}],
"survivors": [pids]}`.
"""

import json
import os
import sys

from _marked import describe, end, environment, marked  # inlined by probes.load


def gpus():
    try:
        return len(os.listdir("/proc/driver/nvidia/gpus"))
    except OSError:
        return 0


def listening_inodes(port):
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":
                inodes.add(fields[9])
    return inodes


def holders(port):
    """Processes holding a listening socket on `port`, or a GPU device, by pid: why."""
    sockets = {"socket:[%s]" % inode for inode in listening_inodes(port)} if port else set()
    found = {}
    me = os.getpid()
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == me:
            continue
        try:
            targets = [os.readlink("/proc/%s/fd/%s" % (pid, fd))
                       for fd in os.listdir("/proc/%s/fd" % pid)]
        except OSError:
            continue
        if sockets & set(targets):
            found[int(pid)] = "listens on the master port %d" % port
        elif any(t.startswith("/dev/nvidia") and t[11:].isdigit() for t in targets):
            found[int(pid)] = "holds a GPU"
    return found


def main():
    request = json.loads(sys.stdin.buffer.read() or b"{}")
    stale = {}
    for marker in request["markers"]:
        for process in marked(marker.encode()):
            process["why"] = "a process of an earlier run (%s)" % marker.rstrip("=")
            stale[process["pid"]] = process
    for pid, why in holders(request.get("port")).items():
        if pid not in stale:
            try:
                process = describe(pid, environment(pid))
            except (OSError, ValueError, IndexError):
                continue
            process["why"] = why
            stale[pid] = process
    found = sorted(stale.values(), key=lambda p: p["pid"])
    survivors = end([p["pid"] for p in found], request["grace"]) if request["kill"] else []
    print(json.dumps({"gpus": gpus(), "stale": found, "survivors": survivors}))


main()
