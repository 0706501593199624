"""`clusterprep check`: the install check on every node, and proof that no node differs.

Nodes are made to differ the way real ones do, and each difference must be caught and named.
The env is the venv that `up` builds from a local wheelhouse (hello-cp 1.0, see setupkit.py).
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import zlib
from importlib import resources

import gpukit
import pytest
import setupkit
from setupkit import add_to_bashrc, install_fake_distribution

from clusterprep.recipe import tomllib

SITE = f"lib/python{setupkit.system_python_version()}/site-packages"


@pytest.fixture
def checked_cluster(make_cluster, cli, tmp_path):
    """A 4-node cluster where `up` built the env (hello-cp 1.0) but did not touch .bashrc."""
    sim = make_cluster(4)
    wheelhouse = setupkit.make_wheelhouse(tmp_path / "wheelhouse")
    repo = tmp_path / "repo"
    rev = setupkit.make_git_repo(repo)
    recipe = setupkit.venv_recipe(tmp_path / "recipe.toml", sim.shared, repo, rev, wheelhouse)
    with recipe.open("a") as f:
        f.write('\n[[checks]]\nname = "python"\ncommand = "python --version"\n'
                'expect = "^Python {env.python_version}"\n'
                '\n[[checks]]\nname = "hello-cp"\nimport = "hello_cp"\n'
                'expect = "^{pins.hello-cp}$"\n')
    # in the order clusterprep's suggestions give them
    args = ["-r", str(recipe), "-n", str(sim.nodes_file), "-F", str(sim.ssh_config)]
    done = cli("up", *args, "--skip", "shell")
    assert done.exit_code == 0, done.stdout + done.stderr
    return sim, args


def findings(document: dict) -> dict[str, dict]:
    return {f["item"]: f for f in document["findings"]}


def test_identical_nodes_pass_with_no_findings(checked_cluster, cli, tmp_path):
    sim, args = checked_cluster
    result = cli("check", *args, "--json")
    document = result.json()
    assert result.exit_code == 0, result.stdout
    assert document["ok"] is True and document["findings"] == []
    for node in document["nodes"]:
        assert [(c["name"], c["ok"]) for c in node["checks"]] == [("python", True),
                                                                  ("hello-cp", True)]
        assert node["checks"][1]["value"] == "1.0"
        assert node["fingerprint"]["packages"]["hello-cp"]["version"] == "1.0"
        assert abs(node["clock_offset_s"]) < 1

    page = tmp_path / "report.html"
    text = cli("check", *args, "--html", str(page))
    assert text.exit_code == 0 and "no drift" in text.stdout
    assert "node[01-04] *" in text.stdout  # identical nodes: one row of the matrix, not four
    html = page.read_text()
    assert "No drift" in html and "node[01-04] (head)" in html
    assert not re.search(r"(src|href)=['\"]?https?:", html)  # viewable without a network


def test_a_package_in_one_nodes_user_site_is_caught_then_neutralised_by_up(
        checked_cluster, cli):
    sim, args = checked_cluster
    # A conda env's python honours user site-packages, and they come first on its sys.path;
    # a venv's python ignores them. So this test checks an interpreter laid out as conda's.
    site = setupkit.make_base_python(sim.shared / "conda-like")
    install_fake_distribution(site, "hello-cp", "1.0")
    python = ["--python", str(sim.shared / "conda-like" / "bin" / "python")]
    up_shell = shlex.join(["clusterprep", "up", "--only", "shell", *args])
    node03 = sim.node("node03")
    install_fake_distribution(node03.home / ".local" / SITE, "hello-cp", "2.0")

    result = cli("check", *args, *python, "--json")
    document = result.json()
    assert result.exit_code == 1
    found = findings(document)
    assert found["package:hello-cp"]["severity"] == "critical"
    assert found["package:hello-cp"]["nodes"] == ["node03"]
    assert found["package:hello-cp"]["values"] == {"1.0": ["node01", "node02", "node04"],
                                                   "2.0": ["node03"]}
    shadow = found["shadowed:hello-cp"]
    assert shadow["nodes"] == ["node03"] and "user site-packages" in list(shadow["values"])[1]
    assert shadow["advice"] == (
        f"on node03, `{python[1]} -m pip uninstall hello-cp` (it sits in /root/.local/{SITE}) "
        f"or export PYTHONNOUSERSITE=True (`{up_shell}` does)")
    assert found["package:hello-cp"]["advice"] == (
        f"on node03, hello-cp 2.0 comes from /root/.local/{SITE} (user site-packages), not "
        "from the env: see shadowed:hello-cp")
    by_node = {n["node"]: n for n in document["nodes"]}
    assert by_node["node03"]["checks"][1] == {
        "name": "hello-cp", "ok": False, "value": "2.0", "expected": "^1\\.0$",
        "message": "does not match '^1\\.0$'"}

    table = cli("check", *args, *python)
    assert "critical package:hello-cp: node03 differs" in table.stdout
    assert "node[01-02,04] *" in table.stdout
    assert "node03: hello-cp: does not match" in " ".join(table.stdout.split())

    # The advice, run as printed: `up` exports PYTHONNOUSERSITE=True in every node's shell,
    # and the stray package is ignored.
    assert cli(*shlex.split(up_shell)[1:]).exit_code == 0
    after = cli("check", *args, *python, "--json")
    assert after.exit_code == 0, after.stdout
    assert after.json()["findings"] == []
    for node in after.json()["nodes"]:
        assert node["fingerprint"]["python"]["user_site_enabled"] is False
        assert node["fingerprint"]["env"]["PYTHONNOUSERSITE"] == "True"


def test_pythonpath_nccl_variables_and_another_python_on_path_are_named_with_the_line_to_fix(
        checked_cluster, cli):
    sim, args = checked_cluster
    assert cli("up", *args, "--only", "shell").exit_code == 0
    node01, node02, node04 = sim.node("node01"), sim.node("node02"), sim.node("node04")
    install_fake_distribution(node02.home / "extra", "hello-cp", "3.0")
    add_to_bashrc(node02.home, "export PYTHONPATH=/root/extra")
    add_to_bashrc(node04.home, "export NCCL_DEBUG=INFO")
    (node01.home / "bin").mkdir()
    (node01.home / "bin" / "python").symlink_to("/usr/bin/python3")
    add_to_bashrc(node01.home, 'export PATH="/root/bin:$PATH"')
    # The tutorial's launch line names the socket interface; node03 has no such interface.
    add_to_bashrc(sim.node("node03").home, "export NCCL_SOCKET_IFNAME=eno1")
    # Lines the fingerprint quotes may hold secrets too: they never leave the node.
    key = "0123456789abcdef0123456789abcdef01234567"
    add_to_bashrc(node04.home, f'export PATH="$PATH" WANDB_API_KEY={key}; wandb login {key}')

    result = cli("check", *args, "--json")
    assert result.exit_code == 1
    assert key not in result.stdout
    lines = result.json()["nodes"][3]["fingerprint"]["startup_lines"]["PATH"]
    assert 'export PATH="$PATH" WANDB_API_KEY=<hidden>; wandb login <hidden>' in [
        line["text"] for line in lines]
    found = findings(result.json())
    assert found["shadowed:hello-cp"]["nodes"] == ["node02"]
    assert "PYTHONPATH" in list(found["shadowed:hello-cp"]["values"])[1]
    assert found["shadowed:hello-cp"]["advice"] == (
        "take /root/extra out of PYTHONPATH on node02, set at "
        f"/root/.bashrc:{line_of(node02.home, 'PYTHONPATH')} (`export PYTHONPATH=/root/extra`)")
    assert found["env:PYTHONPATH"]["severity"] == "critical"
    assert found["env:NCCL_DEBUG"] == {
        "severity": "warning", "kind": "drift", "item": "env:NCCL_DEBUG", "nodes": ["node04"],
        "values": {"(absent)": ["node01", "node02", "node03"], "INFO": ["node04"]},
        "reference": "(absent)",
        "advice": "on node04, NCCL_DEBUG=INFO is set at "
                  f"/root/.bashrc:{line_of(node04.home, 'NCCL_DEBUG')} "
                  "(`export NCCL_DEBUG=INFO`) where the others leave it unset: change that "
                  "line, or set it the same on every node"}
    python = found["shell:python on PATH"]
    assert python["severity"] == "critical" and python["nodes"] == ["node01"]
    assert python["values"]["/root/bin/python"] == ["node01"]
    assert f"fix /root/.bashrc:{line_of(node01.home, 'PATH=')}" in python["advice"]

    # Not only a difference: NCCL on node03 would find no interface at all.
    ifname = found["env:NCCL_SOCKET_IFNAME"]
    assert (ifname["severity"], ifname["kind"], ifname["nodes"]) == (
        "critical", "health", ["node03"])
    assert list(ifname["values"])[1].startswith("eno1: matches no interface (there: ")
    assert ifname["advice"].startswith(
        "set NCCL_SOCKET_IFNAME (set in /root/.bashrc:"
        f"{line_of(sim.node('node03').home, 'NCCL_SOCKET_IFNAME')}) on node03 to an interface "
        "it has and that is up (")


def line_of(home, text: str) -> int:
    """The number of the first line of a node's ~/.bashrc that contains `text`."""
    lines = (home / ".bashrc").read_text().splitlines()
    return next(number for number, line in enumerate(lines, 1) if text in line)


