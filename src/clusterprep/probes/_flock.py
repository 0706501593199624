"""Probe part: take lock files with flock(2), and read who holds one.

A lock is a kernel lock on an open file, so it ends with the process that holds it, however
that process ends (over NFS, the server frees it when the holder's lease runs out). The file
itself stays; while a lock is held, it names its holder (one line of text, a JSON object,
written by the holder after it got the lock). Used by the lock probe on nodes, and by the head
for its own files. No json here: on nodes, json's import (it loads re and enum) would cost
more than the rest of the lock.
"""

import errno
import fcntl
import os
import time


def take(path, owner):
    """Lock `path` (made if absent) without waiting and write `owner` (text) into it: the open
    file (keep it open to hold the lock), or None when another process holds it."""
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return None
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, owner.strip().encode() + b"\n", 0)
    return fd


def holder(path):
    """The owner line written into a held lock file ("" if it cannot be read yet: the holder
    may be between getting the lock and writing its name)."""
    for _ in range(5):
        try:
            with open(path) as f:
                line = f.readline().strip()
        except OSError:
            line = ""
        if line:
            return line
        time.sleep(0.1)
    return ""
