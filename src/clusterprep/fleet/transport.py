"""The Transport interface every way of reaching a node implements, and the results it returns.

A node that cannot be reached, or a command that times out, is not an exception here: it is a
`NodeError` (errors.py) inside a `CommandResult`, so one bad node never stops the others.
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from clusterprep.errors import (
    COMMAND_TIMEOUT,
    CONNECTION_KINDS,
    DISCONNECTED,
    HUNG,
    INTERRUPTED,
    SHELL_STARTUP,
    NodeError,
)
from clusterprep.inventory import Node

OutputCallback = Callable[[str, str, bytes], None]
"""Called as `on_output(node_name, "stdout" | "stderr", chunk)` while a command runs."""


@dataclass
class CommandResult:
    """What one command did on one node. Output is kept as bytes: nodes may print anything."""

    node: str
    exit_code: int | None
    stdout: bytes = b""
    stderr: bytes = b""
    seconds: float = 0.0
    error: NodeError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.exit_code == 0

    @property
    def reached(self) -> bool:
        """True when the node was connected (whatever the command then did)."""
        return self.error is None or self.error.kind not in CONNECTION_KINDS


class Transport(ABC):
    """One node's connection. Opened once per invocation and reused by every step."""

    def __init__(self, node: Node) -> None:
        self.node = node

    @property
    def host_address(self) -> str | None:
        """The host name or address this machine reaches the node at (None: this machine).
        Other nodes dial it for node-to-node traffic, such as the weights chain."""
        return None

    @abstractmethod
    async def connect(self) -> None:
        """Open the connection. Raises NodeUnreachable with a classified cause."""

    @abstractmethod
    async def run(
        self,
        command: str,
        *,
        stdin: bytes | None = None,
        timeout: float | None = None,
        on_output: OutputCallback | None = None,
        stdin_stream: AsyncIterator[bytes] | None = None,
    ) -> CommandResult:
        """Run `command` in the node's login shell, as `ssh node COMMAND` would.

        `stdin` is sent and then closed; it is the only way secrets reach a node (never argv).
        `stdin_stream` (instead of `stdin`) is sent chunk by chunk as it is produced, with
        back-pressure, then closed: for large or conversational input.
        Output gathered before a timeout or Ctrl-C is kept in the result.
        """

    @abstractmethod
    async def close(self) -> None:
        """Close the connection; safe to call twice."""


class _Writer(Protocol):
    def write(self, data: bytes) -> object: ...

    async def drain(self) -> None: ...


LostConnection = Callable[[BaseException], "NodeError | None"]
"""A transport's judge of an exception raised while talking to a node: the NodeError when it
means the connection is gone (or the node stopped answering), None when it is something else."""


def lost_connection(error: BaseException) -> NodeError | None:
    """The judge for transports whose only I/O errors are the operating system's."""
    if isinstance(error, (OSError, EOFError)):
        return NodeError(DISCONNECTED, f"connection lost while the command ran: {error}")
    return None


async def feed(writer: _Writer, stream: AsyncIterator[bytes], close: Callable[[], object],
               lost: LostConnection = lost_connection) -> None:
    """Send `stream` to a command's stdin, waiting for the peer to keep up, then close it.

    A command that exits before reading everything, or a connection that is lost meanwhile,
    ends the feeding quietly, as with `ssh`: the command's result says what happened.
    """
    try:
        async for chunk in stream:
            writer.write(chunk)
            await writer.drain()
        close()
    except Exception as e:  # noqa: BLE001 - judged below; anything else is ours and re-raised
        if not isinstance(e, RuntimeError) and lost(e) is None:  # RuntimeError: writer closed
            raise


class _Reader(Protocol):
    async def read(self, n: int) -> bytes: ...