def test_a_node_missing_a_package_is_named(make_cluster, cli, tmp_path):
    # Envs that live on each node (not in the shared folder), one of them incomplete.
    sim = make_cluster(3)
    for node in sim.nodes:
        setupkit.make_bare_venv(node.home / "env")
        if node.name != "node02":
            install_fake_distribution(node.home / "env" / SITE, "hello-cp", "1.0")
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(f'[shared]\ndir = "{sim.shared}"\n[env]\nbackend = "venv"\n'
                      f'name = "e"\npython = "{setupkit.system_python_version()}"\n')
    result = cli("check", "-n", str(sim.nodes_file), "-F", str(sim.ssh_config), "-r",
                 str(recipe), "--python", "/root/env/bin/python", "--json")
    assert result.exit_code == 1
    missing = findings(result.json())["package:hello-cp"]
    assert missing["nodes"] == ["node02"]
    assert missing["values"] == {"1.0": ["node01", "node03"], "(absent)": ["node02"]}
    assert missing["advice"] == (
        "install hello-cp 1.0 on node02: `/root/env/bin/python -m pip install 'hello-cp==1.0'` "
        f"(or `clusterprep up -r {recipe} -n {sim.nodes_file} -F {sim.ssh_config}` where the "
        "recipe pins it)")


