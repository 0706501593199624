"""`clusterprep weights stage|sync|verify` on the simulated cluster, with a staging cache in the
real hub layout (tests/hubcache.py: the Hub itself cannot be reached from tests)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import faultkit
import hubcache
from polls import until
from clusterprep import probes
from clusterprep.fleet import Fleet, SshOptions
from clusterprep.fleet.choose import backend_for
from clusterprep.inventory import parse_nodes_file
from clusterprep.weights.manifest import build as build_manifest
from clusterprep.weights.pace import PACE, Pace
from clusterprep.weights.progress import NodeBytesListener
from clusterprep.weights.spec import parse_repo_option
from clusterprep.weights.verify import verify
from hubserver import COMMIT as HUB_COMMIT
from hubserver import Hub

DEFAULT_CACHE = Path(".cache/huggingface/hub")
REPO_OPTIONS = ["--repo", "org/alpha", "--repo", "org/alpha@v1", "--repo", "org/beta"]


@pytest.fixture
def staging(tmp_path: Path) -> Path:
    return hubcache.build_staging(tmp_path / "shared-hf-hub")


@pytest.fixture
def nodes(cluster4):
    """cluster4 with empty Hugging Face caches, emptied again (and .bashrc restored) after."""
    bashrcs = {node.name: (node.home / ".bashrc").read_text() for node in cluster4.nodes}

    def wipe() -> None:
        for node in cluster4.nodes:
            for folder in (".cache/huggingface", ".cache/clusterprep", "hf-elsewhere"):
                shutil.rmtree(node.home / folder, ignore_errors=True)
            (node.home / ".bashrc").write_text(bashrcs[node.name])

    wipe()
    yield cluster4
    wipe()


def weights(cli, sim, action: str, staging: Path, *extra: str, timeout: float = 60):
    return cli("weights", action, "-n", str(sim.nodes_file), "-F", str(sim.ssh_config),
               "--staging", str(staging), *REPO_OPTIONS, *extra, timeout=timeout)


def tree(root: Path) -> dict[str, tuple[str, str]]:
    """Every file and link under root: relative path -> ("link", target) or ("file", sha256)."""
    found = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = Path(folder) / name
            rel = str(path.relative_to(root))
            if path.is_symlink():
                found[rel] = ("link", os.readlink(path))
            else:
                found[rel] = ("file", hashlib.sha256(path.read_bytes()).hexdigest())
    return found


def staged_tree(staging: Path) -> dict[str, tuple[str, str]]:
    return {path: what for path, what in tree(staging).items()
            if path.startswith("models--")}


def test_sync_makes_every_cache_byte_identical_to_staging_with_links_kept(cli, nodes, staging):
    result = weights(cli, nodes, "sync", staging, "--json")
    assert result.exit_code == 0, result.stdout + result.stderr
    report = result.json()
    assert report["mode"] == "chain"
    expected = staged_tree(staging)
    for node in nodes.nodes:
        cache = node.home / DEFAULT_CACHE
        assert tree(cache) == expected, node.name
        assert not (cache / ".locks").exists()
        assert not (node.home / ".cache/huggingface/token").exists()
    # Links stay relative links into blobs/, at every depth.
    link = (nodes.nodes[3].home / DEFAULT_CACHE / "models--org--alpha/snapshots" /
            hubcache.ALPHA_MAIN / "vae/diffusion/weights.bin")
    assert os.readlink(link).startswith("../../../../blobs/")

    again = weights(cli, nodes, "sync", staging, "--json")
    assert again.exit_code == 0, again.stderr
    assert again.json()["mode"] is None
    assert all(n["files_needed"] == 0 for n in again.json()["nodes"])


def test_a_node_whose_hf_home_points_elsewhere_gets_its_cache_there(cli, nodes, staging):
    node = nodes.node("node03")
    bashrc = node.home / ".bashrc"
    # Before the interactive-only guard, as a cluster's ssh commands (and launchers) see it.
    bashrc.write_text("export HF_HOME=/root/hf-elsewhere\n" + bashrc.read_text())

    result = weights(cli, nodes, "sync", staging, "--json")

    assert result.exit_code == 0, result.stderr
    by_node = {n["node"]: n for n in result.json()["nodes"]}
    assert by_node["node03"]["cache"] == "/root/hf-elsewhere/hub"
    assert tree(node.home / "hf-elsewhere/hub") == staged_tree(staging)
    assert not (node.home / DEFAULT_CACHE).exists()
    verify = weights(cli, nodes, "verify", staging, "--json")
    assert verify.exit_code == 0, verify.stdout


def corrupt_in_place(path: Path) -> None:
    """Bytes changed in the middle of a file, its size and mtime kept: only a hash, or a ctime
    that no longer matches clusterprep's stamp, can tell."""
    before = path.stat()
    with open(path, "r+b") as f:
        f.seek(1000)
        f.write(b"bit rot")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_size == before.st_size


