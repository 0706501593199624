"""`clusterprep wandb`: log every node into Weights & Biases, prove it, log out. Never prints.

The key travels only inside a probe's stdin (`probes/netrc_login.py`), never in a command line
or an environment, and lands where `wandb login` puts it: an entry for the W&B host in the
node's `$NETRC` or `~/.netrc`, mode 0600. Every message that comes back from a node is
scrubbed of the key before anyone sees it. `verify` asks wandb itself, inside the env, whether
it finds the login, and logs one metric (`probes/wandb_check.py`).
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from clusterprep import suggest
from clusterprep.errors import ClusterprepError, NodeError
from clusterprep.fleet import Fleet, ProbeResult
from clusterprep.inventory import Node

# The server whose answer from the head decides `verify`'s mode when none was given: W&B
# cloud, which every wandb reaches (0.31's api.forge.coreweave.com fronts the same service).
CLOUD_URL = "https://api.wandb.ai"
DEFAULT_PROJECT = "open-sora-test"  # the tutorial's
NETRC_FAILED = "netrc"  # NodeError kind: the node's netrc could not be read or written
HIDDEN = "<key hidden>"


class ApiKeyError(ClusterprepError):
    """No usable W&B API key. The message says why and where a key may come from; it never
    contains the key."""


class WandbSettingsError(ClusterprepError):
    """A `[wandb]` table or W&B setting that cannot work; names its source."""

    def __init__(self, source: str, message: str) -> None:
        self.source = source
        super().__init__(f"{source}: {message}")


class WandbUnreachable(ClusterprepError):
    """`--online` was asked for, but the W&B host does not answer from this machine."""


class ApiKey:
    """A W&B API key that does not show itself: repr, str and f-strings print a placeholder."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The key itself, for the one place that needs it: a probe's stdin."""
        return self._value

    def scrub(self, text: str) -> str:
        """`text` with every occurrence of the key replaced by a placeholder."""
        return text.replace(self._value, HIDDEN) if self._value else text

    def __repr__(self) -> str:
        return f"ApiKey({HIDDEN})"

    __str__ = __repr__


def api_key_problem(key: str) -> str | None:
    """Why `key` is not a W&B API key, or None; the same rule as wandb's own `check_api_key`.

    Accepted: classic 40-character keys; keys with a prefix before the first dash (on-prem
    and newer keys, `local-<secret>`) whose secret has 40+ word characters; W&B's internal
    JWTs (three dot-separated base64url parts). The message never quotes the key.
    """
    if not key:
        return "the API key is empty"
    if re.fullmatch(r"[\w-]+\.[\w-]+\.[\w-]+", key):
        return None
    if any(c.isspace() for c in key):
        return "the API key contains whitespace; it must be a single word"
    secret = key.split("-", 1)[-1]
    if not re.fullmatch(r"[\w-]+", secret):
        return ("the API key may only contain letters A-Z, digits, underscores and a "
                "prefix before a dash")
    if len(secret) < 40:
        return f"the API key must have 40 or more characters, has {len(secret)}"
    return None


KEY_SOURCES = ("the WANDB_API_KEY environment variable, --key-file FILE, or the hidden prompt "
               "on a terminal")


def read_api_key(
    key_file: str | None,
    environ: Mapping[str, str],
    prompt: Callable[[], str] | None,
) -> tuple[ApiKey, str]:
    """The key and where it came from: `--key-file`, else `WANDB_API_KEY`, else `prompt`.

    `prompt` is None when stdin is not a terminal. Raises ApiKeyError for a missing source or
    a malformed key, before any node is touched.
    """
    if key_file is not None:
        source = f"key file {key_file}"
        try:
            text = Path(key_file).read_text(encoding="utf-8", errors="strict")
        except (OSError, UnicodeDecodeError) as e:
            reason = e.strerror if isinstance(e, OSError) and e.strerror else "not UTF-8 text"
            raise ApiKeyError(f"cannot read the key file {key_file}: {reason}") from None
        value = text.strip()
    elif environ.get("WANDB_API_KEY", "").strip():
        source = "WANDB_API_KEY"
        value = environ["WANDB_API_KEY"].strip()
    elif prompt is not None:
        source = "prompt"
        value = prompt().strip()
    else:
        raise ApiKeyError(
            f"no W&B API key: give it through {KEY_SOURCES} (never on the command line); "
            "stdin is not a terminal, so there is no prompt")
    problem = api_key_problem(value)
    if problem is not None:
        raise ApiKeyError(f"{problem} (from {source}); nothing was changed on any node. "
                          "Copy the key again from https://wandb.ai/authorize")
    return ApiKey(value), source


