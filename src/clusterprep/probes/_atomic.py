"""Probe part: files a node gets whole or not at all. Each is written aside, beside its final
name under a name of this process's own, and renamed over that name once it is complete and on
disk; a reader, a crash or a kill -9 never leaves a half-written file under a final name. What a
killed process left aside ends in PARTIAL. Inlined by probes.load; stdlib only (no tempfile: its
import costs more than the rest of a small probe)."""

import os

PARTIAL = ".clusterprep-partial"
_UMASK = os.umask(0o022)  # read once, at the probe's start, before it runs threads
os.umask(_UMASK)


class Aside:
    """A file being written beside `final` (in its folder, which must be there): `write` its
    bytes, then `commit` (renamed into place) or `discard` (removed). Made with mode 0600, so no
    one reads it early."""

    def __init__(self, final):
        self.final = final
        folder, name = os.path.split(final)
        for n in range(100):
            self.path = os.path.join(folder, ".%s.%d-%d%s" % (name, os.getpid(), n, PARTIAL))
            try:
                self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                return
            except FileExistsError:
                continue  # left by a process of the same id, or written by one of our threads
        raise FileExistsError("no free name beside %s" % final)

    def write(self, data):
        view = memoryview(data)
        while len(view):
            view = view[os.write(self.fd, view):]

    def commit(self, mode=None, like=None):
        """Flush to disk and rename into place. `like` is the file replaced (a stat): its mode
        and, where that is ours to keep (as root, or for our own file), its owner carry over.
        `mode` overrides; without either, the mode is what open() gives (0666 less the umask)."""
        if mode is None:
            mode = 0o666 & ~_UMASK if like is None else like.st_mode & 0o7777
        try:
            os.fsync(self.fd)
            os.fchmod(self.fd, mode)
            if like is not None and (os.geteuid() == 0 or like.st_uid == os.geteuid()):
                os.fchown(self.fd, like.st_uid, like.st_gid)
            os.close(self.fd)
            self.fd = None
            os.replace(self.path, self.final)
        except BaseException:
            self.discard()
            raise
        _sync_folder(os.path.dirname(self.final) or ".")

    def discard(self):
        if self.fd is not None:
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = None
        try:
            os.unlink(self.path)
        except OSError:
            pass


def write_atomically(path, data, mode=None, like=None):
    """Put `data` (bytes) at `path`, whole or not at all (see Aside.commit for `mode`, `like`)."""
    aside = Aside(path)
    try:
        aside.write(data)
    except BaseException:
        aside.discard()
        raise
    aside.commit(mode, like)


def _sync_folder(folder):
    """The rename itself on disk too (a crash right after it cannot bring the old file back)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems cannot sync a folder; the rename is still atomic
    finally:
        os.close(fd)