def test_verify_names_a_deleted_and_a_corrupted_blob_and_sync_repairs_them(cli, nodes, staging):
    assert weights(cli, nodes, "sync", staging).exit_code == 0
    alpha = "models--org--alpha/blobs/"
    main_model = hubcache.blob_name(hubcache.pseudo_random("alpha-main", 3 * hubcache.MB))
    vae = hubcache.blob_name(hubcache.pseudo_random("alpha-vae", 2 * hubcache.MB + 123))
    (nodes.node("node02").home / DEFAULT_CACHE / alpha / main_model).unlink()
    corrupt_in_place(nodes.node("node04").home / DEFAULT_CACHE / alpha / vae)

    result = weights(cli, nodes, "verify", staging, "--json")

    assert result.exit_code == 1
    states = {(n["node"], r["repo"]): r for n in result.json()["nodes"] for r in n["repos"]}
    assert states[("node02", "org/alpha")]["missing"] == [f"blobs/{main_model}"]
    assert states[("node02", "org/alpha")]["corrupt"] == []
    assert [c["path"] for c in states[("node04", "org/alpha")]["corrupt"]] == [f"blobs/{vae}"]
    assert states[("node04", "org/alpha")]["missing"] == []
    complete = {key for key, state in states.items() if state["complete"]}
    assert complete == set(states) - {("node02", "org/alpha"), ("node04", "org/alpha")}

    repair = weights(cli, nodes, "sync", staging, "--json")
    assert repair.exit_code == 0, repair.stderr
    sent = {n["node"]: n["files_written"] for n in repair.json()["nodes"]}
    assert sent == {"node01": 0, "node02": 1, "node03": 0, "node04": 1}
    assert weights(cli, nodes, "verify", staging, "--full").exit_code == 0


def test_sync_full_repairs_what_a_failing_disk_changed_behind_the_stamps(cli, nodes, staging):
    assert weights(cli, nodes, "sync", staging).exit_code == 0
    node = nodes.node("node03")
    blob = next((node.home / DEFAULT_CACHE / "models--org--beta/blobs").glob("?" * 64))
    corrupt_in_place(blob)
    # A disk that changes bytes changes no ctime: the stamp is made to match the file again.
    stamps_file = node.home / ".cache/clusterprep/weights-stamps.json"
    stamps = json.loads(stamps_file.read_text())
    st = blob.stat()
    for stamp in stamps["/root/.cache/huggingface/hub"].values():
        if stamp[3] == st.st_ino:
            stamp[:4] = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
    stamps_file.write_text(json.dumps(stamps))

    trusting = weights(cli, nodes, "sync", staging, "--json")
    assert trusting.json()["mode"] is None  # the stamps vouch for it: not hashed
    full = weights(cli, nodes, "sync", staging, "--json", "--full")

    assert full.exit_code == 0, full.stderr
    assert {n["node"]: n["files_written"] for n in full.json()["nodes"]}["node03"] == 1
    assert weights(cli, nodes, "verify", staging, "--full").exit_code == 0


