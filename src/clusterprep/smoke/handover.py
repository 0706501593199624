"""Phase 5, hand-over: the hostfiles the launchers read, and the launch lines, with the
master address and port that the run proved.

- `hostfile`: one host per line, head first (the first host becomes the master address), for
  `colossalai run --hostfile` (its fetch_hostfile: blank lines skipped, the whole stripped line
  is the host, no comment syntax, a duplicate host an error), `pdsh -w ^FILE` and
  `clush --hostfile`.
- `hostfile.deepspeed`: `HOST slots=N` lines, for `deepspeed --hostfile` (its runner's
  _parse_hostfile wants `slots=` on every line and refuses a bare host); N is the node's GPU
  count, 1 on a node without GPUs.

The names are the nodes file's hosts, which every node resolved alike; `user@` is not part of
a hostfile entry.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from clusterprep.inventory import Node
from clusterprep.localfiles import write_atomically
from clusterprep.smoke.model import HandoverResult, Problem
from clusterprep.smoke.names import host_name

TRAINING = "TRAIN_SCRIPT [ARGS...]"


def hand_over(nodes: list[Node], master: str, port: int, nproc: dict[str, int],
              hostfile: Path) -> HandoverResult:
    hosts = [host_name(node) for node in nodes]
    path = hostfile.resolve()
    deepspeed = path.with_name(path.name + ".deepspeed")
    result = HandoverResult(hostfile=str(path), deepspeed_hostfile=str(deepspeed), hosts=hosts)
    twice = sorted({host for host in hosts if hosts.count(host) > 1})
    if twice:
        result.problems.append(Problem(
            ", ".join(twice), "the nodes file reaches these hosts under more than one login; "
            "a launcher's hostfile cannot list a host twice",
            "list each host once in the nodes file"))
    counts = [nproc[node.name] for node in nodes]
    result.colossalai = shlex.join([
        "colossalai", "run", "--nproc_per_node", str(counts[0]), "--hostfile", str(path),
        "--master_addr", master, "--master_port", str(port)]) + " " + TRAINING
    result.torchrun = [shlex.join([
        "torchrun", "--nnodes", str(len(nodes)), "--node_rank", str(rank), "--master_addr",
        master, "--master_port", str(port), "--nproc_per_node", str(count)]) + " " + TRAINING
        for rank, count in enumerate(counts)]
    result.deepspeed = shlex.join([
        "deepspeed", "--hostfile", str(deepspeed), "--master_addr", master,
        "--master_port", str(port)]) + " " + TRAINING
    if len(set(counts)) > 1:
        result.problems.append(Problem(
            "hostfile", "the nodes have different GPU counts ("
            + ", ".join(f"{node.name}: {n}" for node, n in zip(nodes, counts))
            + "), but colossalai run starts --nproc_per_node ranks on every node",
            "launch with deepspeed (its hostfile gives each node its own slots) or the "
            "per-node torchrun lines, or make the nodes' GPUs (and CUDA_VISIBLE_DEVICES) "
            "agree"))
    if not twice:
        write_atomically(path, "".join(host + "\n" for host in hosts).encode())
        write_atomically(deepspeed, "".join(f"{host} slots={count}\n"
                                            for host, count in zip(hosts, counts)).encode())
    return result
