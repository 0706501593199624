"""Phase 2, rendezvous: the head can listen on the master port, and every node (the head too)
reaches it there through the master address, from its own side.

One conversation per node (`probes/smoke_rendezvous.py`): the head listens first, then every
node dials; a dial counts only when the head's listener answers with this run's token, so a
master address that leads to some other machine that happens to listen is caught too.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any

from clusterprep.fleet import Fleet
from clusterprep.smoke.cancel import acknowledge
from clusterprep.smoke.conversation import (
    Conversation,
    finish_all,
    gather_events,
    start_all,
    stop_all,
)
from clusterprep.smoke.model import Dial, Problem, RendezvousResult
from clusterprep.smoke.problems import folded, unanswered

SETUP_TIMEOUT = 30.0  # seconds for a probe to start and report (a slow login shell included)

NEXT_STEP = {
    "refused": "nothing accepts the port from these nodes' side: a firewall rejecting it on "
               "the head, or the master address leads elsewhere from here",
    "timed out": "packets to the port are dropped: open it in the head's firewall or "
                 "security group (or pick another with --master-port)",
    "no route": "these nodes have no route to the master address: check their routes (a "
                "short hostname resolving to an admin network is a classic)",
    "name unknown": "add the master's name to these nodes' /etc/hosts or DNS",
    "not the head": "another machine answers at the master address: fix the name's entry "
                    "in these nodes' /etc/hosts or DNS",
}


async def check_rendezvous(fleet: Fleet, master: str, port: int,
                           dial_timeout: float) -> RendezvousResult:
    started = time.monotonic()
    result = RendezvousResult(master=master, port=port)
    token = secrets.token_hex(16)
    head = fleet.inventory.head
    conversations = start_all(fleet, [
        Conversation(node, "smoke_rendezvous", {
            "node": node.name, "token": token, "port": port, "listen": node is head,
            "master": master, "timeout": dial_timeout})
        for node in fleet.inventory.nodes])
    try:
        await _rehearse(conversations, result, dial_timeout)
    except asyncio.CancelledError:
        await stop_all(conversations)
        result.interrupted = True
        acknowledge()
    result.seconds = time.monotonic() - started
    return result


async def _rehearse(conversations: list[Conversation], result: RendezvousResult,
                    dial_timeout: float) -> None:
    listener = conversations[0]
    opened = (await gather_events([listener], "listening", "taken",
                                  timeout=SETUP_TIMEOUT))[listener.node.name]
    if opened is None or opened["event"] == "taken":
        for conversation in conversations:
            conversation.send({"dial": False})
            conversation.close()
        await finish_all(conversations, SETUP_TIMEOUT)
        result.problems.append(
            _cannot_listen(listener.node.name, opened, result.port) if opened
            else unanswered(listener.node.name, await listener.failure()))
        return
    for conversation in conversations:
        conversation.send({"dial": True})
    dialed = await gather_events(conversations, "dialed", timeout=SETUP_TIMEOUT + dial_timeout)
    listener.send({"stop": True})
    for conversation in conversations:
        conversation.close()
    await finish_all(conversations, SETUP_TIMEOUT)
    causes = []
    for conversation in conversations:
        name = conversation.node.name
        event = dialed[name]
        if event is None:
            result.problems.append(unanswered(name, await conversation.failure()))
            continue
        dial = Dial(name, bool(event.get("ok")), event.get("cause", ""),
                    event.get("message", ""), _ms(event.get("seconds")))
        result.dials.append(dial)
        if not dial.ok:
            causes.append((name, f"{dial.cause} connecting to the master {result.master}:"
                                 f"{result.port}: {dial.message}",
                           NEXT_STEP.get(dial.cause, "check the network between this node "
                                                     "and the head")))
    result.problems += folded(causes)


def _cannot_listen(head: str, event: dict[str, Any], port: int) -> Problem:
    if not event.get("in_use"):
        return Problem(head, f"cannot listen on port {port}: {event.get('error')}",
                       "choose another --master-port (ports under 1024 need root)")
    holders = event.get("holders") or []
    if holders:
        held = "; ".join(f"pid {h['pid']} (uid {h['uid']}): {h['command']}" for h in holders)
        cause = f"port {port} is already in use on the head, held by {held}"
        step = ("a rank of an earlier launch still holds it: end that process, or choose "
                "another --master-port")
    else:
        cause = (f"port {port} is already in use on the head, by a process this user cannot "
                 "see (another user's, or a container's)")
        step = f"find it with `ss -ltnp 'sport = :{port}'` as root, or choose another --master-port"
    return Problem(head, cause, step)


def _ms(seconds: float | None) -> float | None:
    return round(seconds * 1000, 2) if seconds is not None else None
