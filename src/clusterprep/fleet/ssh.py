"""Reaching a node over SSH with asyncssh, configured by OpenSSH's own resolution (`ssh -G`).

One `SshConnector` serves every node of an invocation: it loads keys and known_hosts once,
caps simultaneous connection attempts (sshd drops bursts: MaxStartups), shares one connection
per bastion, and learns new host keys (accept-new). Each `SshTransport` holds one persistent
connection to its node, reused by every command of the invocation.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import warnings
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

with warnings.catch_warnings():
    # asyncssh still names DSA keys in its type hints, which cryptography (43+) answers with
    # one CryptographyDeprecationWarning per mention, at import: not ours to print, and the
    # first thing every user saw. Silenced here only, for this category from asyncssh only.
    from cryptography.utils import CryptographyDeprecationWarning

    warnings.filterwarnings("ignore", category=CryptographyDeprecationWarning,
                            module=r"asyncssh(\.|$)")
    import asyncssh

from clusterprep.errors import (
    AUTH,
    DISCONNECTED,
    DNS,
    HOST_KEY,
    REFUSED,
    TIMEOUT,
    UNREACHABLE,
    NodeError,
    NodeUnreachable,
)
from clusterprep.fleet import sshconfig
from clusterprep.fleet.options import KEEPALIVES_UNANSWERED, SshOptions
from clusterprep.fleet.sshconfig import HostSettings
from clusterprep.fleet.transport import (
    CommandResult,
    OutputCallback,
    Transport,
    collect,
    feed,
    hung,
    kill_tree_command,
    startup_failure,
)
from clusterprep.inventory import Node

# curve25519 first: OpenSSH 9.x prefers sntrup761x25519, which costs several times the CPU per
# handshake (field notes); asyncssh's own list follows for servers without curve25519.
KEX_ALGORITHMS = ["curve25519-sha256", "curve25519-sha256@libssh.org"] + [
    alg.decode() for alg in asyncssh.kex.get_default_kex_algs()
    if not alg.startswith(b"gss-") and not alg.startswith(b"curve25519")
]

# AES-GCM first: asyncssh's chacha20-poly1305 builds two cipher contexts in Python for every
# packet; AES-GCM is one call into OpenSSL (AES-NI), the same protection for less head CPU.
ENCRYPTION_ALGORITHMS = ["aes128-gcm@openssh.com", "aes256-gcm@openssh.com"] + [
    alg.decode() for alg in asyncssh.encryption.get_default_encryption_algs()
    if not alg.endswith(b"-gcm@openssh.com")
]

def host_key_policy(settings: HostSettings, override: str | None) -> str:
    """`--host-keys`, else the config's StrictHostKeyChecking; OpenSSH's default `ask` (we never
    prompt) and an unset option both mean accept-new."""
    if override:
        return override
    value = settings.strict_host_key_checking
    if value in ("yes", "true"):
        return "strict"
    if value in ("no", "false", "off"):
        return "off"
    return "accept-new"


def known_hosts_name(settings: HostSettings) -> str:
    """How OpenSSH names this host in known_hosts: `host` or `[host]:port`."""
    host = settings.host_key_alias or settings.hostname
    return host if settings.port == sshconfig.DEFAULT_PORT else f"[{host}]:{settings.port}"


class SshConnector:
    """What every SSH connection of one invocation shares."""

    def __init__(self, options: SshOptions) -> None:
        self.options = options
        self._attempts = asyncio.Semaphore(max(1, options.fanout))
        self._settings: dict[str, asyncio.Future[HostSettings]] = {}
        self._resolving: list[asyncio.Task[None]] = []  # the `ssh -G` work under way
        self._keys: dict[str, list[asyncssh.SSHKeyPair]] = {}
        self._agent_keys: list[asyncssh.SSHKeyPair] | None = None
        self._known_hosts: dict[tuple[str, ...], asyncssh.SSHKnownHosts] = {}
        self._bastions: dict[str, asyncio.Task[asyncssh.SSHClientConnection]] = {}
        # Host names are looked up here, not inside asyncssh's connect: there, lookups queue
        # for the loop's few default threads, inside the connect timeout, and a slow resolver
        # made unresolvable names look like nodes that do not answer.
        self._resolver = ThreadPoolExecutor(max_workers=min(64, max(1, options.fanout)),
                                            thread_name_prefix="clusterprep-dns")

    def prefetch(self, hosts: list[str]) -> None:
        """Start resolving many hosts at once, ahead of their `resolve` calls."""
        missing = [host for host in dict.fromkeys(hosts) if host not in self._settings]
        if missing:
            futures, task = sshconfig.resolve_many(missing, self.options.config_file)
            self._settings.update(futures)
            if task is not None:
                self._resolving.append(task)

    async def resolve(self, host: str) -> HostSettings:
        """The host's settings as `ssh -G` gives them. Raises SshConfigError."""
        self.prefetch([host])
        return await asyncio.shield(self._settings[host])

    async def open(self, settings: HostSettings, label: str,
                   client: _Client | None = None) -> asyncssh.SSHClientConnection:
        """Open a connection to a resolved host, or raise NodeUnreachable naming the cause.

        `client` hears when the connection is lost later (the reason a node's commands end).
        """
        tunnel = None
        if settings.proxy_jump:
            tunnel = await self._bastion(settings.proxy_jump, label)
        policy = host_key_policy(settings, self.options.host_keys)
        known = self._load_known_hosts(settings) if policy != "off" else None
        client = client or _Client()
        client.learning = policy == "accept-new"
        client.known = known
        timeout = settings.connect_timeout or self.options.connect_timeout
        addresses = [settings.hostname]
        if tunnel is None and settings.proxy_command is None:
            addresses = await self._lookup(settings)
        try:
            for attempt, address in enumerate(addresses, 1):
                try:
                    async with self._attempts:
                        return await asyncio.wait_for(
                            self._connect(settings, address, tunnel, known, client, timeout),
                            timeout)
                except (OSError, asyncio.TimeoutError):
                    if attempt == len(addresses):  # as ssh does, the next address of the host
                        raise
            raise AssertionError("unreachable: the last address re-raises")
        except Exception as e:  # classified below: every failure must name its cause
            raise NodeUnreachable(classify(e, settings, timeout)) from e
        finally:
            if client.learned is not None:
                _append_known_host(settings, client.learned)

    async def _connect(self, settings: HostSettings, address: str,
                       tunnel: asyncssh.SSHClientConnection | None,
                       known: asyncssh.SSHKnownHosts | None, client: _Client,
                       timeout: float) -> asyncssh.SSHClientConnection:
        return await asyncssh.connect(
            address,
            settings.port,
            tunnel=tunnel,
            proxy_command=_proxy_command(settings),
            username=settings.user or None,
            client_keys=await self._client_keys(settings),
            agent_path=None,
            known_hosts=known,
            # Host keys are known by name: the name we looked up, not the address it gave.
            host_key_alias=settings.host_key_alias or settings.hostname,
            client_factory=lambda: client,
            config=None,
            kex_algs=KEX_ALGORITHMS,
            encryption_algs=ENCRYPTION_ALGORITHMS,
            gss_auth=False,
            gss_kex=False,
            host_based_auth=False,
            password_auth=False,
            kbdint_auth=False,
            keepalive_interval=self.options.hung_after / (KEEPALIVES_UNANSWERED + 1),
            keepalive_count_max=KEEPALIVES_UNANSWERED,
            connect_timeout=timeout,
        )

    async def _lookup(self, settings: HostSettings) -> list[str]:
        """The host's addresses, in the resolver's order. Raises NodeUnreachable (dns)."""
        loop = asyncio.get_running_loop()
        try:
            found = await loop.run_in_executor(
                self._resolver, lambda: socket.getaddrinfo(
                    settings.hostname, settings.port, type=socket.SOCK_STREAM))
        except socket.gaierror as e:
            raise NodeUnreachable(NodeError(
                DNS, f"cannot resolve host name {settings.hostname!r}: {e.strerror}")) from e
        except UnicodeError as e:
            raise NodeUnreachable(NodeError(
                DNS, f"cannot resolve host name {settings.hostname!r}: {e}")) from e
        return list(dict.fromkeys(str(info[4][0]) for info in found))

    async def _bastion(self, jump: str, label: str) -> asyncssh.SSHClientConnection:
        """One shared connection per ProxyJump chain, opened on first use."""
        if jump not in self._bastions:
            self._bastions[jump] = asyncio.ensure_future(self._open_jump_chain(jump))
        try:
            return await asyncio.shield(self._bastions[jump])
        except NodeUnreachable as e:
            raise NodeUnreachable(
                NodeError(e.error.kind, f"via bastion {jump}: {e.error.message}")
            ) from e

    async def _open_jump_chain(self, jump: str) -> asyncssh.SSHClientConnection:
        *earlier, last = [hop.strip() for hop in jump.split(",")]
        destination, port = _split_jump_hop(last)
        settings = await self.resolve(destination)
        if port is not None:
            settings = replace(settings, port=port)
        if earlier:  # the hops before the last one lead to it, whatever its own config says
            settings = replace(settings, proxy_jump=",".join(earlier), proxy_command=None)
        return await self.open(settings, last)

    async def _client_keys(self, settings: HostSettings) -> list[asyncssh.SSHKeyPair]:
        keys: list[asyncssh.SSHKeyPair] = []
        for path in settings.identity_files:
            if path not in self._keys:
                self._keys[path] = _load_keypairs(path)
            keys.extend(self._keys[path])
        if not settings.identities_only or not keys:
            keys.extend(await self._agent())
        return keys

    async def _agent(self) -> list[asyncssh.SSHKeyPair]:
        if self._agent_keys is None:
            self._agent_keys = []
            if os.environ.get("SSH_AUTH_SOCK"):
                try:
                    async with asyncssh.connect_agent() as agent:
                        self._agent_keys = list(await agent.get_keys())
                except (OSError, asyncssh.Error):
                    pass  # an unusable agent is no agent
        return self._agent_keys

    def _load_known_hosts(self, settings: HostSettings) -> asyncssh.SSHKnownHosts:
        files = tuple(settings.user_known_hosts + settings.global_known_hosts)
        if files not in self._known_hosts:
            text = ""
            for path in files:
                try:
                    with open(path, encoding="utf-8", errors="replace") as f:
                        text += f.read() + "\n"
                except OSError:
                    continue
            self._known_hosts[files] = asyncssh.import_known_hosts(text)
        return self._known_hosts[files]

    async def close(self) -> None:
        self._resolver.shutdown(wait=False, cancel_futures=True)
        for resolving in self._resolving:
            resolving.cancel()
        for task in self._bastions.values():
            if task.done() and not task.cancelled() and task.exception() is None:
                task.result().close()
            else:
                task.cancel()


