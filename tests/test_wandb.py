"""`clusterprep wandb`: every node logged into W&B, proven, and the key never leaks.

W&B's servers cannot be reached from the tests: login and verify --offline are the real thing
(a real netrc on every node, wandb itself reading it, a real offline run), and the online check
is covered only up to "the server does not answer".
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from test_run import cluster_args

SRC = Path(__file__).resolve().parent.parent / "src"
NETRC_PROBE = SRC / "clusterprep" / "probes" / "netrc_login.py"
WHEEL_CACHE = "/tmp/clusterprep-wheel-cache"
ENV_LINK = "/root/wandb-env"  # on each node: the env with wandb, or one without it
PYTHON = ENV_LINK + "/bin/python"
CLOSED_PORT_URL = "http://127.0.0.1:9"  # nothing listens there: "W&B does not answer"


def new_key(prefix: str = "local-") -> str:
    return prefix + secrets.token_hex(24)  # 48 characters after the prefix


def key_file(tmp_path: Path, key: str) -> Path:
    path = tmp_path / "wandb.key"
    path.write_text(key + "\n")
    path.chmod(0o600)
    return path


CLOUD = "https://api.wandb.ai"


def entry(key: str, machine: str = "api.wandb.ai") -> str:
    return f"machine {machine}\n  login user\n  password {key}\n"


@pytest.fixture(scope="session")
def wandb_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv with wandb, outside /root so every node sees it; wheels cached across runs."""
    python = shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin")
    if python is None:
        pytest.skip("no system python3 outside /root to build the nodes' env from")
    env = tmp_path_factory.mktemp("wandb-env") / "env"
    pip = [str(env / "bin" / "python"), "-m", "pip"]
    done = subprocess.run([python, "-m", "venv", str(env)], capture_output=True, text=True)
    if done.returncode != 0:  # Debian without python3-venv: no ensurepip; use our own pip
        shutil.rmtree(env, ignore_errors=True)
        done = subprocess.run([python, "-m", "venv", "--without-pip", str(env)],
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
        pip = [sys.executable, "-m", "pip", "--python", str(env / "bin" / "python")]
    done = subprocess.run(
        [*pip, "install", "-q", "--cache-dir", WHEEL_CACHE, "wandb"],
        capture_output=True, text=True, env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return env


@pytest.fixture(scope="session")
def plain_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An "env" whose python has no wandb: the system python3 under bin/python."""
    env = tmp_path_factory.mktemp("plain-env")
    (env / "bin").mkdir()
    (env / "bin" / "python").symlink_to(shutil.which("python3", path="/usr/bin:/bin"))
    return env


def link_envs(sim, wandb_env: Path, plain_env: Path, without: set[str] = frozenset()) -> None:
    """/root/wandb-env on each node: the wandb env, or the plain one on nodes in `without`."""
    for node in sim.nodes:
        link = node.home / "wandb-env"
        link.unlink(missing_ok=True)
        link.symlink_to(plain_env if node.name in without else wandb_env)


def clean_homes(sim) -> None:
    for node in sim.nodes:
        for name in (".netrc", "wandb-env"):
            (node.home / name).unlink(missing_ok=True)
        shutil.rmtree(node.home / ".cache", ignore_errors=True)
        shutil.rmtree(node.home / ".config", ignore_errors=True)


@pytest.fixture
def sim4(cluster4):
    """The session's 4-node cluster, with every node's W&B traces removed afterwards."""
    clean_homes(cluster4)
    yield cluster4
    clean_homes(cluster4)


class ProcessSampler(threading.Thread):
    """Reads every process's command line and environment on the machine, over and over.

    The nodes' PID namespaces are nested in ours, so their processes are listed here too.
    """

    def __init__(self, secret: str) -> None:
        super().__init__(daemon=True)
        self.secret = secret.encode()
        self.leaks: list[str] = []
        self.seen: set[str] = set()
        self.passes = 0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            for pid in os.listdir("/proc"):
                if not pid.isdigit():
                    continue
                for part in ("cmdline", "environ"):
                    try:
                        with open(f"/proc/{pid}/{part}", "rb") as f:
                            data = f.read()
                    except OSError:
                        continue
                    if self.secret in data:
                        self.leaks.append(f"/proc/{pid}/{part}")
                    if part == "cmdline":
                        self.seen.add(data.replace(b"\0", b" ").decode(errors="replace"))
            self.passes += 1

    def stop(self) -> None:
        self._done.set()
        self.join()


def files_holding(secret: str, *roots: Path) -> list[Path]:
    found = []
    for root in roots:
        for path in root.rglob("*"):
            if path.is_file() and not path.is_symlink():
                try:
                    if secret.encode() in path.read_bytes():
                        found.append(path)
                except OSError:
                    pass
    return found


# -- the key: where it may come from, what it must look like ------------------------------


@pytest.mark.parametrize("bad, reason", [
    ("a" * 39, "must have 40 or more characters, has 39"),
    ("local-" + "b" * 39, "must have 40 or more characters, has 39"),
    ("c" * 20 + " " + "c" * 20, "whitespace"),
    ("d" * 40 + "!", "may only contain"),
])
def test_a_malformed_key_is_refused_before_any_node_is_touched(cli, sim4, tmp_path, bad, reason):
    result = cli("wandb", "login", *cluster_args(sim4), "--key-file", str(key_file(tmp_path, bad)))
    assert result.exit_code == 2
    assert reason in result.stderr and "nothing was changed" in result.stderr
    assert bad not in result.stderr + result.stdout
    assert not any((node.home / ".netrc").exists() for node in sim4.nodes)


def test_every_format_wandb_issues_is_accepted(cli, tmp_path):
    # Checked on this machine alone (no cluster): classic 40 characters, prefixed, a JWT.
    for key in ("f" * 40, "local-" + "e" * 40, new_key("wandb_v1_"), "aa.bb-cc.dd_ee"):
        netrc = tmp_path / f"netrc-{len(key)}"
        result = cli("wandb", "login", "-n", "localhost", "--json",
                     env={"WANDB_API_KEY": key, "NETRC": str(netrc)})
        assert result.exit_code == 0, result.stderr
        assert netrc.read_text() == entry(key)
        assert key not in result.stdout + result.stderr


def test_without_a_key_source_the_error_says_where_a_key_may_come_from(cli, sim4):
    result = cli("wandb", "login", *cluster_args(sim4), env={"WANDB_API_KEY": ""})
    assert result.exit_code == 2
    assert "WANDB_API_KEY" in result.stderr and "--key-file" in result.stderr
    assert "not a terminal" in result.stderr


def test_a_key_on_the_command_line_is_not_accepted(cli, sim4):
    key = new_key()
    result = cli("wandb", "login", *cluster_args(sim4), "--key", key)
    assert result.exit_code == 2
    assert not any((node.home / ".netrc").exists() for node in sim4.nodes)


# -- login ---------------------------------------------------------------------------------


def test_login_never_shows_the_key_to_any_process_and_writes_it_as_wandb_does(
        cli, sim4, tmp_path):
    key = new_key()
    other = "machine github.com login me password gh-token  # a one-line entry\n"
    (sim4.node("node02").home / ".netrc").write_text(other)
    sampler = ProcessSampler(key)
    sampler.start()
    try:
        result = cli("wandb", "login", *cluster_args(sim4), "--json",
                     "--key-file", str(key_file(tmp_path, key)))
    finally:
        sampler.stop()
    assert result.exit_code == 0, result.stderr
    assert sampler.leaks == []
    assert any("-m clusterprep wandb login" in line for line in sampler.seen)  # it did look

    statuses = {n["node"]: n["status"] for n in result.json()["nodes"]}
    assert statuses == {"node01": "added", "node02": "added", "node03": "added",
                        "node04": "added"}
    for node in sim4.nodes:
        netrc = node.home / ".netrc"
        expected = (other if node.name == "node02" else "") + entry(key)
        assert netrc.read_text() == expected
        assert netrc.stat().st_mode & 0o777 == 0o600
    assert key not in result.stdout + result.stderr
    # Only the netrc files hold the key: no history, no log, no temporary file left behind.
    holders = files_holding(key, tmp_path / "home", sim4.root)
    assert sorted(holders) == sorted(node.home / ".netrc" for node in sim4.nodes)


def test_login_again_changes_nothing_and_a_new_key_replaces_only_its_entry(
        cli, sim4, tmp_path):
    key, newer = new_key(), new_key()
    before = "# my netrc\nmachine example.org\n\tlogin alice\n\tpassword 'p w'\n\n"
    for node in sim4.nodes:
        (node.home / ".netrc").write_text(before)
    assert cli("wandb", "login", *cluster_args(sim4), env={"WANDB_API_KEY": key}).exit_code == 0
    first = {node.name: (node.home / ".netrc").stat() for node in sim4.nodes}

    again = cli("wandb", "login", *cluster_args(sim4), "--json", env={"WANDB_API_KEY": key})
    assert again.exit_code == 0
    assert {n["status"] for n in again.json()["nodes"]} == {"unchanged"}
    for node in sim4.nodes:
        now = (node.home / ".netrc").stat()
        assert (now.st_ino, now.st_mtime_ns) == (first[node.name].st_ino,
                                                 first[node.name].st_mtime_ns)

    replaced = cli("wandb", "login", *cluster_args(sim4), "--json",
                   env={"WANDB_API_KEY": newer})
    assert replaced.exit_code == 0
    assert {n["status"] for n in replaced.json()["nodes"]} == {"replaced"}
    for node in sim4.nodes:
        assert (node.home / ".netrc").read_text() == before + entry(newer)
    assert key not in replaced.stdout and newer not in replaced.stdout


def test_logout_removes_only_the_wandb_entry(cli, sim4):
    key = new_key()
    for node in sim4.nodes:
        netrc = node.home / ".netrc"
        netrc.write_text("machine a.example login x password y\n" + entry(key)
                         + "default login anonymous password guest\n")
        netrc.chmod(0o600)
    result = cli("wandb", "logout", *cluster_args(sim4), "--json")
    assert result.exit_code == 0, result.stderr
    assert {n["status"] for n in result.json()["nodes"]} == {"removed"}
    for node in sim4.nodes:
        assert (node.home / ".netrc").read_text() == (
            "machine a.example login x password y\ndefault login anonymous password guest\n")
    again = cli("wandb", "logout", *cluster_args(sim4), "--json")
    assert {n["status"] for n in again.json()["nodes"]} == {"absent"}


def test_a_down_node_and_a_read_only_home_are_named_and_the_key_stays_hidden(
        cli, make_cluster, tmp_path):
    sim = make_cluster(3)
    key = new_key()
    sim.node("node02").stop()
    sim.node("node03").run("mount --bind /root /root && mount -o remount,bind,ro /root",
                           check=True)
    for json_flag in ([], ["--json"]):
        result = cli("wandb", "login", *cluster_args(sim), *json_flag, "--connect-timeout", "3",
                     "--key-file", str(key_file(tmp_path, key)))
        assert result.exit_code == 1
        assert key not in result.stdout + result.stderr
        if not json_flag:
            assert "node02: refused" in result.stdout
            assert "node03: netrc: OSError: [Errno 30] Read-only file system" in result.stdout
        # The lock could not be taken where the home is read-only, and that is said; a node
        # that is down is no lock's business (its failure is the command's to report).
        assert "warning: node03 not locked (cannot lock " in result.stderr, result.stderr
        assert "node02 not locked" not in result.stderr, result.stderr
    nodes = {n["node"]: n for n in result.json()["nodes"]}
    assert nodes["node01"]["status"] == "unchanged"  # the first, plain run added it
    assert nodes["node02"]["error"]["kind"] == "refused"
    assert nodes["node03"]["error"]["kind"] == "netrc"
    assert "Read-only file system" in nodes["node03"]["error"]["message"]
    assert not (sim.node("node03").home / ".netrc").exists()
    assert files_holding(key, tmp_path / "home", sim.root) == [sim.node("node01").home / ".netrc"]


# -- verify --------------------------------------------------------------------------------


def test_verify_offline_logs_a_run_on_every_node_and_names_the_node_without_wandb(
        cli, sim4, tmp_path, wandb_env, plain_env):
    key = new_key()
    link_envs(sim4, wandb_env, plain_env, without={"node04"})
    assert cli("wandb", "login", *cluster_args(sim4), env={"WANDB_API_KEY": key}).exit_code == 0

    result = cli("wandb", "verify", *cluster_args(sim4), "--offline", "--json",
                 "--python", PYTHON, "--project", "clusterprep-test")
    assert result.exit_code == 1, result.stderr
    document = result.json()
    assert document["mode"] == "offline" and document["ok"] is False
    nodes = {n["node"]: n for n in document["nodes"]}
    version = subprocess.run([str(wandb_env / "bin" / "python"), "-c",
                              "import wandb; print(wandb.__version__)"],
                             capture_output=True, text=True).stdout.strip()
    for name in ("node01", "node02", "node03"):
        check = nodes[name]
        assert check["ok"] is True, check
        assert check["wandb"] == version
        assert check["login_source"] == "/root/.netrc" and check["netrc_mode"] == "0600"
        run_dir = sim4.node(name).home / Path(check["run_dir"]).relative_to("/root")
        assert run_dir.name.startswith("offline-run-")
        assert list(run_dir.glob("run-*.wandb")), f"{name}: no run file in {run_dir}"
    assert nodes["node04"]["ok"] is False
    assert "wandb is not installed" in nodes["node04"]["problems"][0]
    assert "No module named 'wandb'" in nodes["node04"]["problems"][0]

    table = cli("wandb", "verify", *cluster_args(sim4), "--offline", "--python", PYTHON)
    assert table.exit_code == 1
    assert "node04: wandb is not installed" in table.stdout
    # The runs on the nodes hold no copy of the key; only the netrc files do.
    holders = files_holding(key, tmp_path / "home", sim4.root)
    assert sorted(holders) == sorted(node.home / ".netrc" for node in sim4.nodes)


def test_verify_names_a_missing_login_and_a_netrc_others_can_read(
        cli, sim4, wandb_env, plain_env):
    link_envs(sim4, wandb_env, plain_env)
    key = new_key()
    assert cli("wandb", "login", *cluster_args(sim4), env={"WANDB_API_KEY": key}).exit_code == 0
    (sim4.node("node02").home / ".netrc").unlink()
    (sim4.node("node03").home / ".netrc").chmod(0o644)
    result = cli("wandb", "verify", *cluster_args(sim4), "--offline", "--json",
                 "--python", PYTHON)
    assert result.exit_code == 1
    nodes = {n["node"]: n for n in result.json()["nodes"]}
    assert nodes["node01"]["ok"] and nodes["node04"]["ok"]
    assert "finds no login" in nodes["node02"]["problems"][0]
    assert "mode 0644" in nodes["node03"]["problems"][0]
    assert key not in result.stdout + result.stderr

    missing = cli("wandb", "verify", *cluster_args(sim4), "--offline", "--json",
                  "--python", "/opt/no-such-env/bin/python")
    assert missing.exit_code == 1
    assert {problem for n in missing.json()["nodes"] for problem in n["problems"]} == {
        "/opt/no-such-env/bin/python not found on the node"}


def test_verify_falls_back_to_offline_when_the_server_does_not_answer(
        cli, sim4, wandb_env, plain_env):
    link_envs(sim4, wandb_env, plain_env)
    server = {"WANDB_BASE_URL": CLOSED_PORT_URL}
    login = cli("wandb", "login", *cluster_args(sim4), "--json",
                env={**server, "WANDB_API_KEY": new_key()})
    assert login.json()["machines"] == ["127.0.0.1:9"]

    result = cli("wandb", "verify", *cluster_args(sim4), "--json", "--python", PYTHON, env=server)
    assert result.exit_code == 0, result.stdout + result.stderr
    document = result.json()
    assert document["mode"] == "offline"
    assert "does not answer" in document["note"] and "--online" in document["note"]

    online = cli("wandb", "verify", *cluster_args(sim4), "--online", "--python", PYTHON,
                 env=server)
    assert online.exit_code == 2
    assert "--online: the W&B server http://127.0.0.1:9 does not answer" in online.stderr
    assert "--offline" in online.stderr


# -- the netrc rewrite, file by file (the probe alone, on this machine) ---------------------


def run_netrc_probe(netrc: Path, request: dict) -> dict:
    import json

    done = subprocess.run([sys.executable, str(NETRC_PROBE)], input=json.dumps(request),
                          capture_output=True, text=True, env={**os.environ, "NETRC": str(netrc)})
    assert done.returncode == 0 and done.stderr == "", done.stderr
    return json.loads(done.stdout)


KEY = "k" * 40


@pytest.mark.parametrize("before, after", [
    ("", entry(KEY)),
    ("machine x login a password b", "machine x login a password b\n" + entry(KEY)),
    (entry("o" * 40) + "machine x\n  login a\n", entry(KEY) + "machine x\n  login a\n"),
    ("machine api.wandb.ai login user password " + "o" * 40 + " machine x login a password b\n",
     "machine api.wandb.ai login user password " + KEY + " machine x login a password b\n"),
    (entry("o" * 40) + "# note\n" + entry("p" * 40), entry(KEY) + "# note\n"),
    ("machine x login a password b\ndefault login g password g\n",
     "machine x login a password b\n" + entry(KEY) + "default login g password g\n"),
    ("macdef init\ncd /pub\n", "macdef init\ncd /pub\n\n" + entry(KEY)),
    ('machine x login a password "with space"\n',
     'machine x login a password "with space"\n' + entry(KEY)),
])
def test_netrc_login_keeps_every_other_byte(tmp_path, before, after):
    import netrc as netrc_module

    netrc = tmp_path / "netrc"
    netrc.write_text(before)
    answer = run_netrc_probe(netrc, {"action": "login", "explicit": CLOUD, "key": KEY})
    assert answer["ok"], answer
    assert netrc.read_text() == after
    assert netrc.stat().st_mode & 0o777 == 0o600
    assert netrc_module.netrc(str(netrc)).authenticators("api.wandb.ai") == ("user", "", KEY)
    assert list(tmp_path.iterdir()) == [netrc]  # no temporary file left


def test_netrc_errors_never_quote_the_key(tmp_path):
    answer = run_netrc_probe(tmp_path / "missing-folder" / "netrc",
                             {"action": "login", "explicit": CLOUD, "key": KEY})
    assert answer["ok"] is False and answer["error"]["type"] == "FileNotFoundError"
    assert KEY not in str(answer)
    answer = run_netrc_probe(tmp_path / "netrc", {"action": "login", "explicit": CLOUD,
                                                  "key": KEY + "\" bad"})
    assert answer["ok"] is False and KEY not in str(answer)


# -- the recipe's [wandb] table ------------------------------------------------------------


def test_wandb_settings_from_a_recipe_table_name_unknown_keys_and_the_file():
    code = """
from clusterprep.wandb import WandbSettings, WandbSettingsError
s = WandbSettings.from_table({"project": "p", "host": "wandb.example.com"}, "r.toml")
print(s.project, s.resolve_base_url({"WANDB_BASE_URL": "https://ignored"}))
print(WandbSettings().resolve_base_url({}))
for table in ({"projet": "p"}, {"host": "ftp://x"}, {"project": 3}):
    try:
        WandbSettings.from_table(table, "r.toml")
    except WandbSettingsError as e:
        print(e)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(SRC)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "p https://wandb.example.com",
        "None",  # nothing given: each node's wandb picks its server (see the login test)
        "r.toml: [wandb] has no setting 'projet' (known: host, project)",
        "r.toml: [wandb] host: 'ftp://x' is not a W&B server URL (like https://api.wandb.ai)",
        "r.toml: [wandb] project must be a non-empty string",
    ]


def test_verify_runs_inside_the_recipes_env_with_its_project(cli, sim4, tmp_path, wandb_env,
                                                              plain_env):
    link_envs(sim4, wandb_env, plain_env)
    assert cli("wandb", "login", *cluster_args(sim4),
               env={"WANDB_API_KEY": new_key()}).exit_code == 0
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(f'[shared]\ndir = "{sim4.shared}"\n'
                      '[env]\nbackend = "venv"\nname = "w"\npython = "3"\n'
                      'prefix = "/root/wandb-env"\n'
                      '[wandb]\nproject = "from-the-recipe"\n')
    result = cli("wandb", "verify", *cluster_args(sim4), "-r", str(recipe), "--offline",
                 "--json")
    assert result.exit_code == 0, result.stdout + result.stderr
    document = result.json()
    assert document["project"] == "from-the-recipe"
    assert all(node["ok"] for node in document["nodes"])


def test_login_writes_the_entry_for_the_server_each_nodes_wandb_will_use(cli, sim4, tmp_path,
                                                                        wandb_env, plain_env):
    """The server a node's wandb talks to is its settings file's `base_url`, else its own
    version's default (wandb 0.31: https://api.forge.coreweave.com, no longer api.wandb.ai);
    login writes the netrc entry wandb looks up first for it, and verify names the server.
    Offline: no W&B server is reached, the netrc lookup is wandb's own."""
    link_envs(sim4, wandb_env, plain_env, without={"node04"})
    settings = sim4.node("node03").home / ".config" / "wandb" / "settings"
    settings.parent.mkdir(parents=True)
    settings.write_text("[default]\nbase_url = https://wandb.example.com\n")
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(f'[shared]\ndir = "{sim4.shared}"\n'
                      '[env]\nbackend = "venv"\nname = "w"\npython = "3"\n'
                      'prefix = "/root/wandb-env"\n')
    (urls,) = wandb_env.glob("lib/python3*/site-packages/wandb/sdk/lib/urls.py")
    default = re.search(r'^DEFAULT_BASE_URL = "([^"]+)"', urls.read_text(), re.M).group(1)

    login = cli("wandb", "login", *cluster_args(sim4), "-r", str(recipe), "--json",
                env={"WANDB_API_KEY": new_key()})
    assert login.exit_code == 0, login.stdout + login.stderr
    machines = {node["node"]: node["machine"] for node in login.json()["nodes"]}
    assert machines == {"node01": urlsplit(default).netloc, "node02": urlsplit(default).netloc,
                        "node03": "wandb.example.com", "node04": "api.wandb.ai"}

    verify = cli("wandb", "verify", *cluster_args(sim4), "-r", str(recipe), "--offline",
                 "--json")
    nodes = {node["node"]: node for node in verify.json()["nodes"]}
    assert nodes["node01"]["server"] == default
    assert nodes["node01"]["server_source"].startswith("the default of wandb at /root/wandb-env")
    assert nodes["node03"]["server"] == "https://wandb.example.com"
    assert nodes["node03"]["server_source"] == "/root/.config/wandb/settings"
    for name in ("node01", "node02", "node03"):
        assert nodes[name]["ok"], nodes[name]
        assert nodes[name]["login_source"] == "/root/.netrc"