def test_verify_full_hashes_what_sizes_cannot_see_and_reports_extra_revisions(cli, nodes,
                                                                             staging):
    assert weights(cli, nodes, "sync", staging).exit_code == 0
    node = nodes.node("node01")
    hubcache.add_revision(node.home / DEFAULT_CACHE, "org/beta", None, "c" * 40,
                          {"old.bin": b"an older revision\n"})
    result = weights(cli, nodes, "verify", staging, "--json", "--full")
    assert result.exit_code == 0
    beta = next(r for n in result.json()["nodes"] if n["node"] == "node01"
                for r in n["repos"] if r["repo"] == "org/beta")
    assert beta["extra_revisions"] == ["c" * 40]


class HashingSeen(NodeBytesListener):
    """What a terminal's progress bars would be told."""

    def __init__(self) -> None:
        self.plan: dict[str, int] = {}
        self.last: dict[str, int] = {}
        self.done: set[str] = set()

    def planned(self, nodes: dict[str, int], total_bytes: int) -> None:
        self.plan = nodes

    def advanced(self, node: str, done_bytes: int) -> None:
        self.last[node] = done_bytes

    def finished(self, node: str) -> None:
        self.done.add(node)


def test_verify_full_tells_how_far_each_nodes_hashing_has_got(cli, nodes, staging,
                                                              monkeypatch, tmp_path):
    # A full verify of a large cache hashes for minutes on every node: its progress bars are
    # fed by what each node reports as it hashes.
    assert weights(cli, nodes, "sync", staging).exit_code == 0
    monkeypatch.setenv("HOME", str(tmp_path))  # the head's ssh -G cache, as the cli fixture
    repos = tuple(parse_repo_option(o) for o in REPO_OPTIONS if o != "--repo")
    manifest = build_manifest(staging, repos)
    seen = HashingSeen()

    async def full_verify():
        options = SshOptions(config_file=str(nodes.ssh_config))
        inventory = parse_nodes_file(nodes.nodes_file)
        async with Fleet(inventory, backend_for(inventory, options)) as fleet:
            return await verify(fleet, manifest, full=True, listener=seen)

    report = asyncio.run(full_verify())
    assert report.ok
    size = sum(entry.size for entry in manifest.files)
    names = [node.name for node in nodes.nodes]
    assert seen.plan == dict.fromkeys(names, size)
    assert seen.last == dict.fromkeys(names, size)
    assert seen.done == set(names)


def probes_running(sim) -> dict[str, list[str]]:
    """The clusterprep probes (receivers, the lock's holder...) still running on each node."""
    return {node.name: [line for line in node.run("ps -eo args").stdout.splitlines()
                        if "exec(compile(sys.stdin" in line] for node in sim.nodes}


@pytest.fixture
def slow_sync(cli, nodes, staging):
    """Starts `weights sync --json` at 3 MB/s (11.5 MB: about 4 s, time enough to interrupt
    it) and returns it (as `cli.start` gives it) once some node, or the node `writing`, writes
    a file. Whatever the test does, the sync is over when the test is."""
    started = []

    def start(*extra: str, writing=None):
        sync = cli.start("weights", "sync", "-n", str(nodes.nodes_file), "-F",
                         str(nodes.ssh_config), "--staging", str(staging), *REPO_OPTIONS,
                         "--bwlimit", "3", "--json", *extra)
        started.append(sync)
        watched = [node.home / DEFAULT_CACHE for node in ([writing] if writing else nodes.nodes)]
        deadline = time.monotonic() + 30
        while not any(p.name.endswith(".clusterprep-partial") and p.stat().st_size > 0
                      for cache in watched if cache.exists() for p in cache.rglob("*")):
            assert time.monotonic() < deadline, "the sync never started writing"
            assert sync.poll() is None, "the sync ended before it wrote anything"
            time.sleep(0.02)
        return sync

    yield start
    for sync in started:
        if sync.poll() is None:
            sync.kill()
        sync.communicate()


