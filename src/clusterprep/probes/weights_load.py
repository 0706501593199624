"""Probe: run the weights loads on this node, one after another, as the training code would
load its models: inside the env (the activation lines), in the code's folder, offline
(HF_HUB_OFFLINE=1 and the like, so a missing file fails here instead of downloading), with the
node's own hub cache. Loads that need a GPU are skipped on a node without one; none runs where
the env cannot be activated or the code's folder is not there ("not-run", with the shell's
words).

Input: {"activate": str, "cwd": str|null, "env": {...}, "tail": int,
        "loads": [{"name", "command", "timeout", "gpu", "stdin"}]}.
Output: {"gpus": int, "loads": [{"name", "state": "ok"|"failed"|"timeout"|"skipped"|"not-run",
         "seconds", "exit", "tail": [last lines of the loader's output]}]}.
"""

import glob
import json
import os
import shlex
import signal
import subprocess
import sys
import time


def gpus():
    return len(glob.glob("/dev/nvidia[0-9]*"))


def prelude(data):
    """The lines every load starts with: the env activated, then into the code's folder."""
    return data["activate"] + (f"cd {shlex.quote(data['cwd'])}\n" if data["cwd"] else "")


def run(load, data, env):
    script = prelude(data) + load["command"] + "\n"
    started = time.monotonic()
    stdin = load.get("stdin")
    # Its own process group (so a timeout ends the whole load), in this session (so the head
    # ending this probe's session ends the load too).
    process = subprocess.Popen(["bash", "-c", script], env=env, preexec_fn=os.setpgrp,
                               stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    state = "ok"
    try:
        out, _ = process.communicate(stdin.encode() if stdin else None,
                                     timeout=load["timeout"])
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, _ = process.communicate()
        state = "timeout"
    if state == "ok" and process.returncode != 0:
        state = "failed"
    lines = out.decode(errors="replace").rstrip().splitlines()
    return {"name": load["name"], "state": state,
            "seconds": round(time.monotonic() - started, 3), "exit": process.returncode,
            "tail": lines[-data["tail"]:] if state != "ok" else []}


def main():
    data = json.loads(sys.stdin.read())
    env = dict(os.environ, **data["env"])
    found = gpus()
    results = []
    # The env and the code's folder first, once: if they are not there, no load can say more.
    ready = run({"name": "", "command": "true", "timeout": 60, "stdin": None}, data, env)
    for load in data["loads"]:
        if ready["state"] != "ok":
            results.append(dict(ready, name=load["name"], state="not-run"))
        elif load["gpu"] and not found:
            results.append({"name": load["name"], "state": "skipped", "seconds": 0.0,
                            "exit": None, "tail": []})
        else:
            results.append(run(load, data, env))
    print(json.dumps({"gpus": found, "loads": results}))


main()
