"""Probe: one node's part of a launch, supervised. Stdlib only; runs on the node, held open
as a conversation (JSON lines both ways).

First input line: `{"command": SHELL, "cwd": DIR, "env": {...}, "marker": "NAME=VALUE",
"hung_after": S, "grace": S}`. The command (torchrun, or the user's raw command) starts in a
session of its own with the marker in its environment, so every process of the run carries
it, torchrun's workers included (they start sessions of their own). Events out:
`started` (pid), `line` (each line of its output), `hung` (a process of the run stopped,
state T, for `hung_after` s: the node's sshd still answers keepalives, so only this sees it),
`exit` (code or signal, and pids the kernel's OOM killer named), then `ended` (what was left
of the run once ended: `left`, pids that survived SIGKILL).

Whatever ends the run, every marked process is ended (SIGTERM, `grace` s, SIGKILL): the
command's own exit, a further line from the head (its stop), or the end of stdin (the head died, was
interrupted, or lost its connection).
"""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

from _marked import end, marked  # inlined by probes.load

_out = threading.Lock()
WATCH_SECONDS = 0.25


def emit(event, **fields):
    fields["event"] = event
    line = json.dumps(fields) + "\n"
    with _out:
        sys.stdout.write(line)
        sys.stdout.flush()


def pump(stream):
    for raw in iter(stream.readline, b""):
        emit("line", text=raw.decode(errors="replace").rstrip("\r\n"))


def listen(stop):
    """Any further line (the head's stop), or the end of stdin, stops the run."""
    sys.stdin.buffer.readline()
    stop.set()


def oom_killed(pids):
    """The pids among `pids` that the kernel log says the OOM killer killed."""
    try:
        fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return []
    found = set()
    try:
        while True:
            try:
                record = os.read(fd, 8192).decode(errors="replace")
            except BlockingIOError:
                break
            except OSError:
                continue  # a record overwritten while we read: skip it
            match = re.search(r"Killed process (\d+)", record)
            if match and int(match.group(1)) in pids:
                found.add(int(match.group(1)))
    finally:
        os.close(fd)
    return sorted(found)


def watch(proc, marker, hung_after, stop):
    """Until the command exits or the run is stopped: a `hung` event once a process of the
    run has been stopped (state T) for `hung_after` s; the pids of the run seen meanwhile."""
    seen, stopped_since, hung = set(), {}, False
    while proc.poll() is None and not stop.is_set():
        now = time.monotonic()
        run = marked(marker)
        seen.update(p["pid"] for p in run)
        stopped = {p["pid"]: p for p in run if p["state"].startswith("stopped")}
        stopped_since = {pid: stopped_since.get(pid, now) for pid in stopped}
        late = [stopped[pid] for pid, since in stopped_since.items()
                if now - since >= hung_after]
        if late and not hung:
            hung = True
            emit("hung", processes=late)
        stop.wait(WATCH_SECONDS)
    return seen


def main():
    request = json.loads(sys.stdin.buffer.readline())
    name, value = request["marker"].split("=", 1)
    env = dict(os.environ, **request["env"])
    env[name] = value
    marker = request["marker"].encode()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        proc = subprocess.Popen(["/bin/sh", "-c", request["command"]], cwd=request["cwd"],
                                env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True)
    except OSError as e:  # the run folder is missing, say: the command's own exit 127
        emit("line", text="clusterprep: cannot start the run in %s: %s" % (request["cwd"], e))
        emit("exit", code=127, signal=None, stopped=False, oom=[])
        emit("ended", left=[], survivors=[])
        return
    reader = threading.Thread(target=pump, args=(proc.stdout,), daemon=True)
    threading.Thread(target=listen, args=(stop,), daemon=True).start()
    left, survivors, seen = [], [], set()
    try:
        emit("started", pid=proc.pid)
        reader.start()
        seen = watch(proc, marker, request["hung_after"], stop)
    finally:  # even when the head is gone (a write to it failed): nothing of the run stays
        asked = proc.poll() is None
        left = marked(marker)
        survivors = end([p["pid"] for p in left], request["grace"])
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # what the marker cannot show: a cleared env
        except OSError:
            pass
        code = proc.wait()
    if reader.ident is not None:
        reader.join(2)
    emit("exit", code=code if code >= 0 else None, signal=-code if code < 0 else None,
         stopped=asked, oom=oom_killed(seen) if code != 0 else [])
    emit("ended", left=left, survivors=survivors)


main()