def test_a_sync_killed_half_way_leaves_no_partial_file_under_a_final_name(cli, nodes, staging,
                                                                           slow_sync):
    sync = slow_sync()
    sync.send_signal(signal.SIGKILL)
    sync.communicate()
    until(lambda: not any(probes_running(nodes).values()),
          "the nodes see their head go (the cluster lock ends its commands there)")
    caches = [node.home / DEFAULT_CACHE for node in nodes.nodes]
    expected = staged_tree(staging)

    for cache in caches:  # what a killed receiver began stays aside, under its partial name
        for path, what in tree(cache).items():
            assert path.endswith(".clusterprep-partial") or expected[path] == what, \
                f"{path} is under its final name but not whole"
    assert any(tree(cache) != expected for cache in caches), \
        "the sync finished before it was killed: nothing was tested"

    assert weights(cli, nodes, "sync", staging).exit_code == 0
    assert weights(cli, nodes, "verify", staging, "--full").exit_code == 0
    for cache in caches:
        assert tree(cache) == expected


def test_an_unreachable_node_is_named_and_the_others_complete(cli, make_cluster, staging):
    sim = make_cluster(3)
    sim.node("node02").stop()

    result = weights(cli, sim, "sync", staging, "--json")

    assert result.exit_code == 1
    by_node = {n["node"]: n for n in result.json()["nodes"]}
    assert by_node["node02"]["error"]["kind"] == "refused"
    assert by_node["node01"]["ok"] and by_node["node03"]["ok"]
    for name in ("node01", "node03"):
        assert tree(sim.node(name).home / DEFAULT_CACHE) == staged_tree(staging)
    human = weights(cli, sim, "sync", staging)
    assert "node02" in human.stderr and "node02" in human.stdout


def test_the_star_sends_the_same_bytes_from_the_head(cli, nodes, staging):
    result = weights(cli, nodes, "sync", staging, "--json", "--star")
    assert result.exit_code == 0, result.stderr
    assert result.json()["mode"] == "star"
    for node in nodes.nodes:
        assert tree(node.home / DEFAULT_CACHE) == staged_tree(staging)


def test_huggingface_hub_loads_a_synced_file_by_repo_id_offline(cli, nodes, staging):
    assert weights(cli, nodes, "sync", staging).exit_code == 0
    # The nodes' own Python lacks huggingface_hub, so this Python reads node03's cache
    # folder (byte for byte what node03 holds) with the Hub switched off.
    cache = nodes.node("node03").home / DEFAULT_CACHE
    code = (
        "from huggingface_hub import hf_hub_download as get\n"
        "print(open(get('org/alpha', 'vae/diffusion/weights.bin'), 'rb').read()[:16].hex())\n"
        "print(open(get('org/alpha', 'model.safetensors', revision='v1'), 'rb').read()[:16].hex())\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_HUB_CACHE=str(cache), HF_HUB_OFFLINE="1")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [
        hubcache.pseudo_random("alpha-vae", 16).hex(),
        hubcache.pseudo_random("alpha-v1", 16).hex(),
    ]


def test_stage_from_the_heads_own_cache_copies_revisions_but_no_token(cli, tmp_path):
    hf_home = tmp_path / "hf-home"
    hubcache.build_staging(hf_home / "hub")
    (hf_home / "token").write_text("hf_secret_token_value")
    target = tmp_path / "shared" / "hf-hub"

    first = cli("weights", "stage", "--from-cache", "--shared-dir", str(tmp_path / "shared"),
                *REPO_OPTIONS, "--json", env={"HF_HOME": str(hf_home)})

    assert first.exit_code == 0, first.stdout + first.stderr
    assert [r["action"] for r in first.json()["repos"]] == ["copied", "copied", "copied"]
    assert staged_tree(target) == staged_tree(hf_home / "hub")
    assert not (target / "token").exists() and not (target.parent / "token").exists()
    assert "hf_secret_token_value" not in first.stdout + first.stderr
    again = cli("weights", "stage", "--from-cache", "--staging", str(target), *REPO_OPTIONS,
                "--json", env={"HF_HOME": str(hf_home)})
    assert [r["action"] for r in again.json()["repos"]] == ["present"] * 3


def test_sync_names_a_repo_that_is_not_staged(cli, nodes, staging):
    result = cli("weights", "sync", "-n", str(nodes.nodes_file), "-F", str(nodes.ssh_config),
                 "--staging", str(staging), "--repo", "org/gamma")
    assert result.exit_code == 2
    assert "org/gamma@main is not staged" in result.stderr