@dataclass(frozen=True)
class WandbSettings:
    """The recipe's `[wandb]` table: the project of the check run and the W&B server.

    `host` is the server's URL (`https://wandb.example.com`) or bare host name; None means
    `$WANDB_BASE_URL`, else the server each node's wandb would pick itself (its settings file,
    else its version's default: probes/_wandb_server.py).
    """

    project: str = DEFAULT_PROJECT
    host: str | None = None

    @classmethod
    def from_table(cls, table: Mapping[str, Any], source: str) -> WandbSettings:
        """Build from a parsed `[wandb]` TOML table; errors name the key and `source`."""
        known = {"project", "host"}
        for key in table:
            if key not in known:
                raise WandbSettingsError(
                    source, f"[wandb] has no setting {key!r} (known: {', '.join(sorted(known))})")
        for key in known & set(table):
            if not isinstance(table[key], str) or not table[key].strip():
                raise WandbSettingsError(source, f"[wandb] {key} must be a non-empty string")
        settings = cls(project=table.get("project", DEFAULT_PROJECT), host=table.get("host"))
        if settings.host is not None:
            base_url(settings.host, f"{source}: [wandb] host")
        return settings

    def resolve_base_url(self, environ: Mapping[str, str]) -> str | None:
        """The server URL given to clusterprep: `host`, else `$WANDB_BASE_URL`; None: each
        node's wandb picks its own."""
        if self.host is not None:
            return base_url(self.host, "[wandb] host")
        if environ.get("WANDB_BASE_URL", "").strip():
            return base_url(environ["WANDB_BASE_URL"], "WANDB_BASE_URL")
        return None


def base_url(text: str, source: str) -> str:
    """Normalize a W&B server address to a URL; a bare host name means https."""
    text = text.strip().rstrip("/")
    if "://" not in text:
        text = "https://" + text
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not re.fullmatch(r"[\w.\-:\[\]]+",
                                                                 parts.netloc or "-/"):
        raise WandbSettingsError(source, f"{text!r} is not a W&B server URL "
                                 "(like https://api.wandb.ai)")
    return text


# -- login and logout ----------------------------------------------------------------------


@dataclass
class NetrcChange:
    """What happened to one node's netrc.

    `status`: "unchanged", "added", "replaced", "removed" or "absent" (nothing to remove);
    None when the node failed (`error` says why).
    """

    node: str
    status: str | None
    path: str | None = None
    mode_fixed: bool = False
    error: NodeError | None = None
    machine: str | None = None        # the netrc machine the node's wandb reads
    server: str | None = None         # the W&B server it will use, and what said so
    server_source: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class NetrcReport:
    """`wandb login` or `wandb logout` on every node."""

    action: str
    changes: list[NetrcChange]
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        return not self.interrupted and all(c.ok for c in self.changes)

    @property
    def machines(self) -> list[str]:
        """The netrc machines written or removed, in node order, each once."""
        return list(dict.fromkeys(c.machine for c in self.changes if c.machine))


async def login(fleet: Fleet, key: ApiKey, url: str | None, python: str | None = None,
                timeout: float | None = None) -> NetrcReport:
    """Write the key into every node's netrc entry for the W&B server that node's wandb will
    use (`url`, else its own choice; `python`: the env whose wandb decides), where it differs."""
    payload = {"action": "login", "explicit": url, "python": python, "key": key.reveal()}
    results, interrupted = await fleet.probe("netrc_login", payload, timeout=timeout)
    return NetrcReport("login", [_change(r, key) for r in results], interrupted)


async def logout(fleet: Fleet, url: str | None, python: str | None = None,
                 timeout: float | None = None) -> NetrcReport:
    """Remove the entry for that server from every node's netrc; every other entry stays."""
    payload = {"action": "logout", "explicit": url, "python": python}
    results, interrupted = await fleet.probe("netrc_login", payload, timeout=timeout)
    return NetrcReport("logout", [_change(r, None) for r in results], interrupted)


def _scrubbed(error: NodeError, key: ApiKey | None) -> NodeError:
    if key is None:
        return error
    return NodeError(error.kind, key.scrub(error.message))


def _change(result: ProbeResult, key: ApiKey | None) -> NetrcChange:
    if result.error is not None or result.data is None:
        error = result.error or NodeError(NETRC_FAILED, "no answer")
        return NetrcChange(result.node, None, error=_scrubbed(error, key))
    data = result.data
    if not data.get("ok"):
        problem = data.get("error") or {}
        message = f"{problem.get('type', 'error')}: {problem.get('message', '')}"
        return NetrcChange(result.node, None, data.get("path"),
                           error=_scrubbed(NodeError(NETRC_FAILED, message), key))
    return NetrcChange(result.node, data["status"], data.get("path"),
                       bool(data.get("mode_fixed")), machine=data.get("machine"),
                       server=data.get("server"), server_source=data.get("server_source"))


