"""Probe: is the Python env at PREFIX there, of the right Python, installed by this recipe?

Input: {"prefix", "python_version", "stamp"}. The stamp (a hash of the recipe's env, pins and
install commands) is written into the env after its install commands succeed. Stdlib only.
"""

import json
import os
import subprocess
import sys

STAMP_FILE = ".clusterprep-env.json"


def recorded_version(prefix):
    """The env's Python version from its metadata (no interpreter start), or None."""
    try:
        with open(os.path.join(prefix, "pyvenv.cfg")) as f:  # venv
            for line in f:
                key, _, value = line.partition("=")
                if key.strip() in ("version", "version_info"):
                    return value.strip()
    except OSError:
        pass
    try:  # conda: conda-meta/python-3.10.14-h955ad1f_0.json
        for name in os.listdir(os.path.join(prefix, "conda-meta")):
            if name.startswith("python-") and name[7:8].isdigit():
                return name[7:].split("-")[0]
    except OSError:
        pass
    return None


def interpreter_version(python):
    """(version, None) by running the env's interpreter, or (None, why it does not run)."""
    try:
        done = subprocess.run([python, "-c", "import platform; print(platform.python_version())"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              universal_newlines=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, "env python does not run: %s" % e
    if done.returncode != 0:
        return None, "env python does not run: " + (done.stderr.strip().splitlines() or ["?"])[-1]
    return done.stdout.strip(), None


def main():
    spec = json.loads(sys.stdin.read())
    python = os.path.join(spec["prefix"], "bin", "python")
    if not os.path.exists(python):
        print(json.dumps({"ok": False, "reason": "env missing"}))
        return
    version = recorded_version(spec["prefix"])
    if version is None:
        version, problem = interpreter_version(python)
        if version is None:
            print(json.dumps({"ok": False, "reason": problem}))
            return
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
