"""The node is this machine: commands run in a local login shell, no SSH server needed."""

from __future__ import annotations

import asyncio
import os
import pwd
from collections.abc import AsyncIterator

from clusterprep.fleet.transport import (
    CommandResult,
    OutputCallback,
    Transport,
    collect,
    feed,
    kill_tree_command,
)


def login_shell() -> str:
    """The user's shell from the password database, as sshd would run it."""
    try:
        shell = pwd.getpwuid(os.getuid()).pw_shell
    except KeyError:
        shell = ""
    return shell if shell and os.access(shell, os.X_OK) else "/bin/sh"


class LocalTransport(Transport):
    """Runs `SHELL -c COMMAND` here, in the home directory, like `ssh localhost COMMAND`."""

    async def connect(self) -> None:
        return None

    async def run(
        self,
        command: str,
        *,
        stdin: bytes | None = None,
        timeout: float | None = None,
        on_output: OutputCallback | None = None,
        stdin_stream: AsyncIterator[bytes] | None = None,
    ) -> CommandResult:
        piped = stdin is not None or stdin_stream is not None
        process = await asyncio.create_subprocess_exec(
            login_shell(),
            "-c",
            command,
            stdin=asyncio.subprocess.PIPE if piped else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=os.path.expanduser("~"),
            start_new_session=True,  # so a timeout kills the command's children too
        )
        if stdin_stream is not None:
            assert process.stdin is not None
            feeding = asyncio.ensure_future(feed(process.stdin, stdin_stream, process.stdin.close))
        elif stdin is not None:
            assert process.stdin is not None
            process.stdin.write(stdin)
            feeding = asyncio.ensure_future(_feed_and_close(process.stdin))
        else:
            feeding = None

        async def kill() -> None:
            killer = await asyncio.create_subprocess_exec(
                "/bin/sh", "-c", kill_tree_command(process.pid),
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL)
            await killer.wait()

        assert process.stdout is not None and process.stderr is not None
        result = await collect(
            self.node.name, process.stdout, process.stderr, process.wait(), kill, timeout, on_output
        )
        if feeding is not None:
            feeding.cancel()
        return result

    async def close(self) -> None:
        return None


async def _feed_and_close(writer: asyncio.StreamWriter) -> None:
    try:
        await writer.drain()
        writer.close()
    except (BrokenPipeError, ConnectionResetError):
        pass  # the command exited without reading all its input, as `ssh` allows