class _Client(asyncssh.SSHClient):
    """Hears what asyncssh tells a client: whether to trust an unknown host key (accept-new),
    and why the connection was lost, which every later command on it reports.

    Under accept-new, asyncssh asks only for a key that known_hosts does not already trust, so
    a host that is listed with another key is refused (it changed: possibly an attack, as
    OpenSSH says).
    """

    def __init__(self) -> None:
        self.learning = False
        self.known: asyncssh.SSHKnownHosts | None = None
        self.learned: asyncssh.SSHKey | None = None
        self.lost: BaseException | None = None

    def validate_host_public_key(
        self, host: str, addr: str, port: int, key: asyncssh.SSHKey
    ) -> bool:
        if not self.learning or self.known is None:
            return False
        listed = self.known.match(host, addr, port if port != sshconfig.DEFAULT_PORT else None)
        if listed[0] or listed[1]:  # trusted host keys or CA keys exist for this host
            return False
        self.learned = key
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = exc or ConnectionResetError("the connection was closed")


def _append_known_host(settings: HostSettings, key: asyncssh.SSHKey) -> None:
    if not settings.user_known_hosts:
        return
    path = settings.user_known_hosts[0]
    os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
    line = f"{known_hosts_name(settings)} {key.export_public_key('openssh').decode().strip()}\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def _load_keypairs(path: str) -> list[asyncssh.SSHKeyPair]:
    if not os.path.exists(path):
        return []
    try:
        return list(asyncssh.load_keypairs([path]))
    except (OSError, asyncssh.KeyImportError, ValueError):
        return []  # unreadable or passphrase-protected: the agent may hold it


