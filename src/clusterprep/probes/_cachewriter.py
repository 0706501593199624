"""Probe part: writing the files of a weights stream into a node's hub cache as the stream
passes, each renamed into place only once its sha256 is right; and the snapshot links placed
once their blobs are there. Inlined by probes.load; stdlib only."""

import hashlib
import os
import queue
import shutil
import threading

from _atomic import PARTIAL, Aside  # inlined by probes.load
from _links import swap_link  # inlined by probes.load
from _ring import WRITE_AHEAD  # inlined by probes.load
from _stamps import stamp_of  # inlined by probes.load


class Writer:
    """Hashes and writes the files this node wants, in a thread of its own, as the stream passes.
    A file that cannot be written (a full disk) fails alone; its partial file is removed."""

    def __init__(self, cache, stream, want):
        self.cache, self.stream, self.want = cache, stream, set(want)
        self.queue = queue.Queue(maxsize=WRITE_AHEAD)
        self.written, self.failed = {}, []
        self.index, self.offset = 0, 0          # the file being written, and where in it
        self.out = self.digest = None
        self.aborted = False
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def put(self, view):
        self.queue.put(view)

    def finish(self):
        self.queue.put(None)
        self.thread.join()

    def abort(self):
        self.aborted = True
        try:
            self.queue.put_nowait(None)  # wakes it if it waits; if full, it stops at its next get
        except queue.Full:
            pass
        self.thread.join()

    def run(self):
        try:
            self.consume()
        except Exception as e:  # ours, not the disk's: this node's files fail, the stream goes on
            reason = "clusterprep's writer failed: %s: %s" % (type(e).__name__, e)
            self.drop()
            for index in range(self.index, len(self.stream)):
                if index in self.want:
                    path, size, _ = self.stream[index]
                    self.failed.append({"path": path, "reason": reason, "errno": None,
                                        "unwritten": size, "where": self.cache})
            while True:  # so that the stream never waits on a writer that is gone
                view = self.queue.get()
                if view is None or self.aborted:
                    break

    def consume(self):
        self.start_files()
        while True:
            view = self.queue.get()
            if view is None or self.aborted:
                break
            while len(view):
                path, size, _ = self.stream[self.index]
                take = min(len(view), size - self.offset)
                self.write(view[:take])
                view = view[take:]
                self.offset += take
                if self.offset == size:
                    self.end_file()
                    self.index += 1
                    self.start_files()
        self.drop()  # the stream stopped inside this file, if one is open

    def start_files(self):
        """Open the next file; empty files are written whole at once."""
        self.offset = 0
        while self.index < len(self.stream):
            if self.index in self.want:
                self.open()
            if self.stream[self.index][1]:
                return
            self.end_file()
            self.index += 1

    def open(self):
        final = os.path.join(self.cache, self.stream[self.index][0])
        self.digest = hashlib.sha256()
        try:
            os.makedirs(os.path.dirname(final), exist_ok=True)
            self.out = Aside(final)
        except OSError as e:
            self.fail(e, 0)

    def write(self, view):
        if self.out is None:
            return
        self.digest.update(view)
        try:
            self.out.write(view)
        except OSError as e:
            self.fail(e, self.offset)

    def end_file(self):
        if self.out is None:
            return
        path, size, sha = self.stream[self.index]
        out, self.out = self.out, None
        if self.digest.hexdigest() != sha:
            out.discard()
            self.failed.append({"path": path, "reason": "the sha256 of the bytes received "
                                "differs from the staged file's", "unwritten": 0})
            return
        try:
            out.commit()  # (discards the file when it fails)
            self.written[path] = stamp_of(os.stat(out.final), sha)
        except OSError as e:
            self.fail(e, size)

    def fail(self, error, done):
        path, size, _ = self.stream[self.index]
        self.failed.append({"path": path, "reason": str(error.strerror or error),
                            "errno": error.errno, "unwritten": size - done,
                            "where": os.path.dirname(os.path.join(self.cache, path))})
        self.drop()

    def drop(self):
        if self.out is not None:
            self.out.discard()
            self.out = None


def remove_partials(cache, repos):
    """What an earlier run left half-written (killed before it could clean up)."""
    for repo in repos:
        for folder, _, names in os.walk(os.path.join(cache, repo)):
            for name in names:
                if name.endswith(PARTIAL):
                    try:
                        os.unlink(os.path.join(folder, name))
                    except OSError:
                        pass


def place_link(cache, path, target):
    """A snapshot's relative link, placed only once its blob is there (never dangling)."""
    where = os.path.join(cache, path)
    if os.path.islink(where) and os.readlink(where) == target:
        return None
    if not os.path.exists(os.path.normpath(os.path.join(os.path.dirname(where), target))):
        return "its blob is missing"
    try:
        head, tail = os.path.split(where)
        swap_link(where, target, os.path.join(head, "." + tail + PARTIAL))
    except OSError as e:
        return "cannot place the link: %s" % (e.strerror or e)
    return None


def free_in(cache):
    """Bytes free where the cache lives (made now, if it is new: the files go there next)."""
    try:
        os.makedirs(cache, exist_ok=True)
        return shutil.disk_usage(cache).free
    except OSError:
        return None

