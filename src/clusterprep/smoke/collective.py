"""Phase 4, collective: the real thing, launched as the training launcher launches it.

On every node, inside the recipe's env: `torchrun --nnodes N --node_rank R --master_addr A
--master_port P --nproc_per_node G` (R by nodes-file order, G the node's GPU count or 1), with
the recipe's exported variables, running `worker.py`: a sweep of all_reduce sizes, each result
checked, figures as nccl-tests defines them.

Nothing it starts outlives it. torchrun starts every worker in a session of its own, so ending
the launch command's session (what the fleet does on a timeout or Ctrl-C) would leave the
workers running, holding the port and the GPUs. Every process of the run inherits a marker in
its environment instead; whatever the ending (success, a failed node, `--timeout`, Ctrl-C) one
sweep per node (`probes/smoke_sweep.py`) notes what each marked process was doing, kills it,
and says whether any survived. A worker also ends itself when its torchrun agent dies.
"""

from __future__ import annotations

import asyncio
import posixpath
import re
import secrets
import shlex
from dataclasses import dataclass
from importlib import resources
from typing import Any

from clusterprep import suggest
from clusterprep.answers import Misfit, read
from clusterprep.events import JsonLines
from clusterprep.fleet import CommandResult, Fleet
from clusterprep.fleet.gather import fold
from clusterprep.interrupts import acknowledge
from clusterprep.inventory import Node
from clusterprep.smoke.answers import Joined, Swept
from clusterprep.smoke.model import CollectiveResult, Leftover, Problem, SizeResult
from clusterprep.smoke.problems import unanswered

MARKER = "CLUSTERPREP_SMOKE_RUN"
WORKER = "smoke_allreduce.py"
KIB, MIB = 1 << 10, 1 << 20
DEFAULT_SIZES = {"nccl": (MIB, 16 * MIB, 256 * MIB), "gloo": (64 * KIB, MIB, 16 * MIB)}
SETTLE_SECONDS = 10.0  # for the launch commands to end once the sweep killed their processes
SWEEP_TIMEOUT = 30.0
DONE, FAILED, TIMED_OUT, INTERRUPTED = "done", "failed", "timed out", "interrupted"


class CollectiveListener:
    """Told of every rank's events as they arrive; does nothing by default (renderers
    override)."""

    def rank_joined(self, node: str, rank: int, joined: Joined) -> None:
        """A rank's process group formed."""

    def size_measured(self, node: str, size: SizeResult) -> None:
        """Rank 0 timed one size of the sweep."""


@dataclass(frozen=True)
class CollectivePlan:
    """How to launch: master, port, backend, ranks per node (inventory order), the env's
    python and exported variables, the sweep's sizes and iterations, the time allowed."""

    master: str
    port: int
    backend: str
    nproc: dict[str, int]
    python: str
    exports: dict[str, str]
    sizes: tuple[int, ...]
    iters: int
    warmup: int
    timeout: float
    min_busbw: float | None = None

    @property
    def world(self) -> int:
        return sum(self.nproc.values())

    @property
    def torchrun(self) -> str:
        """The env's own torchrun, beside its python (a bare `python3` means PATH's)."""
        if "/" not in self.python:
            return "torchrun"
        return posixpath.join(posixpath.dirname(self.python), "torchrun")

    def first_rank(self, node: str) -> int:
        ranks = 0
        for name, count in self.nproc.items():
            if name == node:
                return ranks
            ranks += count
        raise KeyError(node)

    def command(self, node_rank: int, node: str, run: str) -> str:
        """The launch command on one node: the worker script arrives on stdin."""
        exports = " ".join(f"{name}={shlex.quote(value)}"
                           for name, value in {MARKER: run, **self.exports}.items())
        launch = shlex.join([
            self.torchrun, "--nnodes", str(len(self.nproc)), "--node_rank", str(node_rank),
            "--master_addr", self.master, "--master_port", str(self.port),
            "--nproc_per_node", str(self.nproc[node]), "--max_restarts", "0",
            WORKER, "--backend", self.backend, "--sizes", ",".join(map(str, self.sizes)),
            "--iters", str(self.iters), "--warmup", str(self.warmup),
            "--timeout", f"{self.timeout:g}"])
        folder = f"clusterprep-smoke-{run}-{node_rank}.XXXXXX"
        return (f'd=$(mktemp -d "${{TMPDIR:-/tmp}}/{folder}") && cat > "$d/{WORKER}" && '
                f'cd "$d" && export {exports} && {launch}; '
                'status=$?; cd / && rm -rf "$d"; exit $status')


