"""`clusterprep up` / `plan` / `down shell` on the simulated cluster, venv and conda paths.

Local stand-ins (see setupkit.py): a wheelhouse for PyPI, a local git repository for GitHub,
an installer with Miniconda's command-line contract for repo.anaconda.com.
"""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest

import setupkit
from polls import until
from clusterprep.recipe import builtin_names, load_recipe
from clusterprep.steps.env import install_script


def cluster_args(sim) -> list[str]:
    return ["-n", str(sim.nodes_file), "-F", str(sim.ssh_config)]


def states(document: dict, step: str) -> dict[str, str]:
    return {n["node"]: n["steps"][step]["state"] for n in document["nodes"]}


@pytest.fixture
def venv_setup(tmp_path: Path):
    """A function (shared folder) -> recipe path, with its wheelhouse and pinned repository."""
    wheelhouse = setupkit.make_wheelhouse(tmp_path / "wheelhouse")
    repo = tmp_path / "upstream"
    rev = setupkit.make_git_repo(repo)

    def recipe(shared, name: str = "venv.toml", extra: tuple[str, ...] = ()) -> Path:
        return setupkit.venv_recipe(tmp_path / name, shared, repo, rev, wheelhouse, extra)

    recipe.rev = rev  # type: ignore[attr-defined]
    return recipe


def test_up_sets_up_every_node_and_a_second_up_changes_nothing(make_cluster, cli, venv_setup):
    sim = make_cluster(3)
    recipe = venv_setup(sim.shared)
    guard_bashrc = {n.name: (n.home / ".bashrc").read_bytes() for n in sim.nodes}
    assert all(b"*) return;;" in data for data in guard_bashrc.values())

    first = cli("up", *cluster_args(sim), "-r", str(recipe), "--json")
    assert first.exit_code == 0, first.stdout + first.stderr
    document = first.json()
    assert document["ok"] and document["failed_nodes"] == []
    assert set(states(document, "shell").values()) == {"changed"}
    assert set(states(document, "env").values()) == {"changed"}
    assert states(document, "repo")["node01"] == "changed"
    after_first = {n.name: (n.home / ".bashrc").read_bytes() for n in sim.nodes}

    second = cli("up", *cluster_args(sim), "-r", str(recipe), "--json")
    assert second.exit_code == 0, second.stdout + second.stderr
    again = second.json()
    assert again["changes"] == 0
    assert {s for step in again["steps"] for s in states(again, step).values()} == {"ok"}
    assert {n.name: (n.home / ".bashrc").read_bytes() for n in sim.nodes} == after_first

    plan = cli("plan", *cluster_args(sim), "-r", str(recipe))
    assert plan.exit_code == 0, plan.stdout + plan.stderr
    assert "nothing to do" in plan.stdout

    # Non-interactive ssh, through Debian's interactive guard, gets the env and the exports.
    for node in sim.nodes:
        shell = sim.ssh(node.name, "command -v python; echo $PYTHONNOUSERSITE; "
                                   "python -c 'import hello_cp; print(hello_cp.VERSION)'; "
                                   "git -C " + str(sim.shared / "upstream") + " rev-parse HEAD")
        assert shell.returncode == 0, shell.stderr
        assert shell.stdout.split() == [f"{sim.shared}/envs/demo/bin/python", "True", "1.0",
                                        venv_setup.rev]

    down = cli("down", "shell", *cluster_args(sim), "-r", str(recipe))
    assert down.exit_code == 0, down.stdout + down.stderr
    assert {n.name: (n.home / ".bashrc").read_bytes() for n in sim.nodes} == guard_bashrc


def test_plan_changes_nothing_and_names_what_up_would_do(make_cluster, cli, venv_setup):
    sim = make_cluster(2)
    shared = sim.shared / "fresh"
    recipe = venv_setup(shared)
    before = (sim.nodes[1].home / ".bashrc").read_bytes()
    plan = cli("plan", *cluster_args(sim), "-r", str(recipe), "--json")
    assert plan.exit_code == 0, plan.stdout + plan.stderr
    document = plan.json()
    assert document["dry_run"] and document["changes"] > 0
    assert states(document, "shell") == {"node01": "would-change", "node02": "would-change"}
    assert not shared.exists()
    assert (sim.nodes[1].home / ".bashrc").read_bytes() == before


