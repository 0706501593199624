"""Probe part: clusterprep's stamps of the files it wrote into a node's hub cache. Inlined by
probes.load; stdlib only, like the probes.

A stamp is `[size, mtime_ns, ctime_ns, inode, sha256]`, taken right after clusterprep wrote a
file and checked its hash. Any later write to the file, even one that restores its size and
mtime, changes its ctime (which only the kernel sets), so a file whose stat still matches its
stamp holds the bytes that were hashed; corruption below the filesystem (a failing disk) is
the one thing only a full hash (`--full`) finds.
"""

import json
import os

from _atomic import write_atomically  # inlined by probes.load


def stamps_path():
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(xdg, "clusterprep", "weights-stamps.json")


def _all_stamps(path):
    """Every cache's stamps in the file; {} for a file missing, unreadable or not ours (a
    stamp only spares a hash: losing them is never worse than hashing again)."""
    try:
        with open(path) as f:
            everything = json.load(f)
    except (OSError, ValueError):
        return {}
    return everything if isinstance(everything, dict) else {}


def load_stamps(cache):
    stamps = _all_stamps(stamps_path()).get(cache)
    return stamps if isinstance(stamps, dict) else {}


def save_stamps(cache, stamps):
    """Record stamps; a full disk only costs a hash next time, so failing here is quiet."""
    path = stamps_path()
    everything = _all_stamps(path)
    everything[cache] = stamps
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        write_atomically(path, json.dumps(everything).encode())
    except OSError:
        pass


def stamp_of(st, sha):
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, sha]