def test_an_unreachable_node_and_a_missing_env_are_named(checked_cluster, cli):
    sim, args = checked_cluster
    sim.node("node02").stop()
    result = cli("check", *args, "--json", "--connect-timeout", "2",
                 "--python", "/no/such/env/bin/python")
    document = result.json()
    assert result.exit_code == 1
    by_node = {n["node"]: n for n in document["nodes"]}
    assert by_node["node02"]["error"]["kind"] == "refused"
    assert "/no/such/env/bin/python" in by_node["node01"]["error"]["message"]
    assert f"`{shlex.join(['clusterprep', 'up', *args])}` builds it" in \
        by_node["node01"]["error"]["message"]


def test_a_node_with_a_missing_gpu_or_another_driver_is_critical(checked_cluster, cli):
    sim, args = checked_cluster
    for node in sim.nodes:
        gpus, driver = {"node02": (7, "550.54.15"), "node04": (8, "535.161.08")}.get(
            node.name, (8, "550.54.15"))
        gpukit.fake_nvidia_smi(node.home, gpus, driver=driver)
    result = cli("check", *args, "--json")
    assert result.exit_code == 1
    found = findings(result.json())
    assert found["gpu:count"]["severity"] == "critical"
    assert found["gpu:count"]["values"] == {"8": ["node01", "node03", "node04"], "7": ["node02"]}
    assert found["gpu:driver"]["nodes"] == ["node04"]
    assert found["gpu:driver"]["severity"] == "critical"
    assert found["gpu:driver"]["advice"].startswith(
        "install NVIDIA driver 550.54.15 on node04 like the others, then reboot")
    assert found["gpu:count"]["advice"].startswith(
        "nvidia-smi shows other GPU counts (node02: 7) than the others' 8: run `nvidia-smi -L`")


def check_one_node(make_cluster, cli, tmp_path, modules: dict[str, str], checks: str) -> dict:
    """Run `checks` (TOML) on one node whose system python finds `modules` ({name: source})
    and the distributions good-early 1.0 and good-late 2.0 through PYTHONPATH; the results
    by check name."""
    sim = make_cluster(1)
    site = sim.shared / "env-site"
    install_fake_distribution(site, "good-early", "1.0")
    install_fake_distribution(site, "good-late", "2.0")
    for name, source in modules.items():
        (site / f"{name}.py").write_text(source)
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(
        f'[shared]\ndir = "{sim.shared}"\n[env]\nbackend = "venv"\nname = "e"\npython = "3"\n'
        + checks)
    add_to_bashrc(sim.node("node01").home, f"export PYTHONPATH={site}")
    result = cli("check", "-n", str(sim.nodes_file), "-F", str(sim.ssh_config), "-r",
                 str(recipe), "--python", "/usr/bin/python3", "--json")
    return {c["name"]: c for c in result.json()["nodes"][0]["checks"]}