def test_a_node_down_during_up_is_named_and_a_second_up_completes_it(make_cluster, cli,
                                                                      venv_setup):
    sim = make_cluster(3)
    recipe = venv_setup(sim.shared)
    sim.node("node03").stop()
    first = cli("up", *cluster_args(sim), "-r", str(recipe), "--json", "--connect-timeout", "3")
    assert first.exit_code == 1
    document = first.json()
    assert document["failed_nodes"] == ["node03"]
    node03 = next(n for n in document["nodes"] if n["node"] == "node03")
    assert node03["steps"]["shared"]["state"] == "failed"
    assert "refused" in node03["steps"]["shared"]["message"]
    assert node03["steps"]["env"]["state"] == "skipped"
    assert states(document, "env")["node02"] == "changed"

    text = cli("up", *cluster_args(sim), "-r", str(recipe), "--connect-timeout", "3")
    assert text.exit_code == 1
    assert "node03" in text.stdout and "refused" in text.stdout

    sim.node("node03").start()
    second = cli("up", *cluster_args(sim), "-r", str(recipe), "--json")
    assert second.exit_code == 0, second.stdout
    document = second.json()
    assert states(document, "shell") == {"node01": "ok", "node02": "ok", "node03": "changed"}
    # The env lives in the shared folder: node03 finds it ready, nothing is installed again.
    assert states(document, "env") == {"node01": "ok", "node02": "ok", "node03": "ok"}


def test_a_folder_that_exists_on_each_node_but_is_not_shared_is_reported(make_cluster, cli,
                                                                          venv_setup):
    sim = make_cluster(3)
    recipe = venv_setup("/root/not-shared")  # /root is each node's own home
    (sim.node("node03").home / "not-shared").mkdir()
    result = cli("up", *cluster_args(sim), "-r", str(recipe), "--only", "shared", "--json")
    assert result.exit_code == 1
    shared = {n["node"]: n["steps"]["shared"] for n in result.json()["nodes"]}
    assert shared["node01"]["state"] == "changed"
    assert "free" in shared["node01"]["message"]
    assert shared["node02"]["state"] == "failed"
    assert "does not exist" in shared["node02"]["message"]
    assert shared["node03"]["state"] == "failed"
    assert "not the head's folder" in shared["node03"]["message"]


def test_a_failing_install_command_shows_the_logs_last_lines_and_up_resumes(make_cluster, cli,
                                                                             venv_setup,
                                                                             tmp_path):
    sim = make_cluster(1)
    flag = tmp_path / "fixed"
    broken = venv_setup(sim.shared, extra=(f"test -e {flag} || {{ echo BROKEN-INSTALL; "
                                           "exit 3; }",))
    result = cli("up", *cluster_args(sim), "-r", str(broken))
    assert result.exit_code == 1
    log = f"{sim.shared}/.clusterprep/logs/env.log"
    assert log in result.stdout and "BROKEN-INSTALL" in result.stdout
    flag.touch()
    again = cli("up", *cluster_args(sim), "-r", str(broken), "--json")
    assert again.exit_code == 0, again.stdout
    assert states(again.json(), "env") == {"node01": "changed"}


