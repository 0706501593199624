"""Phase 5, hand-over: the hostfile that `colossalai run` reads, and the launch lines, with the
master address and port that the run proved.

colossalai's hostfile: one host per line, head first (the first host becomes the master
address), blank lines skipped, no comment syntax, a duplicate host an error. The names are the
nodes file's hosts, which every node resolved alike; `user@` is not part of a hostfile entry.
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
    result = HandoverResult(hostfile=str(path), hosts=hosts)
    twice = sorted({host for host in hosts if hosts.count(host) > 1})
    if twice:
        result.problems.append(Problem(
            ", ".join(twice), "the nodes file reaches these hosts under more than one login; "
            "colossalai's hostfile cannot list a host twice",
            "list each host once in the nodes file"))
    counts = [nproc[node.name] for node in nodes]
    result.colossalai = shlex.join([
        "colossalai", "run", "--nproc_per_node", str(counts[0]), "--hostfile", str(path),
        "--master_addr", master, "--master_port", str(port)]) + " " + TRAINING
    result.torchrun = [shlex.join([
        "torchrun", "--nnodes", str(len(nodes)), "--node_rank", str(rank), "--master_addr",
        master, "--master_port", str(port), "--nproc_per_node", str(count)]) + " " + TRAINING
        for rank, count in enumerate(counts)]
    if len(set(counts)) > 1:
        result.problems.append(Problem(
            "hostfile", "the nodes have different GPU counts ("
            + ", ".join(f"{node.name}: {n}" for node, n in zip(nodes, counts))
            + "), but colossalai run starts --nproc_per_node ranks on every node",
            "launch with the per-node torchrun lines, or make the nodes' GPUs (and "
            "CUDA_VISIBLE_DEVICES) agree"))
    if not twice:
        write_atomically(path, "".join(host + "\n" for host in hosts).encode())
    return result
