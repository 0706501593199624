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
    server_alive_interval: float

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
        server_alive_interval=float(one("serveraliveinterval", "0")),
    )


def ssh_available() -> bool:
    return shutil.which("ssh") is not None


async def resolve(host: str, config_file: str | None = None) -> HostSettings:
    """Run `ssh -G [-F FILE] HOST` (HOST may be `user@host`).

    Raises:
        SshConfigError: ssh is missing, or rejects the config (its message names file and line).
    """
    if not ssh_available():
        raise SshConfigError(host, "the OpenSSH client `ssh` is not installed on this machine")
    argv = ["ssh", "-G"] + (["-F", config_file] if config_file else []) + ["--", host]
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    if process.returncode != 0:
        detail = err.decode(errors="replace").strip() or f"ssh -G exited {process.returncode}"
        raise SshConfigError(host, detail)
    return parse_ssh_g(host.rpartition("@")[2], out.decode(errors="replace"))