def test_conda_backend_installs_the_checksummed_installer_once(make_cluster, cli, tmp_path):
    sim = make_cluster(2)
    url, sha256 = setupkit.make_fake_miniconda(tmp_path / "mirror")
    recipe = setupkit.conda_recipe(tmp_path / "conda.toml", sim.shared, url, sha256)
    first = cli("up", *cluster_args(sim), "-r", str(recipe), "--json")
    assert first.exit_code == 0, first.stdout + first.stderr
    document = first.json()
    assert states(document, "env-manager") == {"node01": "changed", "node02": "changed"}
    assert (sim.shared / "miniconda3" / "bin" / "conda").exists()
    for node in sim.nodes:
        shell = sim.ssh(node.name, "command -v python; echo $PYTHONNOUSERSITE; conda --version")
        assert shell.returncode == 0, shell.stderr
        assert shell.stdout.split() == [f"{sim.shared}/envs/demo/bin/python", "True",
                                        "conda", "24.5.0"]
    again = cli("up", *cluster_args(sim), "-r", str(recipe), "--json")
    assert again.exit_code == 0 and again.json()["changes"] == 0


def test_a_wrong_sha256_stops_the_env_manager_step_before_anything_runs(make_cluster, cli,
                                                                         tmp_path):
    sim = make_cluster(2)
    url, sha256 = setupkit.make_fake_miniconda(tmp_path / "mirror")
    wrong = "0" * 64
    recipe = setupkit.conda_recipe(tmp_path / "conda.toml", sim.shared, url, wrong)
    result = cli("up", *cluster_args(sim), "-r", str(recipe), "--json")
    assert result.exit_code == 1
    document = result.json()
    head = document["nodes"][0]["steps"]
    assert head["env-manager"]["state"] == "failed"
    assert "sha256 mismatch" in head["env-manager"]["message"] and sha256 in \
        head["env-manager"]["message"]
    assert head["env"]["state"] == "skipped"
    assert not (sim.shared / "miniconda3").exists()
    assert not list((sim.shared / ".clusterprep" / "downloads").glob("*.sh"))


def test_up_on_this_machine_alone_needs_no_ssh(cli, venv_setup, tmp_path):
    shared = tmp_path / "local-shared"
    recipe = venv_setup(shared)
    result = cli("up", "-n", "localhost", "-r", str(recipe), "--json")
    assert result.exit_code == 0, result.stdout + result.stderr
    assert (shared / "envs" / "demo" / "bin" / "python").exists()
    assert (tmp_path / "home" / ".bashrc").read_text().startswith("# >>> clusterprep >>>")
    down = cli("down", "shell", "-n", "localhost", "-r", str(recipe))
    assert down.exit_code == 0
    assert not (tmp_path / "home" / ".bashrc").exists()  # it did not exist before `up`


def test_ctrl_c_stops_up_at_once_and_keeps_what_was_done(make_cluster, cli, venv_setup):
    sim = make_cluster(2)
    slow = venv_setup(sim.shared, extra=("sleep 60",))
    process = cli.start("up", *cluster_args(sim), "-r", str(slow), "--json")
    log = sim.shared / ".clusterprep" / "logs" / "env.log"
    until(lambda: log.exists() and "hello" in log.read_text(),
          "the install commands run (the wheel first, then the sleep)", within=60, every=0.2)
    process.send_signal(signal.SIGINT)
    interrupted = cli.finish(process, timeout=30)
    assert interrupted.exit_code == 130, interrupted.stderr
    document = interrupted.json()
    assert document["interrupted"] is True and document["ok"] is False
    assert set(states(document, "shell").values()) == {"changed"}  # done before Ctrl-C: kept
    assert states(document, "env")["node01"] == "failed"
    assert "sleep 60" not in sim.node("node01").run("ps -eo args").stdout


# What a CUDA toolkit package leaves in a conda env: a script that `conda activate` runs.
CUDA_HOME_SCRIPT = ("mkdir -p $CONDA_PREFIX/etc/conda/activate.d && "
                    "echo 'export CUDA_HOME=$CONDA_PREFIX' "
                    "> $CONDA_PREFIX/etc/conda/activate.d/cuda-home.sh")


