"""A host's SSH settings as OpenSSH itself resolves them (`ssh -G`).

Asking OpenSSH (rather than parsing config files ourselves) means `~/.ssh/config`, `Include`,
`Match`, `ProxyJump`, `/etc/ssh/ssh_config` and `-F` all hold exactly as they do for `ssh`.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from dataclasses import dataclass

from clusterprep.errors import SshConfigError
from clusterprep.fleet import sshcache

DEFAULT_PORT = 22


@dataclass(frozen=True)
class HostSettings:
    """The options of one host that clusterprep uses, after OpenSSH resolved them."""

    alias: str
    hostname: str
    port: int
    user: str
    identity_files: tuple[str, ...]
    identities_only: bool
    proxy_jump: str | None
    proxy_command: str | None
    user_known_hosts: tuple[str, ...]
    global_known_hosts: tuple[str, ...]
    strict_host_key_checking: str  # yes | no | accept-new | ask (OpenSSH's default)
    host_key_alias: str | None
    connect_timeout: float | None

    @property
    def has_own_target(self) -> bool:
        """True when the config points this host somewhere of its own (HostName, Port, jump)."""
        return (
            self.hostname != self.alias
            or self.port != DEFAULT_PORT
            or self.proxy_jump is not None
            or self.proxy_command is not None
        )


def parse_ssh_g(alias: str, text: str) -> HostSettings:
    """Turn `ssh -G` output into HostSettings."""
    values: dict[str, list[str]] = {}
    for line in text.splitlines():
        key, _, value = line.strip().partition(" ")
        values.setdefault(key.lower(), []).append(value.strip())

    def one(key: str, default: str = "") -> str:
        return values.get(key, [default])[0]

    def optional(key: str) -> str | None:
        value = one(key, "none")
        return None if value.lower() == "none" else value

    def paths(key: str) -> tuple[str, ...]:
        return tuple(os.path.expanduser(p) for v in values.get(key, []) for p in v.split())

    timeout = optional("connecttimeout")
    return HostSettings(
        alias=alias,
        hostname=one("hostname", alias),
        port=int(one("port", str(DEFAULT_PORT))),
        user=one("user"),
        identity_files=tuple(os.path.expanduser(v) for v in values.get("identityfile", [])),
        identities_only=one("identitiesonly", "no") == "yes",
        proxy_jump=optional("proxyjump"),
        proxy_command=optional("proxycommand"),
        user_known_hosts=paths("userknownhostsfile"),
        global_known_hosts=paths("globalknownhostsfile"),
        strict_host_key_checking=one("stricthostkeychecking", "ask").lower(),
        host_key_alias=optional("hostkeyalias"),
        connect_timeout=float(timeout) if timeout else None,
    )


def ssh_available() -> bool:
    return shutil.which("ssh") is not None


# One small shell resolves a batch of hosts: a process per host would cost the invocation a
# Python fork and a watcher thread each (0.2 s for 64 hosts on 2 cores). Each host's output is
# followed by a record separator (\036) and ssh's exit status.
_BATCH_SCRIPT = """
n=$1; shift; options=("${@:1:n}"); shift "$n"
for host do ssh -G "${options[@]}" -- "$host" </dev/null 2>&1; printf '\\n\\036%s\\n' "$?"; done
"""
_BATCHES = 4


def resolve_many(
    hosts: list[str], config_file: str | None = None
) -> tuple[dict[str, asyncio.Future[HostSettings]], asyncio.Task[None] | None]:
    """Start `ssh -G [-F FILE] HOST` for every host (each may be `user@host`), a few shells
    at a time, answering from the cache (`sshcache`) while the config is unchanged. Call from
    a running event loop.

    Returns a future per host, settled as soon as that host's answer arrives (so its
    connection can start while the others resolve): its settings, or the SshConfigError saying
    why OpenSSH rejected it (the message names the config file and line). Also returns the
    task doing the work, for the caller to cancel on close.
    """
    loop = asyncio.get_running_loop()
    futures = {host: loop.create_future() for host in dict.fromkeys(hosts)}
    if not ssh_available():
        error = "the OpenSSH client `ssh` is not installed on this machine"
        for host, future in futures.items():
            future.set_exception(SshConfigError(host, error))
        return futures, None
    key = sshcache.config_key(config_file)
    cached = sshcache.load(key) if key else {}
    for host, text in cached.items():
        if host in futures:
            _settle(futures[host], host, 0, text)
    missing = [host for host, future in futures.items() if not future.done()]
    task = asyncio.ensure_future(_resolve_all(missing, config_file, futures, key))
    return futures, task


async def _resolve_all(hosts: list[str], config_file: str | None,
                       futures: dict[str, asyncio.Future[HostSettings]], key: str | None) -> None:
    size = max(1, -(-len(hosts) // _BATCHES))
    answers: dict[str, str] = {}
    await asyncio.gather(*(_resolve_batch(hosts[i:i + size], config_file, futures, answers)
                           for i in range(0, len(hosts), size)))
    if key and answers:
        sshcache.save(key, answers)


async def _resolve_batch(hosts: list[str], config_file: str | None,
                         futures: dict[str, asyncio.Future[HostSettings]],
                         answers: dict[str, str]) -> None:
    options = ["-F", config_file] if config_file else []
    waiting = iter(hosts)
    try:
        process = await asyncio.create_subprocess_exec(
            "bash", "-c", _BATCH_SCRIPT, "resolve", str(len(options)), *options, *hosts,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        )
        assert process.stdout is not None
        buffer = b""
        while chunk := await process.stdout.read(65536):
            buffer += chunk
            # Each host's record: its output, "\n\036", ssh's exit status, "\n".
            while (mark := buffer.find(b"\n\036")) >= 0:
                end = buffer.find(b"\n", mark + 2)
                if end < 0:
                    break
                text, status = buffer[:mark].decode(errors="replace"), buffer[mark + 2:end]
                buffer = buffer[end + 1:]
                host = next(waiting)
                code = int(status) if status.isdigit() else 255
                _settle(futures[host], host, code, text)
                if code == 0:
                    answers[host] = text
        await process.wait()
    finally:
        for host in waiting:
            if not futures[host].done():
                futures[host].set_exception(SshConfigError(host, "ssh -G gave no answer"))


def _settle(future: asyncio.Future[HostSettings], host: str, status: int, text: str) -> None:
    if future.done():
        return
    if status == 0:
        future.set_result(parse_ssh_g(host.rpartition("@")[2], text))
    else:
        detail = text.replace("\r", "").strip() or f"ssh -G exited {status}"
        future.set_exception(SshConfigError(host, detail))
