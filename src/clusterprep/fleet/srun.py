"""One `srun` job step for many nodes (`SlurmLauncher`, one `_Step` per call): the nodes Slurm
will not give left out first, the command launched through the slurmds' tree with every task
`probes/slurm_task.py`, the tasks' framed lines read back into per-node CommandResults,
heartbeats judged, and the step cancelled on a timeout, Ctrl-C or when only hung nodes are
left. `SlurmBackend` (fleet/slurm.py) drives it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import re
import shlex
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from functools import lru_cache

from clusterprep import probes
from clusterprep.errors import (
    COMMAND_TIMEOUT,
    DISCONNECTED,
    INTERRUPTED,
    UNREACHABLE,
    NodeError,
)
from clusterprep.fleet import slurmctl
from clusterprep.fleet.gather import fold
from clusterprep.fleet.options import KEEPALIVES_UNANSWERED, SlurmOptions
from clusterprep.fleet.slurmctl import NodeState
from clusterprep.fleet.transport import (
    CommandResult,
    OutputCallback,
    feed,
    hung,
    startup_failure,
)
from clusterprep.interrupts import acknowledge
from clusterprep.inventory import Node

CANCEL_WAIT = 15.0  # seconds for srun to end after its step was cancelled, before it is killed
HUNG_CANCEL_WAIT = 2.0  # the same once the step's only tasks left are on hung nodes
_SSHD_PATH = "/usr/local/bin:/usr/bin:/bin"
_LAUNCH_FAILED = re.compile(r"Task launch for StepId=\S+ failed on node (\S+): (.*)")


class SlurmLauncher:
    """Every fleet call as one `srun` job step over the inventory's nodes."""

    def __init__(self, nodes: Iterable[Node], options: SlurmOptions) -> None:
        self.nodes = list(nodes)
        self.options = options
        self.job = options.job
        self._own: slurmctl.Allocation | None = None
        self._states: dict[str, NodeState] = {}
        self._unreachable: dict[str, NodeError] = {}  # for the rest of the invocation
        self._ready: asyncio.Future[None] | None = None
        self._steps = 0

    # -- the allocation and its nodes ----------------------------------------------------

    async def connect(self, nodes: Iterable[Node] | None = None) -> dict[str, NodeError | None]:
        """Ask Slurm once for the nodes' states (and make an allocation if none was given);
        returns each node's error, or None when a task can start there."""
        if self._ready is None:
            self._ready = asyncio.ensure_future(asyncio.to_thread(self._prepare))
        await asyncio.shield(self._ready)
        targets = list(nodes) if nodes is not None else self.nodes
        return {node.name: self._unreachable.get(node.host) for node in targets}

    def _prepare(self) -> None:
        names = [node.host for node in self.nodes]
        self._states = slurmctl.node_states(names)
        for name in names:
            state = self._states.get(name)
            if state is None:
                self._unreachable[name] = NodeError(
                    UNREACHABLE, f"Slurm knows no node {name} (see `sinfo -N`)")
            elif not state.usable:
                self._unreachable[name] = state.error()
        usable = [name for name in names if name not in self._unreachable]
        if self.job is None and usable:
            self._own = slurmctl.Allocation(usable, self.options.allocate_wait)
            self.job = self._own.job

    def state_of(self, node: Node) -> NodeState | None:
        """Slurm's word on the node, as read when the fleet first needed it."""
        return self._states.get(node.host)

    async def close(self) -> None:
        if self._own is not None:
            await asyncio.to_thread(self._own.release)
            self._own = None

    # -- one step ------------------------------------------------------------------------

    async def run(
        self,
        command: str,
        nodes: list[Node],
        *,
        stdin: dict[str, bytes] | bytes | None = None,
        stdin_stream: AsyncIterator[bytes] | None = None,
        timeout: float | None = None,
        on_output: OutputCallback | None = None,
    ) -> tuple[list[CommandResult], bool]:
        """Run `command` on `nodes` in one job step; each node's result, in the given order,
        and whether the user interrupted (Ctrl-C). `stdin`: the same bytes for every node,
        or each node's own (by host); `stdin_stream`: streamed to every node alike."""
        started = time.monotonic()
        await self.connect()
        results: dict[str, CommandResult] = {}
        pending = [node for node in nodes if node.host not in self._unreachable]
        interrupted = False
        for _ in range(2):
            if not pending:
                break
            step = _Step(self, pending, command, on_output)
            try:
                await step.run(stdin, stdin_stream, timeout)
            except asyncio.CancelledError:
                interrupted = True
                acknowledge()
            results.update({node.name: step.result(node) for node in pending})
            for host in step.launch_failures():  # not tried again in this invocation
                self._unreachable[host] = step.launch_error(host)
            # srun aborts the whole step when one node's launch fails; the nodes whose task
            # had not begun the command then run it in a step of their own, once.
            pending = [node for node in pending if step.aborted_before_start(node)]
            if not pending or interrupted or stdin_stream is not None:
                break
        for node in nodes:
            if node.name not in results:
                results[node.name] = CommandResult(node.name, None,
                                                   seconds=time.monotonic() - started,
                                                   error=self._unreachable[node.host])
        return [results[node.name] for node in nodes], interrupted

    def _next_step_name(self) -> str:
        self._steps += 1
        return f"clusterprep-{os.getpid()}-{self._steps}"


