"""Probe: is the shared folder there, and is it the folder the head wrote a token into?

Input: {"dir", "token_file", "mode": "write" | "read", "token"}. "write" (head) creates the
folder when missing and writes the token; "read" (every node) reads the token back. Stdlib only.
"""

import json
import os
import shutil
import sys

from _atomic import write_atomically  # inlined by probes.load


def free_bytes(path):
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def write(spec):
    folder = spec["dir"]
    created = not os.path.isdir(folder)
    os.makedirs(os.path.dirname(spec["token_file"]), exist_ok=True)
    write_atomically(spec["token_file"], spec["token"].encode())
    return {"ok": True, "created": created, "free": free_bytes(folder)}


def read(spec):
    folder = spec["dir"]
    if not os.path.isdir(folder):
        return {"ok": False, "reason": "missing", "free": None}
    try:
        with open(spec["token_file"]) as f:
            token = f.read()
    except OSError:
        token = None
    result = {"free": free_bytes(folder), "writable": os.access(folder, os.W_OK), "token": token}
    result["ok"] = token is not None and token == spec.get("token")
    result["reason"] = "same" if result["ok"] else "different"
    return result


def main():
    spec = json.loads(sys.stdin.read())
    try:
        answer = write(spec) if spec["mode"] == "write" else read(spec)
    except OSError as e:
        answer = {"ok": False, "error": "%s: %s" % (getattr(e, "filename", "") or "", e.strerror)}
    print(json.dumps(answer))


if __name__ == "__main__":
    main()
