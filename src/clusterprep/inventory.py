"""Which nodes make up the cluster: a nodes file or a hostlist becomes an ordered `Inventory`.

The nodes file is the tutorial's `nodes.txt`: one SSH host per line, the first line is the head
(launch) node. We also accept `#` comments, blank lines, `user@host` and hostlist ranges
(`node-[001-016]`, ClusterShell/Slurm syntax). Every error names the file and the line.

Through Slurm, the nodes are the allocation's (fleet/slurm_inventory.py).
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass, field
from pathlib import Path

from ClusterShell.NodeSet import NodeSet, NodeSetParseError, RESOLVER_NOGROUP

from clusterprep import settings
from clusterprep.errors import InventoryError

# A host is a DNS name, an IPv4 address or a bracketed IPv6 address; a user is a POSIX login
# name. Anything else (spaces, quotes, `;`, `$`, `~`, ...) is something a shell would interpret.
_HOST = re.compile(r"^(?:[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?|\[[0-9A-Fa-f:.]+\])$")
_USER = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
LOCAL_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})


@dataclass(frozen=True)
class Node:
    """One node as the user named it.

    Attributes:
        name: the name as written (`gpu-01` or `alice@gpu-01`); unique in an inventory.
        host: the SSH host part, looked up in the ssh config.
        user: the login user when written as `user@host`, else None (the ssh config decides).
        head: True for the first node, where training is launched.
        origin: where the node was named (`nodes.txt:3`), for error messages.
    """

    name: str
    host: str
    user: str | None = None
    head: bool = False
    origin: str = ""


@dataclass
class Inventory:
    """The cluster's nodes in order, head first."""

    nodes: list[Node]
    source: str
    warnings: list[str] = field(default_factory=list)
    slurm: bool = False            # reached through Slurm job steps, not SSH
    slurm_job: str | None = None   # the allocation; None: clusterprep allocates the nodes

    @property
    def head(self) -> Node:
        return self.nodes[0]

    @property
    def names(self) -> list[str]:
        return [node.name for node in self.nodes]

    def __len__(self) -> int:
        return len(self.nodes)


def local_inventory() -> Inventory:
    """This machine alone: a one-node cluster that needs no SSH server."""
    return Inventory([Node("localhost", "localhost", head=True, origin="default")], "local machine")


def load_inventory(spec: str | None = None, cwd: Path | None = None) -> Inventory:
    """Resolve `--nodes` (or its defaults) into an Inventory.

    Order when `spec` is None: `$CLUSTERPREP_NODES`, `./nodes.txt`, `~/nodes.txt`, else the
    local machine alone.

    Raises:
        InventoryError: the file is missing, empty, or has a bad or duplicate host.
    """
    cwd = cwd or Path.cwd()
    if spec is None:
        spec = settings.nodes_spec()
    if spec is None:
        for candidate in (cwd / "nodes.txt", Path.home() / "nodes.txt"):
            if candidate.is_file():
                return parse_nodes_file(candidate)
        return local_inventory()
    path = Path(spec).expanduser()
    if not path.is_absolute():
        path = cwd / path
    if path.is_file():
        return parse_nodes_file(path)
    if _looks_like_a_path(spec):
        raise InventoryError(spec, "no such nodes file")
    return parse_hostlist(spec)


def refused(node: Node, message: str) -> InventoryError:
    """The error for a node, naming the file and line it was named on (`nodes.txt:3`)."""
    source, _, line = node.origin.rpartition(":")
    if line.isdigit():
        return InventoryError(source, message, int(line))
    return InventoryError(node.origin, message)


def _looks_like_a_path(spec: str) -> bool:
    return "/" in spec or spec.endswith((".txt", ".list", ".hosts"))


def parse_hostlist(expression: str, source: str = "hostlist") -> Inventory:
    """`node-[001-004],gpu7` -> Inventory, in the order written (ranges ascending)."""
    nodes = _expand_entries([(expression, None)], source)
    return _finish(nodes, source)


def parse_nodes_file(path: Path) -> Inventory:
    """Read a nodes file; errors name the file and line."""
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise InventoryError(source, f"not a text file ({e.reason})") from e
    except OSError as e:
        raise InventoryError(source, f"cannot read: {e.strerror}") from e
    entries = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if line:
            entries.append((line, number))
    if not entries:
        raise InventoryError(source, "no nodes in file (only blank lines or comments)")
    return _finish(_expand_entries(entries, source), source)


def _expand_entries(entries: list[tuple[str, int | None]], source: str) -> list[Node]:
    nodes: list[Node] = []
    first_seen: dict[str, str] = {}
    for text, line in entries:
        for name in _expand_one(text, source, line):
            user, host = _split_user(name, source, line)
            origin = f"{source}:{line}" if line is not None else source
            key = f"{user}@{host}" if user else host
            if key in first_seen:
                raise InventoryError(
                    source, f"duplicate host {key!r} (already at {first_seen[key]})", line
                )
            first_seen[key] = origin
            nodes.append(Node(name, host, user, head=not nodes, origin=origin))
    return nodes


def _expand_one(text: str, source: str, line: int | None) -> list[str]:
    if any(c.isspace() for c in text):
        raise InventoryError(source, f"one host per line, got {text!r}", line)
    names: list[str] = []
    for part in _split_outside_brackets(text):
        if "[" not in part:
            names.append(part)
            continue
        user = ""
        if "@" in part.split("[", 1)[0]:
            user, part = part.split("@", 1)
            user += "@"
        try:
            names.extend(user + name for name in NodeSet(part, resolver=RESOLVER_NOGROUP))
        except NodeSetParseError as e:
            raise InventoryError(source, f"bad hostlist {part!r}: {e}", line) from e
    return names


def _split_outside_brackets(text: str) -> list[str]:
    """`a[1,2],b` -> [`a[1,2]`, `b`]: NodeSet would sort the parts; the user's order matters."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [part for part in parts if part]


def _split_user(name: str, source: str, line: int | None) -> tuple[str | None, str]:
    user, _, host = name.rpartition("@")
    if user and not _USER.match(user):
        raise InventoryError(source, f"not a valid user name: {user!r} in {name!r}", line)
    if not _HOST.match(host):
        raise InventoryError(source, f"not a valid host name: {host!r}", line)
    return (user or None), host


def _finish(nodes: list[Node], source: str) -> Inventory:
    if not nodes:
        raise InventoryError(source, "no nodes")
    inventory = Inventory(nodes, source)
    if not is_this_machine(inventory.head.host):
        inventory.warnings.append(
            f"the head node {inventory.head.name} (first in {source}) is not this machine: "
            "training is launched from the head, so run clusterprep there"
        )
    return inventory


def is_this_machine(host: str) -> bool:
    """True when `host` names this machine (by name, not by resolving the ssh config)."""
    if host in LOCAL_NAMES:
        return True
    own = {socket.gethostname()}
    try:
        own.add(socket.getfqdn())
    except OSError:
        pass
    return host in own