def test_ctrl_c_during_a_sync_reports_what_was_done_and_leaves_no_partial_file(
        cli, nodes, staging, slow_sync):
    sync = slow_sync()
    time.sleep(1)  # nodes report twice a second: the head has heard of some bytes by now
    sync.send_signal(signal.SIGINT)
    interrupted = cli.finish(sync, timeout=30)
    assert interrupted.exit_code == 130, interrupted.stderr
    document = interrupted.json()
    assert document["interrupted"] is True and document["ok"] is False
    assert 0 < document["sent_bytes"] < document["planned_bytes"]  # what was sent, not planned
    until(lambda: not any(probes_running(nodes).values()), "the nodes' receivers end")
    expected = staged_tree(staging)
    for cache in (node.home / DEFAULT_CACHE for node in nodes.nodes):
        for path, what in tree(cache).items():
            assert expected.get(path) == what or path.endswith(".clusterprep-partial"), path
    assert weights(cli, nodes, "sync", staging).exit_code == 0
    assert weights(cli, nodes, "verify", staging, "--full").exit_code == 0


def test_stage_downloads_with_huggingface_hub_using_the_token_it_never_shows(cli, tmp_path,
                                                                            nodes):
    token = "hf_" + "k" * 34
    files = {"config.json": b'{"hidden_size": 8}\n', "model.safetensors": os.urandom(300_000)}
    staging = tmp_path / "staged"
    with Hub(files) as hub:
        env = {"HF_ENDPOINT": hub.url, "HF_TOKEN": token}
        first = cli("weights", "stage", "--staging", str(staging), "--repo", hub.repo, "--json",
                    env=env)
        again = cli("weights", "stage", "--staging", str(staging), "--repo", hub.repo, env=env)
    assert first.exit_code == 0, first.stdout + first.stderr
    assert [r["action"] for r in first.json()["repos"]] == ["downloaded"]
    assert again.exit_code == 0 and "present" in again.stdout  # complete: nothing fetched
    assert f"Bearer {token}" in hub.authorizations  # the token reached the Hub...
    for output in (first.stdout, first.stderr, again.stdout, again.stderr):
        assert token not in output  # ...and nowhere else
    assert not [p for p in staging.rglob("*") if p.is_file() and token.encode() in p.read_bytes()]

    synced = cli("weights", "sync", "-n", str(nodes.nodes_file), "-F", str(nodes.ssh_config),
                 "--staging", str(staging), "--repo", hub.repo)
    assert synced.exit_code == 0, synced.stdout + synced.stderr
    snapshot = nodes.nodes[1].home / DEFAULT_CACHE / "models--org--served" / "snapshots"
    assert (snapshot / HUB_COMMIT / "model.safetensors").read_bytes() == \
        files["model.safetensors"]


def test_an_unreachable_hub_fails_the_repo_with_a_clear_message(cli, tmp_path):
    result = cli("weights", "stage", "--staging", str(tmp_path / "staged"), "--repo", "org/x",
                 env={"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_ETAG_TIMEOUT": "2"})
    assert result.exit_code == 1
    assert "cannot download org/x@main" in result.stdout and "Traceback" not in result.stderr


# -- faults: real kills, a frozen node, a full disk -------------------------------------------

def receiver_pid(node) -> int:
    """Host-side id of the node's weights receiver (its command reads that probe's length)."""
    reads = b"read(%d)" % len(probes.load("hfreceive").encode())
    found = [pid for pid in faultkit.node_processes(node)
             if reads in Path(f"/proc/{pid}/cmdline").read_bytes()]
    assert len(found) == 1, f"{node.name} runs {len(found)} receivers"
    return found[0]


