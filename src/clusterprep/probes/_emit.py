"""Probe part: the JSON lines a long-running probe prints as it goes. Inlined by probes.load;
stdlib only, like the probes."""

import json
import sys


def emit(obj):
    """Print one JSON line; False when the head is gone. Threads may share it: the binary
    stdout's own lock keeps each line whole."""
    try:
        sys.stdout.buffer.write(json.dumps(obj).encode() + b"\n")
        sys.stdout.buffer.flush()
    except (OSError, ValueError):
        return False
    return True
