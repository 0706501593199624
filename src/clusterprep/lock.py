"""The cluster lock: one clusterprep at a time changes a cluster's state.

Commands that change state (`up`, `down`, `weights stage|sync`, `wandb login|logout`) hold,
for their whole run, each node's own lock (where state is per node: `~/.bashrc`, the hub
cache, the netrc) and, for `up`, the shared folder's (`{shared}/.clusterprep/lock`, on the
head). A second operator gets `LockHeld`, naming who holds the cluster (command, pid, host,
user, since), and may wait for it (`--lock-wait`).

A lock is a kernel lock held by a small process on the node (`probes/lock.py`) for as long as
the invocation that took it keeps writing to it: it ends when the invocation releases it, when
the invocation dies (its connections close), and at the latest 30 seconds (settings.py,
CLUSTERPREP_LOCK_STALE_AFTER) after the invocation froze or lost its network: the holder writes
a heartbeat to every node six times in that span. No stale lock needs breaking by hand.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import os
import random
import socket
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from clusterprep import probes, settings
from clusterprep.errors import ClusterprepError
from clusterprep.fleet import CommandResult, Fleet
from clusterprep.fleet.gather import fold
from clusterprep.inventory import Node
from clusterprep.probes import _flock

SETTLE = 30.0  # seconds a node may take to answer whether it got its locks


@dataclass(frozen=True)
class Owner:
    """Who holds a lock: written into the lock file, shown to whoever finds it held."""

    command: str
    pid: int
    host: str
    user: str
    since: str

    @classmethod
    def this_process(cls) -> Owner:
        words = [os.path.basename(sys.argv[0]) if sys.argv else "clusterprep", *sys.argv[1:]]
        if words[0] == "__main__.py":  # python -m clusterprep
            words[0] = "clusterprep"
        return cls(" ".join(words), os.getpid(), socket.gethostname(), getpass.getuser(),
                   time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()))

    def describe(self) -> str:
        return (f"`{self.command}` (pid {self.pid} on {self.host} as {self.user}, "
                f"since {self.since})")


class LockHeld(ClusterprepError):
    """Another clusterprep holds a lock this command needs (exit status 75, sysexits'
    EX_TEMPFAIL: try again later).

    Attributes:
        holders: each holder's description, with the nodes (or files) where it holds locks.
    """

    exit_code = 75

    def __init__(self, holders: dict[str, list[str]], waited: float) -> None:
        self.holders = holders
        lines = [f"{who}, holding {_places(places)}" for who, places in holders.items()]
        wait_hint = (f"waited {waited:g} s; " if waited else "") + \
            "wait for it to finish or stop it, then run again (--lock-wait S waits up to S s)"
        super().__init__("another clusterprep is changing this cluster: " + "; ".join(lines)
                         + f". {wait_hint}")


def _places(places: list[str]) -> str:
    """`node[01-04]`, and the lock files named alone."""
    nodes = [p for p in places if not p.startswith(("the lock", "/"))]
    files = [p for p in places if p not in nodes]
    return " and ".join(([f"the locks of {fold(nodes)}"] if nodes else []) + files)


class ClusterLock:
    """Holds the locks of a fleet's nodes (and of its shared folder) while in `async with`.

    Nodes that cannot be reached are not locked: every command fails on them anyway, and the
    fleet remembers them as unreachable for the rest of the invocation. Nor are nodes whose
    lock file cannot be made (a read-only home): the command's own work there fails with its
    own reason, a node's failure like any other; `unlocked` says why, by node.
    """

    def __init__(self, fleet: Fleet, *, shared: str | None = None, wait: float = 0.0) -> None:
        self.fleet = fleet
        self.shared_path = f"{shared}/.clusterprep/lock" if shared else None
        self.wait = wait
        self.owner = Owner.this_process()
        self._released = asyncio.Event()
        self._holding: asyncio.Task[None] | None = None
        self.unlocked: dict[str, str] = {}

    async def __aenter__(self) -> ClusterLock:
        started = time.monotonic()
        while True:
            holders = await self._try()
            if not holders:
                return self
            await self._release()
            waited = time.monotonic() - started
            if waited >= self.wait:
                raise LockHeld(holders, round(waited))
            await asyncio.sleep(min(self.wait - waited, random.uniform(0.5, 1.5)))

    async def __aexit__(self, *exc_info: object) -> None:
        await self._release()

    async def _try(self) -> dict[str, list[str]]:
        """Ask every node for its locks at once; the holders found, by who holds them."""
        self._released = asyncio.Event()
        loop = asyncio.get_running_loop()
        nodes = self.fleet.inventory.nodes
        answers: dict[str, asyncio.Future[dict[str, Any]]] = {
            node.name: loop.create_future() for node in nodes}
        self._holding = asyncio.ensure_future(self._hold(nodes, answers))
        await asyncio.wait(answers.values(), timeout=SETTLE)
        holders: dict[str, list[str]] = {}
        self.unlocked = {}
        for node in nodes:
            answer = answers[node.name].result() if answers[node.name].done() else \
                {"error": f"no answer to the lock request in {SETTLE:g} s"}
            for lock in answer.get("held", []):
                who = _describe(lock.get("owner"))
                place = f"the lock of the shared folder ({lock['path']})" \
                    if lock["path"] == self.shared_path else node.name
                holders.setdefault(who, []).append(place)
            if "error" in answer:
                self.unlocked[node.name] = answer["error"]
        return holders

    async def _hold(self, nodes: list[Node],
                    answers: dict[str, asyncio.Future[dict[str, Any]]]) -> None:
        """Run the lock probe on every node until released; each node's answer gets what it
        said first."""
        source = probes.load("lock")
        rest = f"node\n{settings.lock_stale_after():g}\n{json.dumps(asdict(self.owner))}\n"

        def opening(node: Node) -> bytes:
            shared = self.shared_path if node.head and self.shared_path else "-"
            return f"{source}{shared}\n{rest}".encode()

        buffers = {node.name: b"" for node in nodes}

        def on_output(node: str, stream: str, chunk: bytes) -> None:
            answer = answers[node]
            if stream != "stdout" or answer.done():
                return
            buffers[node] += chunk
            lines = buffers[node].decode(errors="replace").split("\n")
            if len(lines) > 1 and lines[0] == "acquired":
                answer.set_result({"acquired": True})
            elif len(lines) > 1 and lines[0].startswith("error "):
                answer.set_result({"error": lines[0][len("error "):]})
            elif "end" in lines:
                held = [line[5:].partition("\t") for line in lines[:lines.index("end")]]
                answer.set_result({"held": [{"path": path, "owner": _parse(owner)}
                                            for path, _, owner in held]})

        def on_end(result: CommandResult) -> None:
            answer = answers[result.node]
            if answer.done():
                return
            if result.error is not None:  # unreachable, lost, hung: the command will say so
                answer.set_result({"unreachable": True})
            else:
                said = result.stderr.decode(errors="replace").strip()[-300:]
                answer.set_result({"error": f"the lock probe exited {result.exit_code}: {said}"})

        await self.fleet.converse(probes.command(source), opening, self._heartbeat,
                                  on_output=on_output, on_end=on_end, nodes=nodes)

    async def _heartbeat(self) -> AsyncIterator[bytes]:
        while True:
            try:
                await asyncio.wait_for(self._released.wait(), settings.lock_stale_after() / 6)
            except asyncio.TimeoutError:
                yield b"\n"
            else:
                yield b"release\n"  # the locks go; stdin's end without this means we died
                return

    async def _release(self) -> None:
        self._released.set()
        if self._holding is not None:
            await asyncio.wait([self._holding], timeout=10)
        self._holding = None


def _parse(owner: str) -> object:
    try:
        return json.loads(owner)
    except ValueError:
        return None


def _describe(owner: object) -> str:
    """Who holds a lock, from what its file says."""
    if isinstance(owner, dict) and set(owner) == set(Owner.__dataclass_fields__):
        return Owner(**owner).describe()
    return "another clusterprep (its lock file names no owner)"


@contextmanager
def local_lock(path: Path, wait: float = 0.0) -> Iterator[None]:
    """Hold a lock file on this machine (the head's staging cache, say) within `with`."""
    owner = Owner.this_process()
    started = time.monotonic()
    while (fd := _flock.take(str(path), json.dumps(asdict(owner)))) is None:
        waited = time.monotonic() - started
        if waited >= wait:
            raise LockHeld({_describe(_parse(_flock.holder(str(path)))): [str(path)]},
                           round(waited))
        time.sleep(min(wait - waited, random.uniform(0.5, 1.5)))
    try:
        yield
    finally:
        os.close(fd)
