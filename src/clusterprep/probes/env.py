"""Probe: is the Python env at PREFIX there, of the right Python, installed by this recipe?

Input: {"prefix", "python_version", "stamp"}. The stamp (a hash of the recipe's env, pins and
install commands) is written into the env after its install commands succeed. Stdlib only.
"""

import json
import os
import subprocess
import sys

STAMP_FILE = ".clusterprep-env.json"


def main():
    spec = json.loads(sys.stdin.read())
    python = os.path.join(spec["prefix"], "bin", "python")
    if not os.path.exists(python):
        print(json.dumps({"ok": False, "reason": "env missing"}))
        return
    try:
        done = subprocess.run([python, "-c", "import platform; print(platform.python_version())"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              universal_newlines=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        print(json.dumps({"ok": False, "reason": "env python does not run: %s" % e}))
        return
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["?"])[-1]
        print(json.dumps({"ok": False, "reason": "env python does not run: " + tail}))
        return
    version = done.stdout.strip()
    wanted = spec["python_version"].split(".")
    if version.split(".")[:len(wanted)] != wanted:
        print(json.dumps({"ok": False, "conflict": True, "version": version,
                          "reason": "env has Python %s, the recipe wants %s"
                          % (version, spec["python_version"])}))
        return
    try:
        with open(os.path.join(spec["prefix"], STAMP_FILE)) as f:
            stamp = json.load(f).get("stamp")
    except (OSError, ValueError):
        stamp = None
    if stamp != spec["stamp"]:
        reason = ("install commands not run yet" if stamp is None
                  else "installed from other pins or commands")
        print(json.dumps({"ok": False, "reason": reason, "version": version}))
        return
    print(json.dumps({"ok": True, "reason": "Python %s, installed" % version,
                      "version": version}))


if __name__ == "__main__":
    main()
