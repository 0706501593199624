"""The task of a clusterprep Slurm job step: runs one command on its node, as sshd would.

Not a probe: it prints frames, not one JSON object. `srun --input=all` gives every task of the
step the same stdin: this script, then one header line, then the stdin bytes. The header is
`COMMAND NAMES LAYOUT BEAT`: the command and the step's node names (newline-separated) in
base64, how the stdin is laid out: `-` (none), `stream` (all of it, as it comes, for every
node's command), or `COMMON,PART0,PART1,...`: a part every node takes, then each node's own,
in the names' order; and BEAT, the seconds of silence after which the task says it is alive.
A task ends when its command has ended and the step's stdin has closed (the head closes it
once every task has sent its exit status): srun would take seconds to end a step whose tasks
ended while it still had stdin to forward.

Output goes back as lines that stay whole through srun: slurmstepd forwards a task's output in
messages of whole lines up to 1024 bytes, and srun writes each message at once, so a line
shorter than that is never cut or mixed with another task's. Each line is
`INDEX KIND PAYLOAD`, INDEX the node's place in the header's names:

    S JOB.STEP      the command starts now (the head cancels the step by this id)
    O base64        bytes the command wrote to stdout
    E base64        bytes it wrote to stderr
    H -             the command has been silent for BEAT seconds, and this node is alive (the
                    head cuts out a node it hears nothing from, as over SSH without keepalives)
    X N B           it ended: its exit status (or minus the signal that killed it), and
                    B is 1 when the command began, 0 when the shell exited first (an `exit`
                    in ~/.bashrc, say)

The command runs as `SHELL -c COMMAND` in the home folder, in a session of its own, with the
environment sshd gives a command (HOME, USER, LOGNAME, SHELL, MAIL, sshd's PATH) plus the
variables Slurm sets for the task; bash reads ~/.bashrc first, as it does under sshd. Nothing
of the head's own environment comes along (srun runs with --export=NONE).

This starts on every node for every command, so it imports only what costs nothing: no
json, re or subprocess, and `_signal` rather than `signal` (which loads enum: 4 ms a node).
"""

import _signal
import binascii
import os
import pwd
import select
import sys

FRAME = 750  # bytes of output per line: 1000 base64 characters, under slurmstepd's 1024
# sshd's PATH on Debian: _PATH_STDPATH, and SUPERUSER_PATH for root.
SSHD_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/games"
SSHD_ROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# PYTHONCOERCECLOCALE: set by the head's bootstrap only so that this Python adds no LC_CTYPE.
NOT_PASSED_ON = ("PWD", "OLDPWD", "PYTHONCOERCECLOCALE")


def login_environment(user):
    env = {key: value for key, value in os.environ.items() if key not in NOT_PASSED_ON}
    env.update(HOME=user.pw_dir, USER=user.pw_name, LOGNAME=user.pw_name,
               SHELL=user.pw_shell or "/bin/sh", MAIL="/var/mail/" + user.pw_name,
               PATH=SSHD_ROOT_PATH if user.pw_uid == 0 else SSHD_PATH)
    return env


BEGAN_FD = 3  # the shell writes one byte there just before the command, then closes it


def shell_argv(user, command, env):
    """bash run by sshd for a command reads ~/.bashrc (Debian's SSH_SOURCE_BASHRC); BASH_ENV
    does the same here and is dropped before the command runs."""
    shell = user.pw_shell or "/bin/sh"
    began = "printf . >&%d; exec %d>&-; " % (BEGAN_FD, BEGAN_FD)
    if os.path.basename(shell) == "bash":
        env["BASH_ENV"] = os.path.join(user.pw_dir, ".bashrc")
        began = "unset BASH_ENV; " + began
    return [shell, "-c", began + command]


class Frames:
    def __init__(self, index):
        self.prefix = str(index).encode() + b" "

    def send(self, kind, payload):
        os.write(1, self.prefix + kind + b" " + payload + b"\n")

    def data(self, kind, chunk):
        for start in range(0, len(chunk), FRAME):
            self.send(kind, binascii.b2a_base64(chunk[start:start + FRAME], newline=False))