def test_an_import_that_kills_python_fails_only_its_own_check(make_cluster, cli, tmp_path):
    # Imports share one forked copy of the probe (torch loads once, not once per check); one
    # that takes that copy down must not take the other checks with it.
    checks = check_one_node(
        make_cluster, cli, tmp_path, {"crasher": "import os\nos._exit(3)\n"},
        '[[checks]]\nname = "early"\nimport = "good_early"\n'
        '[[checks]]\nname = "crash"\nimport = "crasher"\n'
        '[[checks]]\nname = "late"\nimport = "good_late"\nexpect = "^2\\\\.0$"\n')
    assert checks["early"]["ok"] and checks["early"]["value"] == "1.0"
    assert checks["late"]["ok"] and checks["late"]["value"] == "2.0"
    assert not checks["crash"]["ok"]
    assert checks["crash"]["message"].startswith("import failed: it ended Python (exit 3)")


def test_a_hanging_import_or_a_failing_value_fails_only_its_own_check(
        make_cluster, cli, tmp_path):
    # A GPU in a bad state can hang CUDA's start-up for ever: a check's `timeout` bounds it.
    checks = check_one_node(
        make_cluster, cli, tmp_path, {"hangs": "import time\ntime.sleep(300)\n"},
        '[[checks]]\nname = "hang"\nimport = "hangs"\ntimeout = 1\n'
        '[[checks]]\nname = "bad value"\nimport = "good_late"\nvalue = "good_late.nope"\n'
        '[[checks]]\nname = "value"\nimport = "good_late"\nvalue = "good_late.VERSION"\n')
    assert checks["hang"]["message"] == "import failed: timed out after 1 s"
    assert checks["bad value"]["message"] == (
        "value failed: AttributeError: module 'good_late' has no attribute 'nope'")
    assert checks["value"]["ok"] and checks["value"]["value"] == "2.0"


def shared_library(name: str) -> str:
    """The file of a shared library this test's Python has loaded (zlib links libz.so)."""
    assert zlib  # imported for the library it loads
    with open("/proc/self/maps") as maps:
        return next(line.split()[-1] for line in maps if f"/{name}" in line)


def opensora_torch_checks() -> str:
    """The built-in opensora recipe's pins and its checks that ask torch, as TOML."""
    recipe = tomllib.loads(resources.files("clusterprep").joinpath(
        "recipes/opensora.toml").read_text())
    lines = ["[pins]"] + [f"{json.dumps(k)} = {json.dumps(v)}" for k, v in recipe["pins"].items()]
    for check in recipe["checks"]:
        if check.get("import") == "torch":
            lines.append("[[checks]]")
            lines += [f"{key} = {json.dumps(value)}" for key, value in check.items()]
    return "\n".join(lines) + "\n"


