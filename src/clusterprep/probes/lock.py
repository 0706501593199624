"""Probe: hold this node's clusterprep locks for as long as the invocation that asked lives.

Input: four lines on stdin: the shared folder's lock file (or `-`), `node` (or `-`) to ask for
this node's own lock (`$XDG_CACHE_HOME/clusterprep/lock-HOSTNAME`, ~/.cache when unset: named
by host so that nodes sharing a home folder still lock apart), the seconds `stale_after`, and
the owner (one line of JSON, written as it is into each lock file). The shared folder's lock is
taken where that folder exists. Either every lock is taken, or none is. Not JSON in and out,
unlike other probes: json's import would be most of this probe's cost, on every node.

Prints `acquired`; or a line `held PATH<TAB>OWNER` per lock another clusterprep holds, then
`end`; or `error WHY`. Once acquired, it holds the locks while the head keeps writing to stdin
(a heartbeat, one line every few seconds) and frees them when the head writes `release`. When
the head vanishes instead (stdin ends without `release`: it died and its connection closed; or
`stale_after` seconds of silence: it froze or was cut off), the commands it had started on this
node are ended too, so that no orphan of a dead run races the next one: over SSH the sessions
of the same connection, through Slurm the tasks of the same run's other job steps. Then the
probe exits and the kernel frees the locks. Stdlib only.
"""

import os
import select
import sys

from _flock import holder, take  # inlined by probes.load

SIGKILL = 9  # not `import signal`: it loads enum, a cost on every node


def node_lock_path():
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "clusterprep", "lock-" + os.uname().nodename)


def say(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


SHELLS = ("sh", "bash", "dash", "zsh", "ksh", "fish", "tcsh", "csh")


def stat_fields(pid):
    """(comm, ppid, session) of a process, or None once it is gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            text = f.read()
    except OSError:
        return None
    comm = text[text.index("(") + 1:text.rindex(")")]
    fields = text[text.rindex(")") + 2:].split()
    return comm, int(fields[1]), int(fields[3])


def head_connection():
    """SSH_CONNECTION of the head's connection when sshd started this probe for it (through
    the login shell only), else None: run locally, the probe must end nothing of the user's."""
    pid = os.getppid()
    while True:
        fields = stat_fields(pid)
        if fields is None or fields[0] not in SHELLS + ("sshd",):
            return None
        if fields[0] == "sshd":
            return os.environ.get("SSH_CONNECTION")
        pid = fields[1]


def environments():
    """(pid, environment as b"\\0NAME=VALUE\\0...") of every process this probe may read."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/environ" % entry, "rb") as f:
                    yield int(entry), b"\0" + f.read() + b"\0"
            except OSError:
                continue


def end_sessions_of(connection):
    """Kill the sessions started over the head's SSH connection (all share its
    SSH_CONNECTION, a client address and port of their own), but this probe's."""
    marker = ("\0SSH_CONNECTION=" + connection + "\0").encode()
    sessions = set()
    for pid, environ in environments():
        if marker in environ:
            try:
                sessions.add(os.getsid(pid))
            except OSError:
                continue
    sessions.discard(os.getsid(0))
    for pid in [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]:
        fields = stat_fields(pid)
        if fields is not None and fields[2] in sessions:
            kill(pid)


def end_steps_of_run():
    """Through Slurm (this probe a task of a step named clusterprep-PID-N): kill the
    processes of the same run's other steps in this job, found by the step names Slurm gives
    their environment. Nothing when not run so."""
    name = os.environ.get("SLURM_JOB_NAME", "")
    job, step = os.environ.get("SLURM_JOB_ID"), os.environ.get("SLURM_STEP_ID")
    if not (name.startswith("clusterprep-") and name.count("-") == 2 and job and step):
        return
    run = ("\0SLURM_JOB_NAME=" + name[:name.rindex("-") + 1]).encode()
    same_job = ("\0SLURM_JOB_ID=" + job + "\0").encode()
    own_step = ("\0SLURM_STEP_ID=" + step + "\0").encode()
    for pid, environ in environments():
        if run in environ and same_job in environ and own_step not in environ:
            kill(pid)


def kill(pid):
    try:
        os.kill(pid, SIGKILL)
    except OSError:
        pass


def buffered_input():
    """What stdin's buffer already holds beyond the request line (heartbeats, or `release`
    itself), taken out so that the rest can be read from the descriptor without it."""
    stdin = sys.stdin.buffer.fileno()
    os.set_blocking(stdin, False)
    try:
        data = sys.stdin.buffer.peek()  # no waiting: an empty buffer answers b""
        sys.stdin.buffer.read(len(data))
    finally:
        os.set_blocking(stdin, True)
    return data


def hold(stale_after):
    """Wait for `release`; True when it came, False when the head vanished (its commands on
    this node are then ended)."""
    stdin = sys.stdin.buffer.fileno()
    pending = buffered_input()
    while b"release" not in pending:
        ready, _, _ = select.select([stdin], [], [], stale_after)
        data = os.read(stdin, 4096) if ready else b""
        pending = pending[-16:] + data
        if not data and b"release" not in pending:
            connection = head_connection()
            if connection:
                end_sessions_of(connection)
            else:
                end_steps_of_run()
            return False
    return True


def main():
    read = sys.stdin.buffer.readline
    shared, node, stale_after, owner = (read().decode().strip() for _ in range(4))
    # A shared folder that does not exist yet is the shared step's to make (and report), and
    # there is nothing in it to protect: it is not made here for its lock.
    paths = ([shared] if shared != "-" and os.path.isdir(os.path.dirname(os.path.dirname(shared)))
             else []) + ([node_lock_path()] if node == "node" else [])
    taken, held = [], []
    try:
        for path in paths:
            fd = take(path, owner)
            if fd is None:
                held.append("held %s\t%s" % (path, holder(path)))
            else:
                taken.append(fd)
    except OSError as e:
        say("error cannot lock %s: %s" % (getattr(e, "filename", None) or path, e.strerror or e))
        return
    if held:
        say("\n".join(held + ["end"]))
        return  # exiting frees what was taken: all or nothing
    say("acquired")
    hold(float(stale_after))  # exiting frees every lock


main()