@dataclass
class _Task:
    """One node's task of a step, as its frames arrive."""

    stdout: bytearray = field(default_factory=bytearray)
    stderr: bytearray = field(default_factory=bytearray)
    started: bool = False
    exit_code: int | None = None
    began: bool = True  # False: the shell exited before the command (its startup files)
    seconds: float = 0.0
    heard: float = 0.0  # when its last frame came
    hung: bool = False  # its node went silent: cut out, the others waited for


class _Step:
    """One `srun`: its argv, its stdin, and the frames of its tasks."""

    def __init__(self, launcher: SlurmLauncher, nodes: list[Node], command: str,
                 on_output: OutputCallback | None) -> None:
        self.launcher = launcher
        self.nodes = nodes
        self.command = command
        self.on_output = on_output
        self.name = launcher._next_step_name()
        self.tasks = {node.host: _Task() for node in nodes}
        self.step_id: str | None = None
        self.srun_stderr = b""
        self.ended: NodeError | None = None  # why tasks without an exit status have none
        self.started = time.monotonic()
        self.all_exited = asyncio.Event()  # every task has sent its exit status

    def argv(self) -> list[str]:
        bootstrap = (f"import sys; exec(compile(sys.stdin.buffer.read({len(_agent())}), "
                     "'slurm_task', 'exec'))")
        hosts = [node.host for node in self.nodes]
        return [
            "srun", f"--jobid={self.launcher.job}", f"--nodelist={fold(hosts)}",
            f"--nodes={len(hosts)}", f"--ntasks={len(hosts)}", "--ntasks-per-node=1",
            "--overlap", "--no-kill", "--kill-on-bad-exit=0", "--export=NONE",
            "--input=all", "--chdir=/", "--mpi=none", "--cpu-bind=none",
            f"--job-name={self.name}", "--quiet",
            "/bin/sh", "-c",
            # No -I: it would ignore PYTHONCOERCECLOCALE=0, which keeps Python from adding
            # LC_CTYPE to the environment the command inherits. The step's environment holds
            # no other PYTHON* variable (--export=NONE).
            f"PATH={_SSHD_PATH} PYTHONCOERCECLOCALE=0 exec python3 -S -s -c "
            f"{shlex.quote(bootstrap)}",
        ]

    def header(self, stdin: dict[str, bytes] | bytes | None,
               streamed: bool) -> tuple[bytes, bytes]:
        """The agent and its header line (see probes/slurm_task.py), and the stdin bytes
        that follow them: a part every node takes once, then each node's own part."""
        names = [node.host for node in self.nodes]
        body = b""
        if streamed:
            layout = "stream"
        elif isinstance(stdin, bytes):
            layout, body = ",".join([str(len(stdin))] + ["0"] * len(names)), stdin
        elif stdin is not None:
            parts = [stdin[name] for name in names]
            common = os.path.commonprefix(parts) if len(parts) > 1 else b""
            layout = ",".join([str(len(common))] + [str(len(p) - len(common)) for p in parts])
            body = common + b"".join(p[len(common):] for p in parts)
        else:
            layout = "-"
        beat = self.launcher.options.hung_after / (KEEPALIVES_UNANSWERED + 1)
        line = b" ".join([base64.b64encode(self.command.encode()),
                          base64.b64encode("\n".join(names).encode()), layout.encode(),
                          b"%g" % beat])
        return _agent() + line + b"\n", body

    async def run(self, stdin: dict[str, bytes] | bytes | None,
                  stdin_stream: AsyncIterator[bytes] | None, timeout: float | None) -> None:
        head, body = self.header(stdin, stdin_stream is not None)
        process = await asyncio.create_subprocess_exec(
            *self.argv(), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, limit=1 << 20, env=srun_environment(),
            start_new_session=True)  # Ctrl-C reaches us, not srun: we cancel the step
        assert process.stdin is not None and process.stdout is not None
        feeding = asyncio.ensure_future(self._feed(process.stdin, head, body, stdin_stream))
        # Every task's command has ended: no input is wanted any more, and the tasks end with
        # the step's stdin (probes/slurm_task.py), so it is closed now, whatever is left.
        feeding_ends = asyncio.ensure_future(self._end_input(feeding, process.stdin))
        reading = asyncio.ensure_future(asyncio.gather(
            self._frames(process.stdout), self._errors(process.stderr), process.wait()))
        # Cancelled (the step was cut short), gather ends with a CancelledError as its
        # exception: retrieved here, so that it is not reported as never retrieved.
        reading.add_done_callback(lambda done: done.cancelled() or done.exception())
        settled = asyncio.ensure_future(self._settled(reading))
        try:
            done, _ = await asyncio.wait({reading, settled}, timeout=timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
            if not done:
                self.ended = NodeError(COMMAND_TIMEOUT, f"command still running after "
                                                        f"{timeout:g} s; step cancelled")
                await self._cancel(process, reading)
            elif reading not in done:  # only the cut-out nodes' tasks are left
                await self._cancel(process, reading, wait=HUNG_CANCEL_WAIT)
        except asyncio.CancelledError:
            self.ended = NodeError(INTERRUPTED, "interrupted before the command finished")
            await self._cancel(process, reading)
            raise
        finally:
            feeding.cancel()
            feeding_ends.cancel()
            settled.cancel()

    async def _end_input(self, feeding: asyncio.Future[None],
                         stdin: asyncio.StreamWriter) -> None:
        await self.all_exited.wait()
        feeding.cancel()
        stdin.close()

    async def _settled(self, reading: asyncio.Future[object]) -> None:
        """Returns once every task has ended or been cut out: a task whose node sent nothing,
        not even its heartbeat, for `hung_after` seconds is hung, and not waited for."""
        hung_after = self.launcher.options.hung_after
        while not reading.done():
            await asyncio.sleep(hung_after / (KEEPALIVES_UNANSWERED + 1))
            now = time.monotonic()
            for task in self.tasks.values():
                if task.started and task.exit_code is None and now - task.heard > hung_after:
                    task.hung = True
            if any(task.hung for task in self.tasks.values()) and all(
                    task.hung or task.exit_code is not None for task in self.tasks.values()):
                return
        await asyncio.Event().wait()  # the step ended by itself: `reading` says so first

    async def _feed(self, writer: asyncio.StreamWriter, head: bytes, body: bytes,
                    stream: AsyncIterator[bytes] | None) -> None:
        async def chunks() -> AsyncIterator[bytes]:
            yield head + body
            if stream is not None:
                async for chunk in stream:
                    yield chunk

        await feed(writer, chunks(), writer.close)

    async def _frames(self, reader: asyncio.StreamReader) -> None:
        names = [node.host for node in self.nodes]
        by_host = {node.host: node.name for node in self.nodes}
        while line := await reader.readline():
            index, _, rest = line.rstrip(b"\n").partition(b" ")
            kind, _, payload = rest.partition(b" ")
            try:
                host = names[int(index)]
            except (ValueError, IndexError):
                continue  # not a frame: nothing but the tasks writes to srun's stdout
            try:
                self._frame(self.tasks[host], by_host[host], kind, payload)
            except ValueError:
                continue  # a frame cut short (its task was killed while writing it)

    def _frame(self, task: _Task, node: str, kind: bytes, payload: bytes) -> None:
        task.heard = time.monotonic()
        if kind in (b"O", b"E"):
            data = base64.b64decode(payload, validate=True)
            (task.stdout if kind == b"O" else task.stderr).extend(data)
            if self.on_output is not None:
                self.on_output(node, "stdout" if kind == b"O" else "stderr", data)
        elif kind == b"S":
            task.started = True
            self.step_id = self.step_id or payload.decode()
        elif kind == b"X" and self.ended is None:
            # Once we cancel, an exit is our kill's doing: Slurm kills the step's processes
            # one by one, so a shell may see its child die, and report it, before it dies.
            code, _, began = payload.partition(b" ")
            task.exit_code, task.began = int(code), began != b"0"
            task.seconds = time.monotonic() - self.started
            if all(t.exit_code is not None for t in self.tasks.values()):
                self.all_exited.set()

    async def _errors(self, reader: asyncio.StreamReader | None) -> None:
        if reader is not None:
            self.srun_stderr = await reader.read()

    async def _cancel(self, process: asyncio.subprocess.Process,
                      reading: asyncio.Future[object], wait: float = CANCEL_WAIT) -> None:
        """Kill the step on every node (`scancel`), then let srun deliver what it still has
        for up to `wait` seconds (a frozen node's task never ends: srun is killed then)."""
        step = self.step_id
        if step is None:
            job = self.launcher.job or ""
            step = await asyncio.to_thread(slurmctl.find_step, job, self.name)
        if step is not None:
            await asyncio.to_thread(slurmctl.cancel_step, step)
        try:
            await asyncio.wait_for(asyncio.shield(reading), wait)
        except (asyncio.TimeoutError, asyncio.CancelledError):
            if process.returncode is None:
                process.kill()
            reading.cancel()
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(process.wait(), 5)  # reaped before the loop closes

    def result(self, node: Node) -> CommandResult:
        task = self.tasks[node.host]
        seconds = task.seconds if task.exit_code is not None else time.monotonic() - self.started
        result = CommandResult(node.name, task.exit_code, bytes(task.stdout), bytes(task.stderr),
                               seconds)
        if task.exit_code is None:
            result.error = self._why_unfinished(node, task)
        elif not task.began:
            result.error = startup_failure(result)
        return result

    def launch_failures(self) -> dict[str, str]:
        """The nodes where Slurm could not start a task, and why (srun's own words)."""
        srun_says = self.srun_stderr.decode(errors="replace")
        return {match.group(1): match.group(2).strip()
                for match in _LAUNCH_FAILED.finditer(srun_says)}

    def launch_error(self, host: str) -> NodeError:
        return NodeError(UNREACHABLE, f"Slurm could not start the task on {host}: "
                                      f"{self.launch_failures()[host]}")

    def aborted_before_start(self, node: Node) -> bool:
        """Whether the step ended for another node's failed launch before this node's task
        began the command."""
        failures = self.launch_failures()
        return (bool(failures) and node.host not in failures and self.ended is None
                and not self.tasks[node.host].started)

    def _why_unfinished(self, node: Node, task: _Task) -> NodeError:
        if task.hung:
            return hung(node.host, "no output and no heartbeat from its task",
                        self.launcher.options.hung_after)
        failures = self.launch_failures()
        if node.host in failures:
            return self.launch_error(node.host)
        srun_says = self.srun_stderr.decode(errors="replace")
        if self.ended is not None and (task.started or self.ended.kind == INTERRUPTED):
            return self.ended
        lines = [line.strip() for line in srun_says.splitlines() if line.strip()]
        about_node = [line for line in lines if node.host in line] or lines[-2:]
        detail = " | ".join(about_node[-2:]) or "srun said nothing"
        if failures and task.started:
            return NodeError(DISCONNECTED, "srun aborted the step, since Slurm could not start "
                                           f"the task on {', '.join(failures)}; run again")
        if task.started:
            return NodeError(DISCONNECTED, f"the task on {node.host} ended before the command "
                                           f"did: {detail}")
        if self.ended is not None:
            return self.ended
        return NodeError(UNREACHABLE, f"the task never started on {node.host}: {detail}")


@lru_cache(maxsize=1)
def _agent() -> bytes:
    """The task script every step runs (probes/slurm_task.py)."""
    return probes.load("slurm_task").encode()


def srun_environment() -> dict[str, str]:
    """Ours, without the SLURM_* variables an sbatch or salloc set (SLURM_NTASKS,
    SLURM_CPUS_PER_TASK, SLURM_GPUS_PER_TASK, ...): srun reads them as options, and they would
    reshape our step of one task per node. The job is named by --jobid; the cluster's
    configuration and selection stay."""
    keep = ("SLURM_CONF", "SLURM_CLUSTERS")
    return {key: value for key, value in os.environ.items()
            if not key.startswith("SLURM_") or key in keep}
