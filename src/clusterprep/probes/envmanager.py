"""Probe: a working Miniconda at BASE; and, on the head, its download and install.

Input: {"mode": "probe" | "apply", "base_prefix", "url", "sha256", "download_dir", "log"}.
"apply" downloads the pinned installer (reusing a finished download whose sha256 matches),
checks its sha256 BEFORE running anything, then runs `bash INSTALLER -b -p BASE` (`-u` too
when BASE exists: a resumed install), its output going to the log. Stdlib only.
"""

import hashlib
import json
import os
import subprocess
import sys
import urllib.request

from _atomic import Aside  # inlined by probes.load


def conda_version(base):
    conda = os.path.join(base, "bin", "conda")
    if not os.path.exists(conda):
        return None, "no conda at %s" % conda
    try:
        done = subprocess.run([conda, "--version"], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, universal_newlines=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, "%s --version failed: %s" % (conda, e)
    if done.returncode != 0:
        return None, "%s --version exited %d" % (conda, done.returncode)
    return done.stdout.strip(), None


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(spec):
    """The verified installer's path; raises ValueError on a checksum mismatch."""
    name = spec["url"].rstrip("/").rsplit("/", 1)[-1] or "miniconda.sh"
    os.makedirs(spec["download_dir"], exist_ok=True)
    final = os.path.join(spec["download_dir"], name)
    if os.path.exists(final) and sha256_of(final) == spec["sha256"]:
        return final
    partial = Aside(final)
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(spec["url"], timeout=60) as response:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                digest.update(chunk)
                partial.write(chunk)
    except BaseException:
        partial.discard()
        raise
    if digest.hexdigest() != spec["sha256"]:
        partial.discard()
        raise ValueError("sha256 mismatch for %s: expected %s, got %s; nothing was run"
                         % (spec["url"], spec["sha256"], digest.hexdigest()))
    partial.commit()
    return final


def tail(path, lines=20):
    try:
        with open(path, errors="replace") as f:
            return f.read().splitlines()[-lines:]
    except OSError:
        return []


def apply(spec):
    try:
        installer = download(spec)
    except ValueError as e:
        return {"ok": False, "error": str(e)}
    except (OSError, urllib.error.URLError) as e:
        return {"ok": False, "error": "cannot download %s: %s" % (spec["url"], e)}
    base = spec["base_prefix"]
    argv = ["bash", installer, "-b", "-p", base]
    if os.path.exists(base):
        argv.insert(3, "-u")
    os.makedirs(os.path.dirname(spec["log"]), exist_ok=True)
    with open(spec["log"], "w") as log:
        log.write("+ %s\n" % " ".join(argv))
        log.flush()
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        return {"ok": False, "error": "the installer exited %d" % done.returncode,
                "tail": tail(spec["log"])}
    version, problem = conda_version(base)
    if version is None:
        return {"ok": False, "error": problem, "tail": tail(spec["log"])}
    return {"ok": True, "version": version}


def main():
    spec = json.loads(sys.stdin.read())
    if spec["mode"] == "apply":
        answer = apply(spec)
    else:
        version, problem = conda_version(spec["base_prefix"])
        answer = {"ok": version is not None, "reason": version or problem}
    print(json.dumps(answer))


if __name__ == "__main__":
    main()