def _proxy_command(settings: HostSettings) -> str | None:
    if not settings.proxy_command:
        return None
    tokens = {"%h": settings.hostname, "%p": str(settings.port), "%r": settings.user,
              "%n": settings.alias, "%%": "%"}
    command = settings.proxy_command
    for token, value in tokens.items():
        command = command.replace(token, value)
    return command


def _split_jump_hop(hop: str) -> tuple[str, int | None]:
    """`user@host:port` -> (`user@host`, port)."""
    user, at, rest = hop.rpartition("@")
    host, port = rest, None
    if rest.startswith("["):
        host, _, tail = rest[1:].partition("]")
        port = int(tail[1:]) if tail.startswith(":") else None
    elif rest.count(":") == 1:
        host, port_text = rest.split(":")
        port = int(port_text)
    return f"{user}{at}{host}", port


def classify(error: BaseException, settings: HostSettings, timeout: float) -> NodeError:
    """Name the cause of a failed connection the way a user would look for it."""
    where = f"{settings.hostname}:{settings.port}"
    if isinstance(error, NodeUnreachable):
        return error.error
    if isinstance(error, socket.gaierror):
        return NodeError(DNS, f"cannot resolve host name {settings.hostname!r}: {error.strerror}")
    if isinstance(error, (asyncio.TimeoutError, TimeoutError)):
        return NodeError(TIMEOUT, f"no answer from {where} within {timeout:g} s")
    if isinstance(error, ConnectionRefusedError):
        return NodeError(REFUSED, f"connection refused by {where} (is sshd running?)")
    if isinstance(error, asyncssh.PermissionDenied):
        return NodeError(AUTH, f"authentication failed for user {settings.user!r} at {where}: "
                               "no key was accepted (check authorized_keys and IdentityFile)")
    if isinstance(error, asyncssh.HostKeyNotVerifiable):
        return NodeError(HOST_KEY, f"host key of {known_hosts_name(settings)} is not trusted: "
                                   f"{error.reason}. If the node was reinstalled, remove its old "
                                   "key with `ssh-keygen -R`; otherwise this may be an attack")
    if isinstance(error, asyncssh.ChannelOpenError):
        return NodeError(UNREACHABLE, f"the bastion could not reach {where}: {error.reason}")
    if isinstance(error, OSError):
        if error.errno == errno.ECONNREFUSED:
            return NodeError(REFUSED, f"connection refused by {where} (is sshd running?)")
        if error.errno == errno.ETIMEDOUT:
            return NodeError(TIMEOUT, f"no answer from {where} within {timeout:g} s")
        return NodeError(UNREACHABLE, f"cannot connect to {where}: {error.strerror or error}")
    if isinstance(error, asyncssh.Error):
        return NodeError(UNREACHABLE, f"SSH failure with {where}: {error.reason}")
    return NodeError(UNREACHABLE, f"cannot connect to {where}: {error!r}")


