"""Probe: files of the hub cache linked at paths of the code, made ("place") or checked.

Stdlib only; runs on the node. Input: {"action": "place" | "check", "code": FOLDER,
"items": [[at, target, size], ...]}: `at` (inside the code folder) must be a symlink to
`target` (the file in this node's own hub cache), which must be a file of `size` bytes.
Output: {"items": [{"state", "reason", "fix"}, ...]}, state "ok", "placed" or "failed"; fix: the
words of the clusterprep command that would mend a failure (the head adds the user's options),
or null.

A link is made aside (named after this host and process) and renamed over the old one, so
nodes that share the code folder may place the same link at once. A file or folder that is
not such a link is never replaced: it is reported, for a person to move away.
"""

import json
import os
import socket
import sys

from _links import swap_link  # inlined by probes.load

SYNC = ["weights", "sync"]


def aside(at):
    head, tail = os.path.split(at)
    host = socket.gethostname().split(".")[0]
    return os.path.join(head, ".%s.%s-%d.clusterprep-partial" % (tail, host, os.getpid()))


def one(code, at, target, size, place):
    try:
        st = os.stat(target)
    except OSError:
        return "failed", "%s is not in this node's cache" % target, SYNC
    if st.st_size != size:
        return "failed", "%s has %d bytes, not %d" % (target, st.st_size, size), SYNC
    if not os.path.islink(at):
        if os.path.lexists(at):
            return "failed", "%s is there and is not a link: move it away" % at, None
        if not place:
            return "failed", "not placed", SYNC
        if not os.path.isdir(code):
            return "failed", "the code is not at %s yet" % code, ["up"]
        swap_link(at, target, aside(at))
        return "placed", None, None
    found = os.readlink(at)
    if found == target:
        return "ok", None, None
    if not place:
        return "failed", "links to %s, not %s" % (found, target), SYNC
    swap_link(at, target, aside(at))
    return "placed", None, None


def main():
    request = json.loads(sys.stdin.read())
    place = request["action"] == "place"
    answers = []
    for at, target, size in request["items"]:
        try:
            state, reason, fix = one(request["code"], at, target, size, place)
        except OSError as e:
            state, reason, fix = "failed", "cannot link %s: %s" % (at, e), None
        answers.append({"state": state, "reason": reason, "fix": fix})
    print(json.dumps({"items": answers}))


main()
