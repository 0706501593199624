"""Phase 2, rendezvous: the head can listen on the master port, and every node (the head too)
reaches it there through the master address, from its own side.

The second stage of each node's smoke probe (`probes/smoke_node.py`): the head listens first,
then every node dials; a dial counts only when the head's listener answers with this run's
token, so a master address that leads to some other machine that happens to listen is caught.
"""

from __future__ import annotations

import secrets

from clusterprep.smoke.answers import Dialed, Heard, MasterOpened
from clusterprep.smoke.conversation import Conversation, replies
from clusterprep.smoke.model import Dial, Problem, RendezvousResult
from clusterprep.smoke.problems import folded, unanswered

SETUP_TIMEOUT = 30.0  # seconds for a stage to answer on a busy node

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


async def check_rendezvous(conversations: list[Conversation], master: str, port: int,
                           dial_timeout: float) -> RendezvousResult:
    result = RendezvousResult(master=master, port=port)
    token = secrets.token_hex(16)
    head = conversations[0]
    for conversation in conversations:
        conversation.send({"stage": "rendezvous", "node": conversation.node.name,
                           "token": token, "port": port, "listen": conversation is head,
                           "master": master, "timeout": dial_timeout})
    opened, failures = await replies([head], "master-listening", "master-taken",
                                     shape=MasterOpened, timeout=SETUP_TIMEOUT)
    if failures or opened[head.node.name].event == "master-taken":
        for conversation in conversations:
            conversation.send({"dial": False})
        result.problems.append(_cannot_listen(head.node.name, opened[head.node.name], port)
                               if opened else unanswered(head.node.name, failures[head.node.name]))
        return result
    for conversation in conversations:
        conversation.send({"dial": True})
    dialed, failures = await replies(conversations, "dialed", shape=Dialed,
                                     timeout=SETUP_TIMEOUT + dial_timeout)
    head.send({"stop": True})
    _, head_failure = await replies([head], "heard", shape=Heard, timeout=SETUP_TIMEOUT)
    failures.update(head_failure)
    causes = []
    for conversation in conversations:
        name = conversation.node.name
        if name in failures:
            result.problems.append(unanswered(name, failures[name]))
            continue
        event = dialed[name]
        dial = Dial(name, event.ok, event.cause, event.message, _ms(event.seconds))
        result.dials.append(dial)
        if not dial.ok:
            causes.append((name, f"{dial.cause} connecting to the master {master}:{port}: "
                                 f"{dial.message}",
                           NEXT_STEP.get(dial.cause, "check the network between this node "
                                                     "and the head")))
    result.problems += folded(causes)
    return result


def _cannot_listen(head: str, event: MasterOpened, port: int) -> Problem:
    if not event.in_use:
        return Problem(head, f"cannot listen on port {port}: {event.error}",
                       "choose another --master-port (ports under 1024 need root)")
    if event.holders:
        held = "; ".join(f"pid {h.pid} (uid {h.uid}): {h.command}" for h in event.holders)
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