def start(user, argv, env, stdin_wanted):
    """Fork the command in a session of its own; its pid and our ends of its pipes."""
    out, err, began = os.pipe(), os.pipe(), os.pipe()
    feed = os.pipe() if stdin_wanted else None
    pid = os.fork()
    if pid == 0:
        try:
            os.setsid()
            os.dup2(feed[0] if feed else os.open(os.devnull, os.O_RDONLY), 0)
            os.dup2(out[1], 1)
            os.dup2(err[1], 2)  # the pipes' own descriptors close on exec (Python's default)
            os.dup2(began[1], BEGAN_FD)
            os.chdir(user.pw_dir if os.path.isdir(user.pw_dir) else "/")
            os.execve(argv[0], argv, env)
        except OSError as e:
            os.write(2, ("clusterprep: cannot start %s: %s\n" % (argv[0], e)).encode())
        os._exit(127)
    for fd in (out[1], err[1], began[1]) + ((feed[0],) if feed else ()):
        os.close(fd)
    return pid, out[0], err[0], began[0], feed[1] if feed else None


def feed(source, layout, index, sink):
    """In a child process: copy this node's stdin to the command, then read the step's stdin
    to its end (the other nodes' parts), so that slurmstepd never waits on this task."""
    try:
        if layout == "stream":
            while True:
                chunk = source.read1(65536)
                if not chunk:
                    break
                write_all(sink, chunk)
        else:
            sizes = [int(size) for size in layout.split(",")]
            write_all(sink, source.read(sizes[0]))
            source.read(sum(sizes[1:1 + index]))
            write_all(sink, source.read(sizes[1 + index]))
    except OSError:
        pass  # the command exited without reading all its input, as `ssh` allows
    os.close(sink)
    while source.read(65536):
        pass


def write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def main():
    source = sys.stdin.buffer
    command, names, layout, beat = source.readline().split()
    names = binascii.a2b_base64(names).decode().split("\n")
    layout = layout.decode()
    node = os.environ.get("SLURMD_NODENAME", "")
    index = names.index(node) if node in names else int(os.environ.get("SLURM_PROCID", "0"))
    frames = Frames(index)
    user = pwd.getpwuid(os.getuid())
    env = login_environment(user)
    argv = shell_argv(user, binascii.a2b_base64(command).decode(), env)
    # Before the command starts: a task that sent no S never ran it, so the head may start
    # it again on this node when the step was aborted for another node's sake.
    frames.send(b"S", ("%s.%s" % (os.environ.get("SLURM_JOB_ID", ""),
                                  os.environ.get("SLURM_STEP_ID", ""))).encode())
    pid, out, err, began, sink = start(user, argv, env, layout != "-")

    def end_session(signum, frame):
        try:
            os.killpg(pid, _signal.SIGKILL)
        except OSError:
            pass
        os._exit(128 + signum)

    for signum in (_signal.SIGTERM, _signal.SIGINT, _signal.SIGHUP):
        _signal.signal(signum, end_session)
    feeder = None
    if sink is not None:
        feeder = os.fork()
        if feeder == 0:
            for fd in (out, err, began):
                os.close(fd)
            feed(source, layout, index, sink)
            os._exit(0)
        os.close(sink)
    poller = select.poll()
    kinds = {out: b"O", err: b"E"}
    for fd in kinds:
        poller.register(fd, select.POLLIN)
    beat_ms = int(float(beat) * 1000)
    while kinds:
        ready = poller.poll(beat_ms)
        if not ready:
            frames.send(b"H", b"-")
        for fd, _ in ready:
            chunk = os.read(fd, 65536)
            if chunk:
                frames.data(kinds[fd], chunk)
            else:
                poller.unregister(fd)
                del kinds[fd]
    status = os.waitpid(pid, 0)[1]
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else -os.WTERMSIG(status)
    os.set_blocking(began, False)  # its byte is there if the command began: never wait
    try:
        began_command = len(os.read(began, 1))
    except BlockingIOError:  # something the startup files left running still holds the pipe
        began_command = 0
    frames.send(b"X", b"%d %d" % (code, began_command))
    if feeder is not None:
        # The task ends with the step's stdin, not before: srun, still forwarding stdin to a
        # task that has ended, would take seconds to end the step once stdin closes.
        os.waitpid(feeder, 0)


main()
