"""Probe: add, replace or remove one machine's entry in the node's netrc. Stdlib only.

Input (JSON on stdin): {"action": "login" | "logout", "explicit": URL or null, "python": the
env's python or null, "key": KEY (login only)}. The machine is the one this node's wandb reads
for the server it will use (_wandb_server: the explicit URL, else the node's WANDB_BASE_URL,
its wandb settings file, or its wandb's default).
The file is `$NETRC`, else `~/.netrc` (as `wandb login` and the W&B SDK pick it). Every other
byte of the file stays as it was; the new file is written beside the old one (mode 0600 from
its creation), flushed to disk and renamed over it, so a crash leaves the old file or the new
one, never half of one. Prints {"ok", "status", "path", "mode_fixed", "machine", "server",
"server_source"} where status is
"unchanged", "added", "replaced", "removed" or "absent"; or {"ok": false, "error"}.

The key is never printed: every message that leaves this script is scrubbed of it.
"""

import json
import os
import sys

from _atomic import write_atomically  # inlined by probes.load
from _secrets import SECRETS, scrub  # inlined by probes.load
from _wandb_server import netrc_machine, wandb_packages, wandb_server  # inlined by probes.load


def netrc_path():
    path = os.environ.get("NETRC") or "~/.netrc"
    return os.path.realpath(os.path.expanduser(path))  # write through a symlinked dotfile


def tokens(text):
    """Yield (value, start, end) for each netrc token; comments and macro bodies are skipped.

    A `macdef` body (every line up to the next empty one) comes back as one token.
    """
    i, n = 0, len(text)
    after_macdef = 0  # 2 after "macdef", 1 after its name: the body follows that line
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
            continue
        if c == "#":
            end = text.find("\n", i)
            i = n if end < 0 else end + 1
            continue
        start = i
        if c == '"':
            value, i = [], i + 1
            while i < n and text[i] != '"':
                if text[i] == "\\" and i + 1 < n:
                    i += 1
                value.append(text[i])
                i += 1
            i = min(i + 1, n)
            value = "".join(value)
        else:
            while i < n and not text[i].isspace():
                i += 1
            value = text[start:i]
        yield value, start, i
        if value == "macdef" and after_macdef == 0:
            after_macdef = 2
        elif after_macdef == 2:
            after_macdef = 0
            line_end = text.find("\n", i)
            body_start = n if line_end < 0 else line_end + 1
            body_end = text.find("\n\n", body_start - 1)
            body_end = n if body_end < 0 else body_end + 1
            if body_end > body_start:
                yield None, body_start, body_end
            i = max(i, body_end)


def entries(text):
    """The file's entries: dicts with kind ("machine", "default", "macdef"), name, the
    start and end offsets of their tokens, and their fields (login, password, ...)."""
    found = []
    pending_key = None
    toks = list(tokens(text))
    index = 0
    while index < len(toks):
        value, start, end = toks[index]
        if value in ("machine", "macdef") and index + 1 < len(toks):
            name = toks[index + 1][0]
            found.append({"kind": value, "name": name, "start": start,
                          "end": toks[index + 1][2], "fields": {}})
            index += 2
            pending_key = None
            continue
        if value == "default":
            found.append({"kind": "default", "name": None, "start": start, "end": end,
                          "fields": {}})
            index += 1
            pending_key = None
            continue
        if found:
            found[-1]["end"] = end
            if pending_key is not None:
                found[-1]["fields"][pending_key] = value
                pending_key = None
            elif value in ("login", "password", "account"):
                pending_key = value
        index += 1
    return found


def whole_lines(text, start, end):
    """Widen [start, end) to whole lines when nothing else shares them."""
    line_start = text.rfind("\n", 0, start) + 1
    if text[line_start:start].strip():
        return start, end, False
    line_end = text.find("\n", end)
    line_end = len(text) if line_end < 0 else line_end + 1
    if text[end:line_end].strip():
        return start, end, False
    return line_start, line_end, True


def rewrite(text, machine, key):
    """The new text and the status, for key=None (remove) or a key (add or replace)."""
    mine = [e for e in entries(text) if e["kind"] == "machine" and e["name"] == machine]
    if key is not None and len(mine) == 1 and mine[0]["fields"].get("password") == key:
        return text, "unchanged"
    if key is None and not mine:
        return text, "absent"
    block = "machine %s\n  login user\n  password %s\n" % (machine, key)  # as wandb writes
    inline = "machine %s login user password %s" % (machine, key)  # where lines are shared
    pieces, cursor, placed = [], 0, False
    for entry in mine:
        start, end, whole = whole_lines(text, entry["start"], entry["end"])
        pieces.append(text[cursor:start])
        if key is not None and not placed:
            pieces.append(block if whole else inline)
            placed = True
        cursor = end
    pieces.append(text[cursor:])
    if mine:
        return "".join(pieces), "replaced" if key is not None else "removed"
    # A new entry goes before `default` (which must come last), else at the end.
    default = next((e for e in entries(text) if e["kind"] == "default"), None)
    if default is not None:
        at = text.rfind("\n", 0, default["start"]) + 1
        if text[at:default["start"]].strip():
            return text[:default["start"]] + inline + " " + text[default["start"]:], "added"
        return text[:at] + block + text[at:], "added"
    prefix = text
    if prefix and not prefix.endswith("\n"):
        prefix += "\n"
    found = entries(text)
    if found and found[-1]["kind"] == "macdef" and not prefix.endswith("\n\n"):
        prefix += "\n"  # a macro body runs until an empty line
    return prefix + block, "added"


def apply(request):
    server, source = wandb_server(request.get("explicit"), wandb_packages(request.get("python")))
    machine = netrc_machine(server)
    key = request.get("key") if request["action"] == "login" else None
    if request["action"] == "login" and not key:
        raise ValueError("no key given")
    for value in (machine, key or ""):
        if any(c.isspace() or c in "\"'#\\" for c in value):
            raise ValueError("the machine name or key has characters a netrc cannot hold")
    path = netrc_path()
    try:
        with open(path, "rb") as f:
            old = f.read().decode("utf-8", "surrogateescape")
        like = os.stat(path)
    except FileNotFoundError:
        old, like = "", None
    new, status = rewrite(old, machine, key)
    mode_fixed = False
    if status in ("unchanged", "absent"):
        if like is not None and like.st_mode & 0o777 != 0o600 and key is not None:
            os.chmod(path, 0o600)
            mode_fixed = True
    else:
        write_atomically(path, new.encode("utf-8", "surrogateescape"), 0o600, like)
    return {"ok": True, "status": status, "path": path, "mode_fixed": mode_fixed,
            "machine": machine, "server": server, "server_source": source}


def main():
    answer = {"ok": False, "error": {"type": "ProbeError", "message": "no input"}}
    try:
        request = json.loads(sys.stdin.read())
        SECRETS.append(request.get("key") or "")
        answer = apply(request)
    except Exception as e:  # report, scrubbed; never a traceback that could quote the key
        answer = {"ok": False, "path": None,
                  "error": {"type": type(e).__name__, "message": scrub(str(e))}}
    print(json.dumps(answer))


main()
