"""Probe: the clusterprep block at the top of ~/.bashrc: check it, write it, or remove it.

Input: {"block": TEXT, "mode": "probe" | "apply" | "remove"}. The block goes at the very top,
above the interactive guard of Debian's and Ubuntu's .bashrc, so non-interactive `ssh node cmd`
runs it too. Inserting and removing touch exactly the block's bytes: remove after insert gives
back the original file, byte for byte. Stdlib only; the file is replaced atomically.
"""

import json
import os
import sys

from _atomic import write_atomically  # inlined by probes.load

BEGIN = b"# >>> clusterprep >>>"
END = b"# <<< clusterprep <<<"
CREATED = b" (file created)"  # on the begin line when clusterprep created .bashrc itself


class BlockError(Exception):
    pass


def find_block(data):
    """(start, end) byte offsets of the managed block, end past its last newline; or None."""
    offset = 0
    start = None
    for line in data.splitlines(keepends=True):
        bare = line.rstrip(b"\r\n")
        if start is None and bare.startswith(BEGIN):
            start = offset
        elif start is not None and bare == END:
            return start, offset + len(line)
        offset += len(line)
    if start is not None:
        raise BlockError("~/.bashrc has a '# >>> clusterprep >>>' line without its end line; "
                         "fix the file by hand")
    return None


def desired(data_exists, block):
    block = block.encode()
    if not data_exists:
        block = block.replace(BEGIN, BEGIN + CREATED, 1)
    return block


def state(path, block):
    """(current bytes or None, span of the block or None, is it exactly right)"""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None, None, False
    span = find_block(data)
    if span is None:
        return data, None, False
    current = data[span[0]:span[1]]
    created = current.startswith(BEGIN + CREATED)
    right = span[0] == 0 and current == desired(not created, block)
    return data, span, right


def main():
    spec = json.loads(sys.stdin.read())
    # Follow a symlinked ~/.bashrc (dotfile managers) and replace the file it points to.
    path = os.path.realpath(os.path.expanduser("~/.bashrc"))
    try:
        data, span, right = state(path, spec["block"])
        mode = spec["mode"]
        if mode == "probe":
            reason = ("up to date" if right else "no ~/.bashrc" if data is None
                      else "block missing" if span is None else "block differs or not at the top")
            answer = {"ok": right, "reason": reason, "path": path}
        elif mode == "apply":
            if not right:
                created = data is None or (span is not None and
                                           data[span[0]:span[1]].startswith(BEGIN + CREATED))
                rest = b"" if data is None else data[:span[0]] + data[span[1]:] if span else data
                like = os.stat(path) if data is not None else None
                write_atomically(path, desired(not created, spec["block"]) + rest, like=like)
                if not state(path, spec["block"])[2]:
                    raise BlockError("~/.bashrc does not read back as written")
            answer = {"ok": True, "changed": not right, "path": path}
        else:  # remove
            if span is None:
                answer = {"ok": True, "changed": False, "path": path}
            else:
                created = data[span[0]:span[1]].startswith(BEGIN + CREATED)
                rest = data[:span[0]] + data[span[1]:]
                if created and not rest:
                    os.unlink(path)
                else:
                    write_atomically(path, rest, like=os.stat(path))
                answer = {"ok": True, "changed": True, "path": path}
    except BlockError as e:
        answer = {"ok": False, "error": str(e)}
    except OSError as e:
        answer = {"ok": False, "error": "%s: %s" % (e.filename or path, e.strerror)}
    print(json.dumps(answer))


if __name__ == "__main__":
    main()
