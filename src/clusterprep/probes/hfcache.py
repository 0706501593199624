"""Probe: a node's Hugging Face cache against a manifest, offline; and whether this node sees
the head's staging cache (the same folder, proved by a token the head just wrote into it).

Stdlib only; runs on the node. Input: one JSON line, `{"action": "check", "entries": [...],
"repos": [...], "full", "hash_unstamped", "staging_token": [path, token] | null}`. Prints progress lines while it hashes, then one JSON object.

Manifest entries are `[path, kind, size, sha256, target]`, paths relative to the cache root,
kind "f" (file) or "l" (relative symlink to `target`). A file whose stat matches the stamp
clusterprep recorded when it wrote it (see the `_stamps` part) is trusted without hashing,
unless `full`; others are hashed when `hash_unstamped` (a sync, which then records the stamps
of the files it found right) and compared by size otherwise (a verify, which writes nothing).
"""

import json
import os
import sys
import time

from _emit import emit  # inlined by probes.load
from _hubcache import hub_cache  # inlined by probes.load
from _stamps import load_stamps, save_stamps, stamp_of  # inlined by probes.load

# hashlib is imported where it is used: a `sync` with nothing to do hashes nothing, and on
# many nodes every millisecond of start-up counts.

CHUNK = 1 << 20


def sha256_of(path, hashing):
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        block = bytearray(CHUNK)
        view = memoryview(block)
        while True:
            n = f.readinto(block)
            if not n:
                return digest.hexdigest()
            digest.update(view[:n])
            hashing.add(n)


class Hashing:
    """Counts the bytes hashed, and tells the head at most twice a second (a progress line on
    stdout, read as it arrives; the answer is the last line)."""

    def __init__(self):
        self.done = 0
        self.told = 0.0

    def add(self, n):
        self.done += n
        if time.monotonic() - self.told >= 0.5:
            self.tell()

    def tell(self):
        self.told = time.monotonic()
        emit({"event": "progress", "bytes": self.done})


# -- check ----------------------------------------------------------------------------------

def check_file(cache, entry, stamps, full, hash_unstamped, hashing):
    """'ok', 'missing' or 'corrupt' (with a reason) for one manifest entry; maybe a new stamp."""
    path, kind, size, sha, target = entry
    where = os.path.join(cache, path)
    try:
        st = os.lstat(where)
    except OSError:
        return "missing", "absent", None
    if kind == "l":
        if not os.path.islink(where):
            return "corrupt", "a file where a link belongs", None
        found = os.readlink(where)
        if found != target:
            return "corrupt", "links to %s, not %s" % (found, target), None
        return "ok", None, None
    if os.path.islink(where) or not os.path.isfile(where):
        return "corrupt", "not a regular file", None
    if st.st_size != size:
        return "corrupt", "size %d, expected %d" % (st.st_size, size), None
    if not full:
        stamp = stamps.get(path)
        if stamp == stamp_of(st, sha):
            return "ok", None, None
        if stamp is None and not hash_unstamped:
            return "ok", None, None
    if sha256_of(where, hashing) != sha:
        return "corrupt", "sha256 differs", None
    return "ok", None, stamp_of(st, sha)


def extra_revisions(cache, entries, repos):
    wanted = {}
    for entry in entries:
        parts = entry[0].split("/")
        if len(parts) > 2 and parts[1] == "snapshots":
            wanted.setdefault(parts[0], set()).add(parts[2])
    extras = {}
    for repo in repos:
        try:
            present = os.listdir(os.path.join(cache, repo, "snapshots"))
        except OSError:
            continue
        found = sorted(set(present) - wanted.get(repo, set()))
        if found:
            extras[repo] = found
    return extras


def check(request):
    cache, source = hub_cache()
    stamps = load_stamps(cache)
    missing, corrupt, new_stamps = [], [], {}
    hashing = Hashing()
    for entry in request["entries"]:
        state, reason, stamp = check_file(cache, entry, stamps, request.get("full", False),
                                          request.get("hash_unstamped", False), hashing)
        if state == "missing":
            missing.append(entry[0])
        elif state == "corrupt":
            corrupt.append({"path": entry[0], "reason": reason})
        if stamp is not None:
            new_stamps[entry[0]] = stamp
    if hashing.done:
        hashing.tell()
    if new_stamps and request.get("hash_unstamped"):
        stamps.update(new_stamps)
        save_stamps(cache, stamps)
    emit({
        "cache": cache, "cache_source": source, "missing": missing, "corrupt": corrupt,
        "extra_revisions": extra_revisions(cache, request["entries"], request.get("repos", [])),
        "sees_staging": sees_staging(request.get("staging_token")),
    })


def sees_staging(token):
    """Whether the head's token is in the staging cache at the same path here."""
    if not token:
        return False
    path, value = token
    try:
        with open(path) as f:
            return f.read() == value
    except OSError:
        return False


def main():
    check(json.loads(sys.stdin.buffer.readline()))


main()