def bare_install_recipe(tmp_path: Path, shared: Path, backend: str) -> Path:
    """Install commands as READMEs and the fork's install.sh write them: bare `pip`,
    `python`, `conda install`; no [repo], so they run from the shared folder."""
    wheelhouse = setupkit.make_wheelhouse(tmp_path / "wheelhouse")
    commands = [f"pip install --no-index --find-links {wheelhouse} hello-cp=={{pins.hello-cp}}",
                "python -c 'import hello_cp, sys; assert sys.prefix == \"{env.prefix}\"'"]
    checks = """
[[checks]]
name = "pip"
command = "pip --version"
expect = "from {env.prefix}/"

[[checks]]
name = "hello-cp"
import = "hello_cp"
value = "hello_cp.VERSION"
expect = "^{pins.hello-cp}$"
"""
    installer = None
    if backend == "conda":
        installer = setupkit.make_fake_miniconda(tmp_path / "mirror")
        commands += [CUDA_HOME_SCRIPT,
                     # bare: the conda function installs into the active env, then reactivates
                     # it, so the script above runs before the next command
                     "conda install -y -c nvidia cuda-nvcc=12.1.66",
                     "python -c 'import os, sys; assert os.environ[\"CUDA_HOME\"] == sys.prefix'"]
        checks += """
[[checks]]
name = "CUDA_HOME"
command = "echo $CUDA_HOME"
expect = "^{env.prefix}$"
"""
    tail = (f'[pins]\nhello-cp = "{setupkit.WHEEL_VERSION}"\n\n'
            f"[install]\ncommands = {json.dumps(commands)}\n{checks}")
    return setupkit.env_recipe(tmp_path / f"{backend}.toml", shared, backend, tail, installer)


@pytest.mark.parametrize("backend", ["venv", "conda"])
def test_bare_pip_and_python_in_install_commands_act_on_the_env(make_cluster, cli, tmp_path,
                                                                 backend):
    sim = make_cluster(2)
    recipe = bare_install_recipe(tmp_path, sim.shared, backend)
    prefix = f"{sim.shared}/envs/demo"
    system_pip = "/usr/bin/python3 -m pip list --format=freeze"
    before = sim.ssh("node01", system_pip)
    assert before.returncode == 0, before.stderr
    # Were a command to reach the node's own pip, it would fail (Debian's pip refuses with
    # externally-managed-environment; a node without pip says command not found): `up` fails.
    reached = sim.ssh("node01", "pip install --dry-run --no-index hello-cp")
    assert reached.returncode != 0 and "hello_cp" not in reached.stdout

    up = cli("up", *cluster_args(sim), "-r", str(recipe), "--json")
    assert up.exit_code == 0, up.stdout + up.stderr
    log = (sim.shared / ".clusterprep" / "logs" / "env.log").read_text()
    assert f"Successfully installed hello-cp-{setupkit.WHEEL_VERSION}" in log

    for node in sim.nodes:  # plain non-interactive ssh, as launchers run it
        shell = sim.ssh(node.name, "python -c 'import hello_cp, sys; print(sys.prefix)'; "
                                   "echo ${CUDA_HOME:-unset}")
        assert shell.returncode == 0, shell.stderr
        assert shell.stdout.split() == [prefix, prefix if backend == "conda" else "unset"]
    assert sim.ssh("node01", system_pip).stdout == before.stdout
    assert sim.ssh("node01", "/usr/bin/python3 -c 'import hello_cp'").returncode != 0
    if backend == "conda":
        assert (Path(prefix) / "conda-meta" / "cuda-nvcc-12.1.66-fake_0.json").exists()

    check = cli("check", *cluster_args(sim), "-r", str(recipe), "--json")
    assert check.exit_code == 0, check.stdout + check.stderr
    for node in check.json()["nodes"]:
        assert {c["name"]: c["ok"] for c in node["checks"]} == {
            "pip": True, "hello-cp": True, **({"CUDA_HOME": True} if backend == "conda" else {})}


@pytest.mark.parametrize("name", builtin_names())
def test_each_builtin_recipes_install_script_is_valid_bash(name):
    script = install_script(load_recipe(name, "/shared/demo"))
    parsed = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True)
    assert parsed.returncode == 0, parsed.stderr