def node_tree(node) -> dict[str, tuple[str, str]]:
    """`tree` of the node's default cache, as the node itself sees it (its own mounts)."""
    code = ("import hashlib, json, os\n"
            "root = os.path.expanduser('~/.cache/huggingface/hub'); found = {}\n"
            "for folder, _, names in os.walk(root):\n"
            "    for name in names:\n"
            "        p = os.path.join(folder, name); rel = os.path.relpath(p, root)\n"
            "        found[rel] = (['link', os.readlink(p)] if os.path.islink(p) else\n"
            "                      ['file', hashlib.sha256(open(p, 'rb').read()).hexdigest()])\n"
            "print(json.dumps(found))\n")
    done = node.run(f"python3 -c {shlex.quote(code)}", check=True)
    return {path: tuple(what) for path, what in json.loads(done.stdout).items()}


def assert_nothing_half_written_has_a_final_name(node, staging: Path) -> None:
    expected = staged_tree(staging)
    for path, what in node_tree(node).items():
        assert path.endswith(".clusterprep-partial") or expected.get(path) == what, \
            f"{node.name}: {path} is under its final name but not whole"


def finish(cli, sync) -> dict:
    result = cli.finish(sync, timeout=90)
    assert "Traceback" not in result.stderr, result.stderr
    return result.json()


def hold_with_silent_clients(node, port: int, count: int) -> list[socket.socket]:
    """Connections to a node's listener that never say a word."""
    return [socket.create_connection((node.address, port)) for _ in range(count)]


def listener_port(node) -> int:
    """The port of the weights listener on the node's address (not its sshd)."""
    for _ in range(200):
        with open("/proc/net/tcp") as f:
            for line in list(f)[1:]:
                local, state = line.split()[1], line.split()[3]
                address, port = local.split(":")
                if (state == "0A" and int(port, 16) != node.port
                        and socket.inet_ntoa(bytes.fromhex(address)[::-1]) == node.address):
                    return int(port, 16)
        time.sleep(0.05)
    raise AssertionError(f"{node.name} has no weights listener")


def test_a_receiver_killed_mid_chain_is_routed_around_and_the_others_finish(
        nodes, staging, cli, slow_sync):
    sync = slow_sync(writing=nodes.node("node02"))
    # node03's listener is held by clients that never authenticate, as a port scanner would:
    # node01 must still get through to it when node02 goes.
    idle = hold_with_silent_clients(nodes.node("node03"), listener_port(nodes.node("node03")), 8)
    os.kill(receiver_pid(nodes.node("node02")), signal.SIGKILL)

    report = finish(cli, sync)
    for client in idle:
        client.close()

    assert report["ok"] is False
    by_node = {n["node"]: n for n in report["nodes"]}
    assert by_node["node02"]["error"]["kind"] == "probe-failed"  # its receiver died silently
    for name in ("node01", "node03", "node04"):
        assert by_node[name]["ok"], (name, report)
        assert tree(nodes.node(name).home / DEFAULT_CACHE) == staged_tree(staging), name
    assert any("node02 cut out" in r and "node01 passes the stream on to node03" in r
               for r in report["reforms"]), report["reforms"]
    assert report["broken_links"] == []
    assert_nothing_half_written_has_a_final_name(nodes.node("node02"), staging)
    again = weights(cli, nodes, "sync", staging, "--json")
    assert again.exit_code == 0, again.stdout
    assert [n["node"] for n in again.json()["nodes"] if n["files_written"]] == ["node02"]
    assert tree(nodes.node("node02").home / DEFAULT_CACHE) == staged_tree(staging)


def test_the_first_nodes_ssh_session_killed_the_head_feeds_the_next_node_from_where_it_was(
        nodes, staging, cli, slow_sync):
    # --from-head: the head itself sends the stream, to node01 first.
    sync = slow_sync("--from-head", writing=nodes.node("node02"))
    head = nodes.node("node01")
    assert faultkit.kill_sessions(head) >= 1

    report = finish(cli, sync)

    by_node = {n["node"]: n for n in report["nodes"]}
    assert by_node["node01"]["error"]["kind"] == "disconnected", by_node["node01"]
    for name in ("node02", "node03", "node04"):
        assert by_node[name]["ok"], (name, report)
        assert tree(nodes.node(name).home / DEFAULT_CACHE) == staged_tree(staging), name
    assert any(r.startswith("node01 cut out (disconnected): node02 gets the stream from the "
                            "head") for r in report["reforms"]), report["reforms"]
    assert_nothing_half_written_has_a_final_name(head, staging)
    assert weights(cli, nodes, "sync", staging).exit_code == 0
    assert weights(cli, nodes, "verify", staging, "--full").exit_code == 0