class RankEvents:
    """One node's launch output as it arrives: the workers' JSON lines, by kind."""

    def __init__(self, listener: CollectiveListener) -> None:
        self.listener = listener
        self.started: set[int] = set()
        self.joined: set[int] = set()
        self.done: set[int] = set()
        self.sizes: list[SizeResult] = []
        self.misfits: list[str] = []  # worker lines in a shape this clusterprep cannot read
        self.torch: str | None = None
        self.reader = JsonLines(self._note)

    def _note(self, node: str, event: dict[str, Any]) -> None:
        if not isinstance(event.get("rank"), int):
            return
        kind, rank = event.get("event"), event["rank"]
        if kind == "started":
            self.started.add(rank)
        elif kind == "joined":
            self.joined.add(rank)
            try:
                joined = read(Joined, event)
            except Misfit as misfit:
                self.misfits.append(f"rank {rank}'s joined line: {misfit}")
            else:
                self.torch = joined.torch
                self.listener.rank_joined(node, rank, joined)
        elif kind == "size":
            try:
                size = read(SizeResult, event)
            except Misfit as misfit:
                self.misfits.append(f"rank {rank}'s size line: {misfit}")
            else:
                self.sizes.append(size)
                self.listener.size_measured(node, size)
        elif kind == "done":
            self.done.add(rank)


async def run_collective(fleet: Fleet, plan: CollectivePlan,
                         listener: CollectiveListener | None = None) -> CollectiveResult:
    listener = listener or CollectiveListener()
    run = secrets.token_hex(6)
    script = resources.files("clusterprep.smoke").joinpath("worker.py").read_bytes()
    nodes = fleet.inventory.nodes
    logs = {node.name: RankEvents(listener) for node in nodes}
    tasks = {node.name: asyncio.ensure_future(fleet.run_on(
        node, plan.command(i, node.name, run), stdin=script,
        on_output=logs[node.name].reader)) for i, node in enumerate(nodes)}
    failed: list[str] = []
    try:
        outcome = await _wait(tasks, plan.timeout, failed)
    except asyncio.CancelledError:
        outcome = INTERRUPTED
        acknowledge()
    result = CollectiveResult(backend=plan.backend, world=plan.world, nproc=dict(plan.nproc),
                              interrupted=outcome == INTERRUPTED, timed_out=outcome == TIMED_OUT)
    await _sweep(fleet, nodes, run, result)
    if await _settle(tasks):
        await _sweep(fleet, nodes, run, result)  # a launch that started after the sweep
    _judge(result, plan, outcome, failed, {name: t.result() for name, t in tasks.items()}, logs)
    return result