def test_torch_loads_once_per_node_for_all_its_checks_and_facts(make_cluster, cli, tmp_path):
    # The opensora recipe asks torch four things (version, CUDA, GPUs, NCCL) and the
    # fingerprint asks it more: on a real node each load of torch costs seconds.
    sim = make_cluster(2)
    env = sim.shared / "envs" / "t"
    setupkit.make_bare_venv(env)
    setupkit.install_fake_torch(env / SITE, gpus=8)
    # The NCCL torch loads (as libtorch_cuda.so loads libnccl.so.2): a real shared library
    # (the system's libz, which Python's zlib links) under NCCL's file name.
    nccl = env / "lib" / "libnccl.so.2.19.3"
    shutil.copy(shared_library("libz.so"), nccl)
    with (env / SITE / "torch" / "__init__.py").open("a") as f:
        f.write(f"import ctypes\nctypes.CDLL({str(nccl)!r})\n")
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(f'[shared]\ndir = "{sim.shared}"\n'
                      '[env]\nbackend = "venv"\nname = "t"\npython = "3"\n'
                      + opensora_torch_checks())
    result = cli("check", "-n", str(sim.nodes_file), "-F", str(sim.ssh_config),
                 "-r", str(recipe), "--json")
    assert result.exit_code == 0, result.stdout
    for node in result.json()["nodes"]:
        checks = {c["name"]: c["value"] for c in node["checks"]}
        assert checks == {"torch": "2.2.2+cu121", "torch cuda": "12.1",
                          "gpus": "8 NVIDIA H100 80GB HBM3", "nccl": "2.19.3"}
        assert node["fingerprint"]["torch"] == {"version": "2.2.2+cu121", "cuda": "12.1",
                                                "cudnn": 8902, "nccl": "2.19.3", "gpus": 8}
        assert node["fingerprint"]["nccl"]["library"] == {
            "path": str(nccl), "real_path": str(nccl), "version": "2.19.3",
            "how": "loaded by torch"}
    for node in sim.nodes:
        assert len((node.home / "torch-imports").read_text().split()) == 1, node.name

    # A node whose environment hides its GPUs from torch fails the GPU check, and says why.
    add_to_bashrc(sim.node("node02").home, "export CUDA_VISIBLE_DEVICES=")
    result = cli("check", "-n", str(sim.nodes_file), "-F", str(sim.ssh_config),
                 "-r", str(recipe), "--json")
    assert result.exit_code == 1
    node02 = {c["name"]: c for c in result.json()["nodes"][1]["checks"]}
    assert node02["gpus"]["ok"] is False
    assert node02["gpus"]["value"] == "0 (no GPU visible to torch)"
    found = findings(result.json())
    assert found["torch:gpus"]["severity"] == "critical"
    assert found["torch:gpus"]["values"] == {"8": ["node01"], "0": ["node02"]}
    line = line_of(sim.node("node02").home, "CUDA_VISIBLE_DEVICES")
    assert found["torch:gpus"]["advice"] == (
        "torch sees 0 GPUs on node02 because CUDA_VISIBLE_DEVICES is set there "
        f"(/root/.bashrc:{line} (`export CUDA_VISIBLE_DEVICES=`)): unset it")
    assert found["env:CUDA_VISIBLE_DEVICES"]["nodes"] == ["node02"]


def gpu_node_recipe(sim, tmp_path) -> list[str]:
    """The command-line arguments of a check of `sim` with its nodes' system python (no env to
    build: what is under test here is the node, not the install)."""
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(f'[shared]\ndir = "{sim.shared}"\n'
                      '[env]\nbackend = "venv"\nname = "e"\npython = "3"\n')
    return ["-n", str(sim.nodes_file), "-F", str(sim.ssh_config), "-r", str(recipe),
            "--python", "/usr/bin/python3"]


