"""Part: the processes of a run, found by the marker every one of them inherits in its
environment, and how to end them. Stdlib only; inlined into probes by probes.load."""

import os
import signal
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
    """Every other process whose environment holds `marker` (bytes): `NAME=VALUE` exactly,
    or, when it ends with `=`, that variable with any value."""
    me = os.getpid()
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == me:
            continue
        try:
            env = environment(pid)
            if marker in env or (marker.endswith(b"=") and
                                 any(item.startswith(marker) for item in env)):
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


def send(pids, sig):
    for pid in pids:
        try:
            os.kill(pid, sig)
        except OSError:
            pass


def wait_gone(pids, seconds):
    """The pids still alive after up to `seconds`."""
    deadline = time.monotonic() + seconds
    left = [pid for pid in pids if alive(pid)]
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = [pid for pid in left if alive(pid)]
    return left


def end(pids, grace):
    """SIGTERM (and SIGCONT, so a stopped process hears it), `grace` seconds, then SIGKILL
    (with no grace at once); the pids that survived 5 s after SIGKILL."""
    if grace > 0:
        send(pids, signal.SIGTERM)
        send(pids, signal.SIGCONT)
        pids = wait_gone(pids, grace)
    send(pids, signal.SIGKILL)
    return wait_gone(pids, 5)
