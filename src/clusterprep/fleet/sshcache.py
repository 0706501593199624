"""A cache of `ssh -G` answers, valid only while every config file OpenSSH reads is unchanged.

`ssh -G` costs a process per host (about 3.5 ms of CPU each: 0.2 s for 64 hosts, a fifth of a
first contact). Its answer depends only on the host asked, the config files read and the local
user, unless the config asks for something that changes from one call to the next: `Match exec`
or `localnetwork`, host name canonicalisation (DNS), `${VAR}` environment expansion. A config
that mentions any of these is never cached.

The cache key covers the config files OpenSSH reads (the `-F` file, else `~/.ssh/config` and
`/etc/ssh/ssh_config`), every file their `Include` lines reach (globs expanded again each
time), each with its size and modification time, and the ssh binary itself. Any edit, any new
file matched by an Include glob, any new OpenSSH gives a new key, and the old answers are
dropped. The file lives in `$XDG_CACHE_HOME/clusterprep` (mode 0600).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import shlex
import shutil
import socket
from pathlib import Path

from clusterprep.localfiles import write_atomically

_UNCACHEABLE = re.compile(r"\bexec\b|\blocalnetwork\b|\bcanonicalizehostname\b|\$\{",
                          re.IGNORECASE)
_INCLUDE = re.compile(r"^\s*include(?:\s*=\s*|\s+)(.+)$", re.IGNORECASE | re.MULTILINE)
_MAX_FILES = 256


def cache_file() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(base) / "clusterprep" / "ssh-G.json"


def config_key(config_file: str | None) -> str | None:
    """A key for the current ssh configuration, or None when it must not be cached."""
    ssh = shutil.which("ssh")
    if ssh is None:
        return None
    if config_file:
        roots = [(Path(config_file).expanduser(), Path("~/.ssh").expanduser())]
    else:
        roots = [(Path("~/.ssh/config").expanduser(), Path("~/.ssh").expanduser()),
                 (Path("/etc/ssh/ssh_config"), Path("/etc/ssh"))]
    digest = hashlib.sha256()
    _add_stat(digest, Path(ssh).resolve())
    # %u, %l and `Match localuser` make answers depend on who and where we are.
    digest.update(f"{os.getuid()}\0{socket.gethostname()}\0".encode())
    seen: set[Path] = set()
    pending = list(roots)
    while pending:
        path, base = pending.pop(0)
        if path in seen:
            continue
        if len(seen) >= _MAX_FILES:
            return None
        seen.add(path)
        _add_stat(digest, path)
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue  # a missing file is part of the key (its stat said so)
        if _UNCACHEABLE.search(text):
            return None
        for match in _INCLUDE.finditer(text):
            try:
                words = shlex.split(match.group(1), comments=True)
            except ValueError:
                return None
            for word in words:
                pattern = os.path.expanduser(word)
                if not os.path.isabs(pattern):
                    pattern = str(base / pattern)
                found = sorted(glob.glob(pattern))
                digest.update(f"include {pattern} -> {found}\0".encode())
                pending += [(Path(p), base) for p in found]
    return digest.hexdigest()


def _add_stat(digest: "hashlib._Hash", path: Path) -> None:
    try:
        st = path.stat()
        digest.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ino}\0".encode())
    except OSError:
        digest.update(f"{path}\0absent\0".encode())


def load(key: str) -> dict[str, str]:
    """The cached `ssh -G` outputs by host for `key` (empty when stale or unreadable)."""
    try:
        data = json.loads(cache_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("key") != key:
        return {}
    hosts = data.get("hosts")
    return hosts if isinstance(hosts, dict) else {}


def save(key: str, hosts: dict[str, str]) -> None:
    """Remember these answers for `key`, replacing answers for any other key."""
    known = load(key)
    known.update(hosts)
    try:
        write_atomically(cache_file(), json.dumps({"key": key, "hosts": known}).encode(), 0o600)
    except OSError:
        pass  # a cache that cannot be written is only slower