def test_one_node_made_different_each_way_is_caught_with_its_severity_and_advice(
        make_cluster, cli, tmp_path):
    # Six GPU nodes, each with 8 GPUs, two InfiniBand ports, NCCL 2.19.3 and its net plugin:
    # healthy and identical. Then each node but the head is made different in one way.
    sim = make_cluster(6)
    args = gpu_node_recipe(sim, tmp_path)
    for node in sim.nodes:
        gpukit.fake_nvidia_smi(node.home, 8)
        gpukit.fake_infiniband(node, {"mlx5_0": {1: gpukit.ib_port()},
                                      "mlx5_1": {1: gpukit.ib_port()}})
        gpukit.fake_nccl(node.home, "2.19.3", plugins=("libnccl-net.so",))
    healthy = cli("check", *args, "--json")
    assert healthy.exit_code == 0, healthy.stdout
    assert healthy.json()["findings"] == []
    fingerprint = healthy.json()["nodes"][0]["fingerprint"]
    assert fingerprint["nccl"]["library"]["version"] == "2.19.3"
    assert [p["path"] for p in fingerprint["nccl"]["plugins"]] == [
        "/root/nccl/lib/libnccl-net.so"]
    assert fingerprint["fabric"]["infiniband"][0]["ports"] == [
        {"port": 1, "state": "ACTIVE", "phys_state": "LinkUp", "rate": "400 Gb/sec (4X NDR)",
         "link_layer": "InfiniBand"}]
    assert "eth0" in [i["name"] for i in fingerprint["fabric"]["interfaces"]]
    assert len(fingerprint["gpus"]["devices"]) == 8

    node02, node03, node04, node05, node06 = (sim.node(f"node0{i}") for i in range(2, 7))
    gpukit.fake_infiniband(node02, {"mlx5_0": {1: gpukit.ib_port("1: DOWN", "2: Polling")},
                                    "mlx5_1": {1: gpukit.ib_port()}})
    (node03.home / "nccl" / "lib" / "libnccl-net.so").unlink()
    gpukit.drop_ipc_lock(node04.home)
    add_to_bashrc(node04.home, "ulimit -l 64")
    gpus = [gpukit.healthy_gpu(i) for i in range(8)]
    gpus[2]["ecc.errors.uncorrected.volatile.total"] = "3"
    gpukit.fake_nvidia_smi(node05.home, gpus)
    gpus = [gpukit.healthy_gpu(i) for i in range(8)]
    gpus[5]["pcie.link.width.current"] = "8"
    gpukit.fake_nvidia_smi(node06.home, gpus)

    result = cli("check", *args, "--json")
    assert result.exit_code == 1
    found = findings(result.json())
    assert {item: (f["severity"], f["nodes"]) for item, f in found.items()} == {
        "ib:mlx5_0 port 1": ("critical", ["node02"]),
        "nccl:net plugins": ("critical", ["node03"]),
        "limits:memlock": ("critical", ["node04"]),
        "gpu:uncorrected ECC errors": ("critical", ["node05"]),
        "gpu:PCIe link": ("critical", ["node06"]),
    }
    assert found["ib:mlx5_0 port 1"]["values"]["DOWN, Polling, 400 Gb/sec (4X NDR), "
                                               "InfiniBand"] == ["node02"]
    assert found["ib:mlx5_0 port 1"]["advice"].startswith(
        "mlx5_0 port 1 on node02 is DOWN, no link: check the cable and the switch port")
    assert found["nccl:net plugins"]["advice"].startswith(
        "install libnccl-net.so on node03 (the others load /root/nccl/lib/libnccl-net.so)")
    assert found["limits:memlock"]["values"]["64 KiB (hard 64 KiB), no CAP_IPC_LOCK, RDMA "
                                             "devices present"] == ["node04"]
    assert found["limits:memlock"]["advice"].startswith(
        f"remove `ulimit -l 64` from node04's /root/.bashrc (line "
        f"{line_of(node04.home, 'ulimit -l 64')}):")
    assert found["gpu:uncorrected ECC errors"]["values"] == {
        "none since the driver loaded": ["node01", "node02", "node03", "node04", "node06"],
        "GPU 2 (00000000:3A:00.0): 3 since the driver loaded": ["node05"]}
    assert found["gpu:uncorrected ECC errors"]["advice"].startswith(
        "drain node05: GPU 2 (00000000:3A:00.0) had uncorrectable memory errors")
    assert found["gpu:PCIe link"]["values"]["GPU 5 (00000000:AB:00.0): x8 of x16"] == ["node06"]
    assert found["gpu:PCIe link"]["advice"].startswith(
        "reseat GPU 5 (00000000:AB:00.0) on node06")

    page = tmp_path / "report.html"
    table = cli("check", *args, "--html", str(page))
    assert "critical gpu:PCIe link: node06 unwell" in table.stdout
    assert "advice    reseat GPU 5 (00000000:AB:00.0) on node06" in table.stdout
    assert "drain node05: GPU 2 (00000000:3A:00.0)" in page.read_text()