# -- verify --------------------------------------------------------------------------------


def host_unreachable_reason(url: str, timeout: float = 3.0) -> str | None:
    """Why the W&B server does not answer a TCP connection from here, or None if it does."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or "", port), timeout=timeout):
            return None
    except socket.gaierror as e:
        return f"{parts.hostname} does not resolve ({e.strerror})"
    except TimeoutError:
        return f"{parts.hostname}:{port} did not answer within {timeout:g} s"
    except OSError as e:
        return f"{parts.hostname}:{port}: {e.strerror or e}"


def choose_mode(requested: str | None, url: str, timeout: float = 3.0) -> tuple[str, str | None]:
    """The run mode for `verify` and a note for the user when it was picked for them.

    None -> "online" when the W&B host answers from here, else "offline" with a note.
    "online" -> raises WandbUnreachable when the host does not answer.
    """
    if requested == "offline":
        return "offline", None
    reason = host_unreachable_reason(url, timeout)
    if reason is None:
        return "online", None
    if requested == "online":
        raise WandbUnreachable(
            f"--online: the W&B server {url} does not answer from this machine ({reason}); "
            "use --offline to prove that every node can log without it")
    return "offline", (f"the W&B server {url} does not answer from this machine ({reason}): "
                       "checking in offline mode (WANDB_MODE=offline); use --online to insist")


@dataclass
class WandbCheck:
    """`wandb verify` on one node. `problems` lists what is wrong in the user's words."""

    node: str
    python: str | None = None
    wandb_version: str | None = None
    server: str | None = None         # the W&B server the node's wandb will use
    server_source: str | None = None  # what said so (a settings file, WANDB_BASE_URL, ...)
    login_source: str | None = None
    netrc_path: str | None = None
    netrc_mode: str | None = None
    run_dir: str | None = None
    run_url: str | None = None
    problems: list[str] = field(default_factory=list)
    error: NodeError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and not self.problems


@dataclass
class VerifyReport:
    """`wandb verify` on every node."""

    url: str | None  # the server given to clusterprep; None: each node's wandb picks its own
    project: str
    mode: str
    note: str | None
    checks: list[WandbCheck]
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        return not self.interrupted and all(c.ok for c in self.checks)


PYTHON_NOT_FOUND = 127


async def verify(
    fleet: Fleet,
    *,
    url: str | None,
    project: str,
    mode: str,
    python: str = "python3",
    note: str | None = None,
    timeout: float | None = None,
) -> VerifyReport:
    """On every node, under `python`: wandb imports, finds the login, logs one metric in a
    run named after the node (mode "offline" or "online")."""

    def payload(node: Node) -> dict[str, str | None]:
        return {"base_url": url, "project": project, "name": node.name, "mode": mode}

    answers, interrupted = await fleet.probe("wandb_check", payload, python=python,
                                             isolated=False, timeout=timeout)
    checks = [_check(node, answer, python)
              for node, answer in zip(fleet.inventory.nodes, answers)]
    return VerifyReport(url, project, mode, note, checks, interrupted)


def _check(node: Node, answer: ProbeResult, python: str) -> WandbCheck:
    check = WandbCheck(node.name)
    if answer.error is not None:
        if answer.command.exit_code == PYTHON_NOT_FOUND:
            check.problems.append(f"{python} not found on the node")
        else:
            check.error = answer.error
        return check
    data = answer.data or {}
    if data.get("error"):
        check.problems.append(f"the check failed: {data['error']}")
        return check
    check.python = data.get("python")
    check.wandb_version = data.get("wandb")
    server = data.get("server") or {}
    check.server, check.server_source = server.get("url"), server.get("source")
    netrc = data.get("netrc") or {}
    check.netrc_path = netrc.get("path")
    check.netrc_mode = netrc.get("mode")
    if check.wandb_version is None:
        check.problems.append(
            f"wandb is not installed for {check.python or python} ({data.get('import_error')})")
        return check
    login_found = data.get("login") or {}
    if login_found.get("found"):
        check.login_source = login_found.get("source")
    if login_found.get("problem"):
        check.problems.append(f"login unusable: {login_found['problem']}")
    elif not login_found.get("found"):
        check.problems.append("wandb finds no login: run "
                              f"`{suggest.command('wandb', 'login')}`")
    if check.login_source == check.netrc_path and check.netrc_mode not in (None, "0600"):
        check.problems.append(f"{check.netrc_path} has mode {check.netrc_mode}, not 0600: "
                              "others on the node can read the key")
    run = data.get("run")
    if run is not None:
        if run.get("ok"):
            check.run_dir, check.run_url = run.get("dir"), run.get("url")
        else:
            check.problems.append(f"wandb.init/log failed: {run.get('error')}")
    return check
