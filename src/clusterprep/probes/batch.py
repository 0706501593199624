"""Probe: run several probes in one round trip. Stdlib only; runs on the node.

Input: {"calls": [{"name", "source", "payload"}]}: each probe's source and its input.
Output: {"results": [{"name", "output", "error"}]}: each probe's last printed line (its JSON
answer) or why it gave none. Each probe runs as it would alone: its own globals, its input on
stdin, its answer on stdout.
"""

import io
import json
import sys


def run(call):
    real_stdin, real_stdout = sys.stdin, sys.stdout
    sys.stdin = io.StringIO(json.dumps(call["payload"]))
    sys.stdout = captured = io.StringIO()
    error = None
    try:
        exec(compile(call["source"], call["name"], "exec"), {"__name__": "__main__"})
    except SystemExit as e:
        if e.code not in (None, 0):
            error = "exited %s" % e.code
    except Exception as e:  # one probe's failure is its own, not the others'
        error = "%s: %s" % (type(e).__name__, e)
    finally:
        sys.stdin, sys.stdout = real_stdin, real_stdout
    lines = captured.getvalue().strip().splitlines()
    return {"name": call["name"], "output": lines[-1] if lines else None, "error": error}


def main():
    request = json.loads(sys.stdin.read())
    print(json.dumps({"results": [run(call) for call in request["calls"]]}))


main()