def test_xid_events_and_a_failing_gpu_diagnostic_say_which_gpu_and_to_drain(
        make_cluster, cli, tmp_path):
    sim = make_cluster(3)
    args = gpu_node_recipe(sim, tmp_path)
    node02 = sim.node("node02")
    for node in sim.nodes:
        gpukit.fake_nvidia_smi(node.home, 4)
    # node03's driver is older than the fields clusterprep asks: it still gets checked.
    older = [gpukit.healthy_gpu(i) for i in range(4)]
    for gpu in older:
        del gpu["clocks_throttle_reasons.gpu_idle"]
    gpukit.fake_nvidia_smi(sim.node("node03").home, older)
    gpukit.fake_dcgmi(sim.node("node01").home, 4)
    gpukit.fake_dcgmi(node02.home, 4, failing={3: ("Page Retirement/Row Remap",
                                                   "GPU 3 has uncorrectable memory errors")})
    gpukit.fake_kernel_log(node02, [
        "usb 1-1: new high-speed USB device number 2 using xhci_hcd",
        gpukit.xid("0000:5d:00", 79, "GPU has fallen off the bus."),
        gpukit.xid("0000:5d:00", 13, "Graphics SM Warp Exception on (GPC 0, TPC 1)")])

    result = cli("check", *args, "--gpu-diag", "--json")
    assert result.exit_code == 1
    document = result.json()
    found = findings(document)
    xids = found["gpu:Xid events"]
    assert (xids["severity"], xids["nodes"]) == ("critical", ["node02"])
    assert xids["values"]["Xid 79 on 0000:5d:00 x1 (GPU has fallen off the bus.); Xid 13 on "
                          "0000:5d:00 x1 (Graphics SM Warp Exception on (GPC 0, TPC 1))"] == [
        "node02"]
    assert xids["advice"].startswith("drain node02: GPU 0000:5d:00 logged Xid 79, the GPU fell "
                                     "off the bus: reboot")
    assert "look up Xid 13 (GPU 0000:5d:00 on node02) in NVIDIA's Xid catalog" in xids["advice"]
    diag = found["gpu:DCGM diagnostic"]
    assert (diag["severity"], diag["nodes"]) == ("critical", ["node02", "node03"])
    assert diag["values"] == {
        "passed": ["node01"],
        "GPU 3 failed: Page Retirement/Row Remap (GPU 3 has uncorrectable memory errors)": [
            "node02"],
        "not run: dcgmi is not installed": ["node03"]}
    assert diag["advice"].startswith("drain node02: DCGM's diagnostic failed GPU 3; run "
                                     "`dcgmi diag -r 2 -i 3` there for the details; make "
                                     "`dcgmi diag -r 1` work on node03")
    node03 = document["nodes"][2]["fingerprint"]["gpus"]
    assert "error" not in node03 and node03["devices"][0]["pcie_width"] == "16"
    assert "idle" not in node03["devices"][0]


@pytest.fixture(scope="module")
def real_fingerprint() -> dict:
    """The fingerprint probe's answer for this machine, as a node would give it."""
    from clusterprep import probes
    source = probes.load("fingerprint")
    done = subprocess.run(
        ["bash", "-c", probes.command(source, sys.executable, isolated=False)],
        input=source.encode() + json.dumps({"shared": "/tmp", "checks": []}).encode(),
        capture_output=True, check=True)
    return json.loads(done.stdout.split(b"\n", 1)[1])


def gpu(index: int, **changes: str) -> dict:
    """A healthy, idle GPU as the probe reports it, with `changes`."""
    return {"index": str(index), "bus_id": f"00000000:{gpukit.BUSES[index]}:00.0",
            "name": gpukit.H100, "driver": "550.54.15", "persistence": "Enabled",
            "pstate": "P0", "ecc_mode": "Enabled", "ecc_volatile": "0", "ecc_aggregate": "0",
            "ecc_corrected_aggregate": "0", "retired_pending": None, "idle": "Active",
            "hw_slowdown": "Not Active", "hw_thermal_slowdown": "Not Active",
            "hw_power_brake_slowdown": "Not Active", "sw_thermal_slowdown": "Not Active",
            "pcie_gen": "5", "pcie_gen_max": "5", "pcie_width": "16", "pcie_width_max": "16",
            **changes}


def with_gpus(*devices: dict):
    def change(fingerprint: dict) -> None:
        fingerprint["gpus"] = {"count": len(devices), "models": [gpukit.H100],
                               "driver": "550.54.15", "devices": list(devices)}
    return change


def with_ib(rate: str = "400 Gb/sec (4X NDR)", firmware: str = "28.39.1002"):
    def change(fingerprint: dict) -> None:
        fingerprint["fabric"]["infiniband"] = [{"device": "mlx5_0", "firmware": firmware, "ports": [
            {"port": 1, "state": "ACTIVE", "phys_state": "LinkUp", "rate": rate,
             "link_layer": "InfiniBand"}]}]
    return change


def setting(path: str, value) -> callable:
    def change(fingerprint: dict) -> None:
        *keys, last = path.split("/")
        target = fingerprint
        for key in keys:
            target = target[key]
        target[last] = value
    return change