# Every command first reports its session id (its shell's PID, a session leader under sshd) on
# stderr, so that a timeout or Ctrl-C can end the command and all its children on the node.
_SESSION_MARK = b"clusterprep-session:"
_SESSION_REPORT = f"printf '{_SESSION_MARK.decode()}%s\\n' \"$$\" >&2; "


class _SessionReportReader:
    """Reads a command's stderr, removing the session report line that precedes it (lines a
    node's shell startup files printed before it are kept)."""

    def __init__(self, reader: asyncssh.SSHReader[bytes]) -> None:
        self._reader = reader
        self._head: bytes | None = None  # None until the report has been looked for
        self.session: int | None = None

    async def read(self, n: int) -> bytes:
        if self._head is None:
            head = b""
            while (chunk := await self._reader.read(n)):
                head += chunk
                found = self._take_report(head)
                if found is not None:
                    head = found
                    break
            self._head = b""
            if head:
                return head
        return await self._reader.read(n)

    def _take_report(self, head: bytes) -> bytes | None:
        """`head` without its session report line, once that line has arrived whole."""
        if head.startswith(_SESSION_MARK):
            start = 0
        elif (after := head.find(b"\n" + _SESSION_MARK)) >= 0:
            start = after + 1
        else:
            return None
        end = head.find(b"\n", start)
        if end < 0:
            return None
        value = head[start + len(_SESSION_MARK):end]
        if not value.isdigit():
            return None
        self.session = int(value)
        return head[:start] + head[end + 1:]