def test_a_frozen_node_is_cut_out_as_hung_and_the_chain_goes_on_without_it(
        nodes, staging, cli, slow_sync):
    sync = slow_sync("--hung-after", "3", writing=nodes.node("node03"))
    with faultkit.frozen(nodes.node("node03")):  # every process of the node, its sshd included
        report = finish(cli, sync)

    by_node = {n["node"]: n for n in report["nodes"]}
    assert by_node["node03"]["error"]["kind"] == "hung", by_node["node03"]
    assert "for 3 s" in by_node["node03"]["error"]["message"]
    for name in ("node01", "node02", "node04"):
        assert by_node[name]["ok"], (name, report)
        assert tree(nodes.node(name).home / DEFAULT_CACHE) == staged_tree(staging), name
    assert any("node02 passes the stream on to node04" in r for r in report["reforms"])
    assert_nothing_half_written_has_a_final_name(nodes.node("node03"), staging)
    assert weights(cli, nodes, "sync", staging).exit_code == 0
    assert weights(cli, nodes, "verify", staging, "--full").exit_code == 0


def test_a_full_disk_mid_chain_names_its_files_and_space_and_costs_no_other_node(
        cli, nodes, staging):
    full = nodes.node("node02")
    full.run("mkdir -p /root/.cache/huggingface && "
             "mount -t tmpfs -o size=1m tmpfs /root/.cache/huggingface", check=True)
    try:
        result = weights(cli, nodes, "sync", staging, "--json")
        human = weights(cli, nodes, "sync", staging)
        assert_nothing_half_written_has_a_final_name(full, staging)
    finally:
        full.run("umount /root/.cache/huggingface", check=True)

    assert result.exit_code == 1
    by_node = {n["node"]: n for n in result.json()["nodes"]}
    node02 = by_node["node02"]
    assert node02["disk_full"] and node02["error"] is None
    assert node02["free_bytes_at_start"] <= 1 << 20
    blob = next(f for f in node02["failed"] if f["path"].endswith(
        hubcache.blob_name(hubcache.pseudo_random("beta-te", 4 * hubcache.MB + 7))))
    assert blob["where"] == "/root/.cache/huggingface/hub/models--org--beta/blobs"
    assert 0 < blob["unwritten_bytes"] <= 4 * hubcache.MB + 7
    assert "No space left on device" in blob["reason"]
    for name in ("node01", "node03", "node04"):
        assert by_node[name]["ok"], by_node[name]
        assert tree(nodes.node(name).home / DEFAULT_CACHE) == staged_tree(staging), name
    assert "disk full: /root/.cache/huggingface/hub had" in human.stdout
    assert "make room in the caches of node02" in human.stderr
    assert weights(cli, nodes, "sync", staging).exit_code == 0
    assert weights(cli, nodes, "verify", staging, "--full").exit_code == 0


def test_the_staging_is_read_only_by_nodes_that_prove_they_see_it(cli, nodes, staging):
    # node01 has its own folder at the staging's path (as a node without the shared mount
    # would): it cannot read the staging, so node02 leads the chain and reads it.
    nodes.node("node01").run(f"mount -t tmpfs tmpfs {shlex.quote(str(staging))}", check=True)
    try:
        result = weights(cli, nodes, "sync", staging, "--json")
    finally:
        nodes.node("node01").run(f"umount {shlex.quote(str(staging))}", check=True)

    assert result.exit_code == 0, result.stdout + result.stderr
    report = result.json()
    assert report["staging_readers"] == ["node02", "node03", "node04"]
    assert report["chains"] == [["node02", "node01", "node03", "node04"]]
    for node in nodes.nodes:
        assert tree(node.home / DEFAULT_CACHE) == staged_tree(staging), node.name