async def _wait(tasks: dict[str, asyncio.Task[CommandResult]], timeout: float,
                failed: list[str]) -> str:
    """Until every node's launch ends (DONE), one fails (FAILED, naming it in `failed`: the
    others would only wait for it), or `timeout` passes (TIMED_OUT)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    pending = set(tasks.values())
    while pending:
        done, pending = await asyncio.wait(pending, timeout=max(0.0, deadline - loop.time()),
                                           return_when=asyncio.FIRST_COMPLETED)
        if not done:
            return TIMED_OUT
        failed += [name for name, task in tasks.items() if task in done and not task.result().ok]
        if failed:
            return FAILED
    return DONE


async def _sweep(fleet: Fleet, nodes: list[Node], run: str, result: CollectiveResult) -> None:
    """On every node reached: note and kill each process of this run that is still alive."""
    errors = await fleet.connect(nodes)
    reached = [node for node in nodes if errors[node.name] is None]
    answers, _ = await fleet.probe(
        "smoke_sweep", {"marker": f"{MARKER}={run}", "prefix": f"clusterprep-smoke-{run}-"},
        timeout=SWEEP_TIMEOUT, nodes=reached, shape=Swept)
    result.swept = bool(answers) and all(a.ok for a in answers)
    for answer in answers:
        if answer.error is not None:
            result.problems.append(unanswered(answer.node, answer.error))
            continue
        swept: Swept = answer.answer
        result.leftovers += [Leftover(answer.node, p.pid, p.state, p.rank, p.command)
                             for p in swept.found]
        if swept.survivors:
            result.survivors[answer.node] = swept.survivors


async def _settle(tasks: dict[str, asyncio.Task[CommandResult]]) -> bool:
    """Give the launch commands a moment to end by themselves, then end them; whether any
    had to be ended."""
    pending = [task for task in tasks.values() if not task.done()]
    if pending:
        await asyncio.wait(pending, timeout=SETTLE_SECONDS)
    stopped = [task for task in pending if not task.done()]
    for task in stopped:
        task.cancel()
    await asyncio.gather(*stopped, return_exceptions=True)
    return bool(stopped)


def _judge(result: CollectiveResult, plan: CollectivePlan, outcome: str, failed: list[str],
           commands: dict[str, CommandResult], logs: dict[str, RankEvents]) -> None:
    for log in logs.values():
        result.joined += sorted(log.joined)
        result.torch = result.torch or log.torch
    result.joined.sort()
    head = logs[next(iter(plan.nproc))]
    result.sizes = head.sizes
    problems = result.problems
    for node, log in logs.items():
        problems += [Problem(node, misfit, "the smoke worker and this clusterprep differ in "
                             "version: reinstall clusterprep") for misfit in log.misfits]
    for node, pids in result.survivors.items():
        problems.append(Problem(node, f"processes {', '.join(map(str, pids))} of the run "
                                      "survived SIGKILL (stuck in the kernel: a GPU or "
                                      "driver fault?)", "look at them with `ps -o pid,stat,"
                                      "wchan,cmd`; a node reboot may be needed"))
    if outcome == FAILED:
        problems += [_launch_failure(plan, node, commands[node]) for node in failed]
    elif outcome == TIMED_OUT:
        problems += _timeout_problems(result, plan, logs, commands)
    elif outcome == DONE:
        problems += _sweep_findings(result) + _figure_problems(result, plan)


def _launch_failure(plan: CollectivePlan, node: str, command: CommandResult) -> Problem:
    if command.error is not None:
        return unanswered(node, command.error)
    stderr = command.stderr.decode(errors="replace")
    if command.exit_code == 127 and plan.torchrun in stderr:
        return Problem(node, f"the env has no torchrun ({plan.torchrun}): torch is not "
                             "installed in the env on this node",
                       f"install it (`{_up_env()}`), then `{suggest.command('check')}`")
    if "No module named 'torch'" in stderr:
        return Problem(node, f"torch cannot be imported by the env's python ({plan.python}) "
                             "on this node", f"`{_up_env()}`, then "
                                             f"`{suggest.command('check')}` to compare the "
                                             "nodes' envs")
    return Problem(node, f"torchrun exited {command.exit_code}: {_error_line(stderr)}",
                   "its ranks' errors are above the last line of its output; "
                   f"`{suggest.command('check')}` compares the nodes' envs")


def _up_env() -> str:
    return suggest.command("up", "--only", "env")


def _error_line(stderr: str) -> str:
    """The most telling line of a failed launch: the last exception, else the last line."""
    lines = [line.strip() for line in stderr.strip().splitlines() if line.strip()]
    errors = [line for line in lines if re.match(r"^[\w.]+(Error|Exception)\b", line)]
    return (errors or lines or ["(no output)"])[-1][:400]


def _ranks(plan: CollectivePlan, node: str) -> range:
    first = plan.first_rank(node)
    return range(first, first + plan.nproc[node])


def _label(node: str, ranks: list[int]) -> str:
    if len(ranks) == 1:
        return f"{node} rank {ranks[0]}"
    return f"{node} ranks {fold(str(r) for r in ranks)}"


def _timeout_problems(result: CollectiveResult, plan: CollectivePlan,
                      logs: dict[str, RankEvents],
                      commands: dict[str, CommandResult]) -> list[Problem]:
    problems = [Problem("collective", f"did not finish within --timeout {plan.timeout:g} s; "
                                      "every process of the run was killed",
                        "if the cluster is only slow to start (torch imports on a cold "
                        "cache), raise --timeout")]
    stopped = [p for p in result.leftovers if p.state.startswith("stopped")]
    for p in stopped:
        where = f"{p.node} rank {p.rank}" if p.rank is not None else f"{p.node} pid {p.pid}"
        problems.append(Problem(where, f"its process (pid {p.pid}) was {p.state} (SIGSTOP, or "
                                       "a debugger) while the other ranks waited for it",
                                "find what stops it, then run "
                                f"`{suggest.command('smoke')}` again"))
    started = {rank for log in logs.values() for rank in log.started}
    for node, log in logs.items():
        missing = [r for r in _ranks(plan, node) if r not in started]
        if missing:
            tail = _error_line(commands[node].stderr.decode(errors="replace"))
            problems.append(Problem(_label(node, missing), "never started within the timeout "
                                    f"(torchrun's last words there: {tail})",
                                    "run the env's torchrun by hand on that node"))
    joined = set(result.joined)
    if not stopped and len(started) == plan.world and len(joined) < plan.world:
        waiting = [r for r in range(plan.world) if r not in joined]
        problems.append(Problem(f"ranks {fold(str(r) for r in waiting)}",
                                f"started, but the process group never formed: they did not "
                                f"all meet at {plan.master}:{plan.port}, or cannot reach each "
                                "other on the interface their backend picks",
                                "compare the nodes' NCCL_SOCKET_IFNAME/GLOO_SOCKET_IFNAME; "
                                f"`{suggest.command('smoke', '--until', 'links')}` checks "
                                "the links alone"))
    elif not stopped and len(joined) == plan.world:
        last = f"{result.sizes[-1].bytes} bytes" if result.sizes else "none"
        problems.append(Problem("collective", "every rank joined, but the all_reduce sweep "
                                f"hung (last size finished: {last})",
                                "a rank is stuck: look for GPU errors (dmesg, Xid) on the "
                                "nodes"))
    return problems


def _still_alive(count: int) -> str:
    return (f"{count} process of the run was still alive" if count == 1 else
            f"{count} processes of the run were still alive")


def _sweep_findings(result: CollectiveResult) -> list[Problem]:
    """After a clean run nothing should be left; anything found was killed, and is named."""
    by_node: dict[str, list[Leftover]] = {}
    for p in result.leftovers:
        by_node.setdefault(p.node, []).append(p)
    return [Problem(node, f"{_still_alive(len(found))} after it ended (killed): "
                          f"{found[0].command[:120]}",
                    "a rank that does not exit holds the port or a GPU: report this")
            for node, found in by_node.items()]


def _figure_problems(result: CollectiveResult, plan: CollectivePlan) -> list[Problem]:
    problems = []
    if not result.sizes:
        problems.append(Problem("collective", "the run ended without reporting any size",
                                "run it again; if it persists, report it"))
    for size in result.sizes:
        if size.wrong:
            problems.append(Problem("collective", f"all_reduce of {size.bytes} bytes gave "
                                    f"{size.wrong} wrong elements (#wrong)",
                                    "suspect a GPU or the interconnect; "
                                    f"`{suggest.command('check')}` compares drivers and NCCL "
                                    "versions"))
    if plan.min_busbw is not None and result.sizes and result.sizes[-1].busbw < plan.min_busbw:
        last = result.sizes[-1]
        problems.append(Problem("collective", f"busbw {last.busbw:.2f} GB/s at {last.bytes} "
                                f"bytes is under --min-busbw {plan.min_busbw:g} GB/s",
                                "check the links phase's figures and the NCCL transport "
                                "(NCCL_DEBUG=INFO: 'NET/IB' or 'NET/Socket')"))
    return problems