class SshTransport(Transport):
    """One node over one persistent SSH connection."""

    def __init__(self, node: Node, settings: HostSettings, connector: SshConnector) -> None:
        super().__init__(node)
        self.settings = settings
        self._connector = connector
        self._connection: asyncssh.SSHClientConnection | None = None
        self._client = _Client()

    @property
    def host_address(self) -> str:
        return self.settings.hostname

    async def connect(self) -> None:
        if self._connection is None:
            self._connection = await self._connector.open(self.settings, self.node.name,
                                                          self._client)

    def lost(self, error: BaseException) -> NodeError | None:
        """A lost connection, or a node that stopped answering, as the node's error."""
        if not isinstance(error, (asyncssh.Error, OSError, EOFError)):
            return None
        cause = self._client.lost or error
        reason = getattr(cause, "reason", None) or str(cause) or type(cause).__name__
        if "keepalive" in reason:
            return hung(self.settings.hostname, "no bytes and no keepalive reply",
                        self._connector.options.hung_after)
        return NodeError(DISCONNECTED, f"connection to {self.settings.hostname} lost while the "
                                       f"command ran: {reason}")

    async def run(
        self,
        command: str,
        *,
        stdin: bytes | None = None,
        timeout: float | None = None,
        on_output: OutputCallback | None = None,
        stdin_stream: AsyncIterator[bytes] | None = None,
    ) -> CommandResult:
        await self.connect()
        assert self._connection is not None
        if self._client.lost is not None:  # an earlier command saw it go: fail at once
            error = self.lost(self._client.lost) or NodeError(DISCONNECTED, "connection lost")
            return CommandResult(self.node.name, None, error=NodeError(
                error.kind, f"{error.message} (earlier in this run)"))
        try:
            process = await self._connection.create_process(
                _SESSION_REPORT + command, encoding=None)
        except (asyncssh.Error, OSError) as e:
            error = self.lost(e)
            assert error is not None
            return CommandResult(self.node.name, None, error=error)
        feeding = None
        if stdin_stream is not None:
            feeding = asyncio.ensure_future(feed(process.stdin, stdin_stream,
                                                 process.stdin.write_eof, self.lost))
        else:
            try:
                if stdin:
                    process.stdin.write(stdin)
                process.stdin.write_eof()
            except (asyncssh.Error, OSError):
                pass  # the command ended before its input could be sent: its result says why
        stderr = _SessionReportReader(process.stderr)

        async def wait() -> int | None:
            await process.wait_closed()
            return process.returncode

        async def kill() -> None:
            # Closing an SSH channel without a pty kills nothing on the node: end the
            # command's whole session there (sshd starts each command as a session leader),
            # and what it started in sessions of their own.
            if stderr.session is not None and self._connection is not None:
                await self._connection.run(kill_tree_command(stderr.session), check=False)
            process.close()

        result = await collect(
            self.node.name, process.stdout, stderr, wait(), kill, timeout, on_output, self.lost
        )
        if feeding is not None:
            feeding.cancel()
        if result.error is None and stderr.session is None:
            result.error = startup_failure(result)
        return result

    async def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