# (what all three nodes have, what node03 alone has instead, the finding, its severity, the
# start of its advice)
DIFFERENCES = [
    (None, setting("python/version", "3.9.0"), "python:version", "critical",
     "rebuild the env on node03 (`clusterprep up --only env`)"),
    (setting("nvcc", "12.1"), setting("nvcc", "12.4"), "nvcc:release", "critical",
     "make node03 find the same nvcc as the others (12.1)"),
    (None, setting("system/kernel", "5.4.0-1"), "system:kernel", "warning",
     "update node03 to the others' kernel"),
    (None, setting("limits/open_files", 1024), "limits:open files", "warning",
     "raise the open files limit on node03 to "),
    (None, setting("nccl/conf", {"/etc/nccl.conf": {"NCCL_IB_DISABLE": "1"}}),
     "nccl.conf:NCCL_IB_DISABLE", "warning", "make NCCL's config files (/etc/nccl.conf, "
     "~/.nccl.conf) on node03 set NCCL_IB_DISABLE like the others ((absent))"),
    (None, setting("nccl/library", {"path": "/e/lib/libnccl.so.2", "version": "2.18.1",
                                    "real_path": "/e/lib/libnccl.so.2.18.1", "how": "x"}),
     "nccl:library", "critical", "make node03 load the others' NCCL, (absent)"),
    (with_ib(), with_ib(rate="200 Gb/sec (4X HDR)"), "ib:mlx5_0 port 1", "critical",
     "mlx5_0 port 1 on node03 runs at 200 Gb/sec (4X HDR), the others at 400 Gb/sec (4X NDR): "
     "reseat or replace the cable"),
    (with_ib(), with_ib(firmware="28.36.1010"), "ib:mlx5_0 firmware", "warning",
     "update mlx5_0's firmware on node03 to the others' (28.39.1002) with mlxfwmanager"),
    (with_ib(), setting("env/NCCL_IB_HCA", "=mlx5_1"), "env:NCCL_IB_HCA", "critical",
     "set NCCL_IB_HCA (set in the environment) on node03 to devices it has with active ports "
     "(mlx5_0)"),
    (with_gpus(gpu(0)), with_gpus(gpu(0, persistence="Disabled")), "gpu:persistence mode",
     "warning", "turn persistence mode on on node03: `nvidia-smi -pm 1`"),
    (with_gpus(gpu(0)), with_gpus(gpu(0, hw_thermal_slowdown="Active")), "gpu:clock slowdown",
     "warning", "cool or power GPU 0 (00000000:18:00.0) on node03 properly"),
    (with_gpus(gpu(0)), with_gpus(gpu(0, remap_failure="Yes")),
     "gpu:row remap or page retirement", "critical",
     "drain node03 and have GPU 0 (00000000:18:00.0) replaced"),
    (with_gpus(gpu(0)), with_gpus(gpu(0, idle="Not Active", pcie_gen="3")), "gpu:PCIe link",
     "critical", "reseat GPU 0 (00000000:18:00.0) on node03 and check the slot's BIOS "
     "settings: its link runs at Gen3 of Gen5 under load"),
    (with_gpus(gpu(0)), with_gpus(gpu(0, ecc_aggregate="2")),
     "gpu:uncorrected ECC errors in the GPU's life", "warning",
     "watch GPU 0 (00000000:18:00.0) on node03"),
    (with_gpus(gpu(0)), setting("limits/shm_bytes", 64 * 2**20), "limits:/dev/shm bytes",
     "critical", "give node03 a larger /dev/shm"),
]


@pytest.mark.parametrize("common, odd, item, severity, advice", DIFFERENCES,
                         ids=[d[2] for d in DIFFERENCES])
def test_every_kind_of_difference_gets_its_severity_and_advice_naming_the_node(
        real_fingerprint, common, odd, item, severity, advice):
    from clusterprep.answers import read
    from clusterprep.check.facts import Fingerprint
    from clusterprep.check.fingerprint import items
    from clusterprep.check.findings import find_all
    from clusterprep.check.model import NodeState

    nodes = []
    for name in ("node01", "node02", "node03"):
        fingerprint = json.loads(json.dumps(real_fingerprint))
        if common:
            common(fingerprint)
        if name == "node03":
            odd(fingerprint)
        facts = read(Fingerprint, fingerprint)
        nodes.append(NodeState(name, name == "node01", items=items(facts),
                               fingerprint=fingerprint, facts=facts))
    found = {f.item: f for f in find_all(nodes)}
    assert list(found) == [item]
    assert (found[item].severity, found[item].nodes) == (severity, ["node03"])
    assert found[item].advice.startswith(advice), found[item].advice


def test_python_given_by_name_is_found_on_path_and_by_path_goes_first_on_it():
    from clusterprep.activation import interpreter_script
    assert interpreter_script("python3") == ""  # nothing like PATH=python3:... on the nodes
    assert interpreter_script("/opt/env/bin/python") == 'export PATH=/opt/env/bin:"$PATH"\n'
