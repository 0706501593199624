"""`weights sync`: send each node only what its cache lacks, through pipelined chains of nodes.

One check round trip per node finds what each node lacks (see `verify.check_caches`) and
whether it sees the staging cache at the head's path (the head writes a fresh token there; a
node that reads it back sees the same folder). The missing files then travel as one stream
down a chain of the nodes that need them (about S/B seconds for S bytes over links of B
bytes/s, whatever the number of nodes): the first node reads the stream from the staging
cache itself when it sees it (the head only orchestrates), else the head sends it on its SSH
connection. Nodes pass the bytes on over TCP connections that prove a per-transfer secret; a
failed, frozen or unreachable node is cut out and the chain re-forms around it in the same run
(see `transfer`). Every node hashes each file as it writes it aside and gives it its final
name only when the hash matches (see `probes/hfreceive.py`).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

from clusterprep.fleet import Fleet
from clusterprep.interrupts import acknowledge
from clusterprep.localfiles import write_atomically
from clusterprep.weights import chain
from clusterprep.weights.manifest import Manifest
from clusterprep.weights.progress import NodeBytesListener
from clusterprep.weights.receiver import NodeSync, Target
from clusterprep.weights.record import aside_path
from clusterprep.weights.transfer import Transfer
from clusterprep.weights.verify import NodeCache, check_caches

TOKEN_FILE = ".clusterprep-sync-token"


@dataclass
class SyncReport:
    manifest: Manifest
    nodes: list[NodeSync]
    mode: str | None = None          # chain.CHAIN, CHAINS, STAR; None when nothing had to move
    chains: list[list[str]] = field(default_factory=list)   # as planned, first node first
    staging_readers: list[str] = field(default_factory=list)  # nodes that saw the staging
    reforms: list[str] = field(default_factory=list)        # nodes cut out, and what followed
    broken_links: list[str] = field(default_factory=list)   # links that could not carry it
    planned_bytes: int = 0           # the stream: every file some node lacks, once
    source_bytes: int = 0            # what was read from the staging cache to carry it
    seconds: float = 0.0
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        return not self.interrupted and all(n.ok for n in self.nodes)


async def sync(
    fleet: Fleet,
    manifest: Manifest,
    *,
    listener: NodeBytesListener | None = None,
    chains: int = 1,
    star: bool = False,
    from_head: bool = False,
    full: bool = False,
    bwlimit: float | None = None,
    timeout: float | None = None,
) -> SyncReport:
    """Make every node's hub cache hold the manifest's files and links; send only what differs.

    `chains`: how many chains share the nodes (`star`: one per node). `from_head`: the head
    sends the stream even to nodes that see the staging. `full`: hash every file already on the
    nodes (else a file is trusted when its stat matches clusterprep's stamp of it). `bwlimit`:
    most bytes/s each chain reads from the staging. A receiver silent for the fleet's
    `hung_after` seconds (it reports twice a second) is cut out as hung.
    """
    started = time.monotonic()
    listener = listener or NodeBytesListener()
    token = None if from_head else _write_token(manifest.root)
    states, bad, interrupted = await check_caches(fleet, manifest, for_sync=True, full=full,
                                                  staging_token=token, timeout=timeout)
    report = SyncReport(manifest, [_from_state(state) for state in states],
                        staging_readers=[s.node for s in states if s.sees_staging],
                        interrupted=interrupted)
    targets = _targets(fleet, manifest, states, bad, report.nodes)
    if targets and not interrupted:
        count = chain.chain_count(sum(t.wants_files for t in targets), chains, star)
        transfer = Transfer(fleet, manifest, targets, listener, secret=secrets.token_hex(32),
                            chains=count, staging_readers=set(report.staging_readers),
                            bwlimit=bwlimit, stall=fleet.hung_after)
        try:
            await transfer.run()
        except asyncio.CancelledError:
            # Ctrl-C: the transfer marked its unfinished nodes; report what was done.
            report.interrupted = fleet.interrupted = True
            acknowledge()
        report.chains, report.mode = transfer.chains, chain.mode(transfer.chains)
        report.reforms, report.broken_links = transfer.reforms, transfer.broken_links
        report.planned_bytes, report.source_bytes = transfer.total, transfer.source_bytes
    report.seconds = time.monotonic() - started
    return report


def _write_token(staging: Path) -> tuple[str, str] | None:
    """A fresh token in the staging cache, for the nodes to prove they see this very folder;
    None when the head cannot write there (then the head sends the stream itself)."""
    path, value = staging / TOKEN_FILE, secrets.token_hex(16)
    try:
        write_atomically(path, value.encode(), aside=aside_path(path))
    except OSError:
        return None
    return str(path), value


def _from_state(state: NodeCache) -> NodeSync:
    return NodeSync(state.node, state.cache, error=state.error)


def _targets(fleet: Fleet, manifest: Manifest, states: list[NodeCache],
             bad: dict[str, list[str]], outcomes: list[NodeSync]) -> list[Target]:
    by_path = manifest.by_path()
    targets = []
    for node, state, outcome in zip(fleet.inventory.nodes, states, outcomes):
        if state.error is None and bad.get(node.name):
            entries = [by_path[path] for path in bad[node.name]]
            outcome.files_needed = len(entries)
            targets.append(Target(node, state.cache or "", entries, outcome))
    return targets

