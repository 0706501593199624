"""Probe: which commit is checked out at the repo path on this node? Stdlib only.

Input: {"path", "rev"}. Output: ok when HEAD is the pinned commit.
"""

import json
import os
import subprocess
import sys


def main():
    spec = json.loads(sys.stdin.read())
    path, rev = spec["path"], spec["rev"]
    if not os.path.isdir(path):
        print(json.dumps({"ok": False, "reason": "not cloned", "head": None}))
        return
    try:
        done = subprocess.run(["git", "-C", path, "rev-parse", "HEAD"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, universal_newlines=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        print(json.dumps({"ok": False, "reason": "git failed: %s" % e, "head": None}))
        return
    if done.returncode != 0:
        reason = "not a git checkout: " + (done.stderr.strip().splitlines() or ["?"])[-1]
        print(json.dumps({"ok": False, "reason": reason, "head": None}))
        return
    head = done.stdout.strip()
    ok = head.startswith(rev)
    reason = "at %s" % head[:12] if ok else "at %s, not %s" % (head[:12], rev[:12])
    print(json.dumps({"ok": ok, "reason": reason, "head": head}))


if __name__ == "__main__":
    main()