async def collect(
    node: str,
    stdout: _Reader,
    stderr: _Reader,
    wait: Awaitable[int | None],
    kill: Callable[[], Awaitable[None]],
    timeout: float | None,
    on_output: OutputCallback | None,
    lost: LostConnection = lost_connection,
) -> CommandResult:
    """Read a running command's output until it exits, is timed out, or is cancelled.

    Shared by every transport: each passes its own readers, its wait-for-exit, its kill and
    its judge of lost connections. Output read so far is never lost: a timeout, a lost
    connection or a cancellation (Ctrl-C) returns what the command printed, with a `NodeError`
    saying why it is incomplete. Swallowing the cancellation here is deliberate: the Fleet
    cancels node tasks only to stop them, and it re-checks its own cancellation itself.
    """
    started = time.monotonic()
    buffers = {"stdout": bytearray(), "stderr": bytearray()}

    async def pump(name: str, reader: _Reader) -> None:
        while chunk := await reader.read(65536):
            buffers[name] += chunk
            if on_output is not None:
                on_output(node, name, chunk)

    async def finish() -> int | None:
        try:
            await asyncio.gather(pump("stdout", stdout), pump("stderr", stderr))
        except BaseException:
            if asyncio.iscoroutine(wait):
                wait.close()  # never to be awaited: the output ended in an error
            raise
        return await wait

    task = asyncio.ensure_future(finish())
    error = None
    exit_code = None
    try:
        exit_code = await asyncio.wait_for(asyncio.shield(task), timeout)
    except asyncio.TimeoutError:
        await _bounded(kill())
        task.cancel()
        error = NodeError(COMMAND_TIMEOUT, f"command still running after {timeout:g} s; killed")
    except asyncio.CancelledError:
        await _bounded(kill())
        task.cancel()
        error = NodeError(INTERRUPTED, "interrupted before the command finished")
    except Exception as e:  # noqa: BLE001 - judged by the transport; anything else re-raised
        error = lost(e)
        if error is None:
            raise
    if task.done() and not task.cancelled():
        task.exception()  # retrieved: a lost connection was already reported above
    return CommandResult(
        node,
        exit_code,
        bytes(buffers["stdout"]),
        bytes(buffers["stderr"]),
        time.monotonic() - started,
        error,
    )


async def _bounded(kill: Awaitable[None], seconds: float = 5.0) -> None:
    """Killing a command must not hang the invocation (its node may have just died)."""
    try:
        await asyncio.wait_for(kill, seconds)
    except Exception:  # noqa: BLE001 - a dead node cannot be killed; the result says why
        pass


def hung(host: str, silence: str, seconds: float) -> NodeError:
    """A node cut out for `silence` (what it failed to send) for `seconds` (`--hung-after`)."""
    return NodeError(HUNG, f"{host} stopped answering: {silence} for {seconds:g} s; cut out "
                           "(is the node frozen, overloaded or cut off? --hung-after sets how "
                           "long to wait)")


def startup_failure(result: CommandResult) -> NodeError:
    """The command never ran: the shell started for it exited first (the transport saw no sign
    of the command's start: over SSH, its session report), whatever status it exited with."""
    said = result.stderr.decode(errors="replace").strip().splitlines()[-1:]
    return NodeError(SHELL_STARTUP, (
        f"the node's shell exited (status {result.exit_code}) before running the command"
        + (f", saying: {said[0]}" if said else "")
        + ". Look at the shell startup files there: ~/.bashrc (and what it sources) runs for "
          "every `ssh node command`; an `exit` or `return` before its interactive guard ends "
          "every command"))


def kill_tree_command(session: int) -> str:
    """A shell command (ps, awk, xargs: every node has them) that SIGKILLs every process of a
    command's session and every process descended from one: a command's children that left
    its session (torchrun starts each worker in a session of its own) go too."""
    closure = (
        "{p[NR] = $1; pp[NR] = $2; if ($3 == s) m[$1] = 1} "
        "END {do {n = 0; for (i = 1; i <= NR; i++) if (!(p[i] in m) && (pp[i] in m)) "
        "{m[p[i]] = 1; n++}} while (n); for (k in m) print k}")
    # All stopped first, then killed: a shell whose child died first would run its next
    # command (`sleep 30; echo done` printed "done") in the moment before its own kill.
    return (f"ps -eo pid=,ppid=,sid= | awk -v s={int(session)} '{closure}' "
            "| xargs -r sh -c 'kill -STOP \"$@\"; kill -KILL \"$@\"' kill 2>/dev/null; true")
