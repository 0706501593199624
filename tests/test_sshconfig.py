"""Host settings come from OpenSSH itself (`ssh -G`), and are cached only while the config
files OpenSSH reads are unchanged."""

from __future__ import annotations

import asyncio
import os

import pytest

from clusterprep.errors import SshConfigError
from clusterprep.fleet import sshcache
from clusterprep.fleet.sshconfig import resolve_many


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def resolve(hosts: list[str], config) -> dict[str, object]:
    async def main() -> dict[str, object]:
        futures, task = resolve_many(hosts, str(config))
        answers = {}
        for host, future in futures.items():
            try:
                answers[host] = (await future).hostname
            except SshConfigError as e:
                answers[host] = e
        if task is not None:
            await task
        return answers

    return asyncio.run(main())


def touch_later(path) -> None:
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))


def test_answers_follow_every_edit_of_the_config_and_its_includes(tmp_path):
    included = tmp_path / "conf.d" / "gpu.conf"
    included.parent.mkdir()
    included.write_text("Host gpu1\n  HostName 10.0.0.1\n")
    config = tmp_path / "config"
    config.write_text(f"Include {tmp_path}/conf.d/*.conf\nHost head\n  HostName 10.0.0.100\n")

    assert resolve(["head", "gpu1", "alice@other"], config) == {
        "head": "10.0.0.100", "gpu1": "10.0.0.1", "alice@other": "other"}
    assert sshcache.cache_file().exists()
    assert oct(sshcache.cache_file().stat().st_mode & 0o777) == "0o600"
    assert resolve(["head", "gpu1"], config) == {"head": "10.0.0.100", "gpu1": "10.0.0.1"}

    config.write_text(f"Include {tmp_path}/conf.d/*.conf\nHost head\n  HostName 10.0.0.200\n")
    touch_later(config)
    assert resolve(["head"], config) == {"head": "10.0.0.200"}

    included.write_text("Host gpu1\n  HostName 10.0.0.9\n")
    touch_later(included)
    assert resolve(["gpu1"], config) == {"gpu1": "10.0.0.9"}

    (tmp_path / "conf.d" / "more.conf").write_text("Host gpu2\n  HostName 10.0.0.2\n")
    assert resolve(["gpu2"], config) == {"gpu2": "10.0.0.2"}


def test_a_config_that_runs_commands_or_reads_the_environment_is_never_cached(tmp_path):
    config = tmp_path / "config"
    config.write_text("Match host gpu* exec \"test -e /tmp/x\"\n  Port 2222\n")
    resolve(["gpu1"], config)
    assert not sshcache.cache_file().exists()
    config.write_text("Host gpu1\n  IdentityFile ${KEYS}/id\n")
    assert sshcache.config_key(str(config)) is None


def test_a_broken_config_names_its_file_and_line_and_is_not_cached(tmp_path):
    config = tmp_path / "config"
    config.write_text("Host *\n  NoSuchOption yes\n")
    answer = resolve(["gpu1"], config)["gpu1"]
    assert isinstance(answer, SshConfigError)
    assert f"{config}: line 2: Bad configuration option" in str(answer)
    assert not sshcache.cache_file().exists()