def test_two_chains_share_the_nodes_and_each_reads_the_staging(cli, nodes, staging):
    result = weights(cli, nodes, "sync", staging, "--json", "--chains", "2")
    assert result.exit_code == 0, result.stdout + result.stderr
    report = result.json()
    assert report["mode"] == "chains"
    assert report["chains"] == [["node01", "node02"], ["node03", "node04"]]
    assert report["sent_bytes"] == 2 * report["planned_bytes"]  # each chain read it once
    for node in nodes.nodes:
        assert tree(node.home / DEFAULT_CACHE) == staged_tree(staging), node.name


class ChainMember:
    """What the head knows of a node in a chain when it judges the chain's pace."""

    def __init__(self, name: str) -> None:
        self.name, self.position, self.waited = name, 0, {"send": 0.0, "disk": 0.0}
        self.upstream = self.downstream = None
        self.cut = self.detached = False
        self.running = True


class ChainUnderJudgement:
    """A chain a -> b -> c -> d moving 1 MB/s, judged every PACE seconds."""

    def __init__(self, total: int = 10 ** 9) -> None:
        self.nodes = {name: ChainMember(name) for name in "abcd"}
        self.chain = list(self.nodes.values())
        for upstream, downstream in zip(self.chain, self.chain[1:]):
            upstream.downstream, downstream.upstream = downstream, upstream
        self.total, self.now = total, 0.0
        self.judge = Pace()
        self.judge.at = self.now
        self.window({})  # the first judgement only samples

    def window(self, shares: dict[str, dict[str, float]]) -> list[str]:
        """One window in which each node's stream waited these shares of it, by cause; the
        nodes judged as holding the chain back."""
        self.now += PACE
        for member in self.chain:
            member.position += int(PACE * 1e6)
            for cause, share in shares.get(member.name, {}).items():
                member.waited[cause] += share * PACE
        return [node.name for node, _ in self.judge.laggards(self.chain, self.total, self.now)]

    def detach(self, name: str) -> None:
        node = self.nodes[name]
        node.detached = True
        node.upstream.downstream, node.downstream.upstream = node.downstream, node.upstream
        self.judge.pause(self.now)
        self.window({})


def test_a_chain_of_equal_nodes_has_no_laggard():
    chain = ChainUnderJudgement()
    equal = {"a": {"send": 0.9}, "b": {"send": 0.8}, "c": {"send": 0.85}}  # d: the last
    assert [chain.window(equal) for _ in range(5)] == [[]] * 5


def test_a_node_its_predecessor_waits_on_holds_the_chain_back_when_it_lasts():
    slow_b = {"a": {"send": 0.95}, "b": {"send": 0.05}, "c": {"send": 0.02}}
    chain = ChainUnderJudgement()
    assert [chain.window(slow_b) for _ in range(3)] == [[], [], ["b"]]
    hiccup = ChainUnderJudgement()
    assert [hiccup.window(w) for w in (slow_b, slow_b, {}, slow_b)] == [[]] * 4


def test_a_node_that_waits_on_whichever_node_follows_it_is_its_own_slow_way_out():
    chain = ChainUnderJudgement()
    b_waits = {"a": {"send": 0.95}, "b": {"send": 0.97}, "c": {"send": 0.01}}
    assert [chain.window(b_waits) for _ in range(3)][-1] == ["c"]
    chain.detach("c")
    b_waits_again = {"a": {"send": 0.95}, "b": {"send": 0.97}}  # on d now
    assert chain.window(b_waits_again) == [] and chain.window(b_waits_again) == []
    assert chain.window(b_waits_again) == ["b"]


def test_a_node_waiting_on_its_disk_holds_the_chain_back_unless_nearly_done():
    busy_disk = {"a": {"send": 0.95}, "b": {"send": 0.95}, "c": {"disk": 0.95}}
    chain = ChainUnderJudgement()
    assert [chain.window(busy_disk) for _ in range(3)][-1] == ["c"]
    nearly_done = ChainUnderJudgement(total=int(12e6))  # 6 s left at the third judgement
    assert [nearly_done.window(busy_disk) for _ in range(3)] == [[], [], []]
