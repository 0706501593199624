"""The task of a clusterprep Slurm job step: runs one command on its node, as sshd would.

Not a probe: it prints frames, not one JSON object. `srun --input=all` gives every task of the
step the same stdin: this script, then one JSON line (the command, the step's node names, how
each node's stdin is laid out), then the stdin bytes. Each task keeps its own part.

Output goes back as lines that stay whole through srun: slurmstepd forwards a task's output in
messages of whole lines up to 1024 bytes, and srun writes each message at once, so a line
shorter than that is never cut or mixed with another task's. Each line is
`INDEX KIND PAYLOAD`, INDEX the node's place in the header's list:

    S {"step": "JOB.STEP"}    the command started (the head cancels the step by this id)
    O base64                  bytes the command wrote to stdout
    E base64                  bytes it wrote to stderr
    X {"code": N}             it ended: its exit status, or minus the signal that killed it

The command runs as `SHELL -c COMMAND` in the home folder with the environment sshd gives a
command (HOME, USER, LOGNAME, SHELL, MAIL, sshd's PATH) plus the variables Slurm sets for the
task; bash also reads ~/.bashrc first, as it does for `ssh node COMMAND`. Nothing of the
head's own environment is passed (srun runs with --export=NONE).
"""

import base64
import json
import os
import pwd
import selectors
import signal
import subprocess
import sys
import threading

FRAME = 750  # bytes of output per line: 1000 base64 characters, under slurmstepd's 1024
# sshd's PATH on Debian: _PATH_STDPATH, and SUPERUSER_PATH for root.
SSHD_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/games"
SSHD_ROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Set by the head's bootstrap only so that this Python leaves the locale variables alone.
NOT_PASSED_ON = ("PWD", "OLDPWD", "PYTHONCOERCECLOCALE")


def login_environment(user):
    env = {key: value for key, value in os.environ.items() if key not in NOT_PASSED_ON}
    env.update(HOME=user.pw_dir, USER=user.pw_name, LOGNAME=user.pw_name,
               SHELL=user.pw_shell or "/bin/sh", MAIL="/var/mail/" + user.pw_name,
               PATH=SSHD_ROOT_PATH if user.pw_uid == 0 else SSHD_PATH)
    return env


def shell_command(user, command, env):
    """bash run by sshd for a command reads ~/.bashrc (Debian's SSH_SOURCE_BASHRC); BASH_ENV
    does the same here and is dropped before the command runs."""
    shell = user.pw_shell or "/bin/sh"
    if os.path.basename(shell) == "bash":
        env["BASH_ENV"] = os.path.join(user.pw_dir, ".bashrc")
        command = "unset BASH_ENV; " + command
    return [shell, "-c", command]


class Frames:
    def __init__(self, index):
        self.prefix = ("%d " % index).encode()
        self.lock = threading.Lock()

    def send(self, kind, payload):
        with self.lock:
            os.write(1, self.prefix + kind + b" " + payload + b"\n")

    def data(self, kind, chunk):
        for start in range(0, len(chunk), FRAME):
            self.send(kind, base64.b64encode(chunk[start:start + FRAME]))

    def control(self, kind, obj):
        self.send(kind, json.dumps(obj).encode())


def feed(source, layout, index, sink):
    """Copy this node's stdin to the command, then read the step's stdin to its end (other
    nodes' parts), so that slurmstepd never waits on us."""
    try:
        if layout.get("stream"):
            while True:
                chunk = source.read1(65536)
                if not chunk:
                    break
                sink.write(chunk)
                sink.flush()
        else:
            sink.write(source.read(layout["common"]))
            parts = layout["parts"]
            source.read(sum(parts[:index]))
            sink.write(source.read(parts[index]))
    except (BrokenPipeError, ValueError):
        pass  # the command exited without reading all its input, as `ssh` allows
    finally:
        try:
            sink.close()
        except OSError:
            pass
    while source.read(65536):
        pass


def main():
    source = sys.stdin.buffer
    header = json.loads(source.readline())
    names = header["names"]
    node = os.environ.get("SLURMD_NODENAME", "")
    index = names.index(node) if node in names else int(os.environ.get("SLURM_PROCID", "0"))
    frames = Frames(index)
    user = pwd.getpwuid(os.getuid())
    env = login_environment(user)
    layout = header.get("stdin")
    home = user.pw_dir if os.path.isdir(user.pw_dir) else "/"
    try:
        process = subprocess.Popen(
            shell_command(user, header["command"], env), cwd=home, env=env,
            stdin=subprocess.PIPE if layout else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    except OSError as e:
        frames.control(b"S", {"step": step_id()})
        frames.data(b"E", ("clusterprep: cannot start %s: %s\n" % (user.pw_shell, e)).encode())
        frames.control(b"X", {"code": 127})
        return

    def end_session(signum, frame):
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except OSError:
            pass
        os._exit(128 + signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, end_session)
    frames.control(b"S", {"step": step_id()})
    if layout:
        threading.Thread(target=feed, args=(source, layout, index, process.stdin),
                         daemon=True).start()
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ, b"O")
    selector.register(process.stderr, selectors.EVENT_READ, b"E")
    open_pipes = 2
    while open_pipes:
        for key, _ in selector.select():
            chunk = os.read(key.fileobj.fileno(), 65536)
            if chunk:
                frames.data(key.data, chunk)
            else:
                selector.unregister(key.fileobj)
                open_pipes -= 1
    frames.control(b"X", {"code": process.wait()})


def step_id():
    return "%s.%s" % (os.environ.get("SLURM_JOB_ID", ""), os.environ.get("SLURM_STEP_ID", ""))


main()
