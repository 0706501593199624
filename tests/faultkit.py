"""Real faults for the simulated cluster: a node's SSH sessions killed, a node frozen, a slow
DNS server. Nothing here is mocked: the processes are really killed or stopped, the resolver
really answers late."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cluster import SimNode


def session_sshds(node: SimNode) -> list[int]:
    """Host PIDs of the node's per-connection sshd processes (children of its listener)."""
    out = subprocess.run(["pgrep", "-P", str(node.pid)], capture_output=True, text=True)
    return [int(pid) for pid in out.stdout.split()]


def kill_sessions(node: SimNode) -> int:
    """`kill -9` every SSH session of the node (its listener lives on): as a node whose
    connections drop. Returns how many were killed."""
    killed = 0
    for pid in session_sshds(node):
        try:
            os.kill(pid, signal.SIGKILL)
            killed += 1
        except ProcessLookupError:
            pass
    return killed


@contextmanager
def sessions_killed_after(node: SimNode, seconds: float) -> Iterator[list[int]]:
    """While the body runs: once the node has an SSH session (a client connected), wait
    `seconds`, then kill its sessions. Yields a list that gets how many were killed."""
    killed: list[int] = []
    done = threading.Event()

    def watch() -> None:
        while not session_sshds(node):
            if done.wait(0.02):
                return
        if not done.wait(seconds):
            killed.append(kill_sessions(node))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield killed
    finally:
        done.set()
        watcher.join()


def node_processes(node: SimNode) -> list[int]:
    """Host PIDs of every process in the node's PID namespace."""
    namespace = os.readlink(f"/proc/{node.pid}/ns/pid")
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.readlink(f"/proc/{entry}/ns/pid") == namespace:
                    pids.append(int(entry))
            except OSError:
                pass
    return pids


@contextmanager
def frozen(node: SimNode, after: float = 0.0) -> Iterator[None]:
    """`kill -STOP` every process of the node `after` seconds into the body; all continued on
    exit. The node's TCP stack still answers (the kernel is not stopped), its programs do not."""
    stopped: list[int] = []

    def freeze() -> None:
        for pid in node_processes(node):
            try:
                os.kill(pid, signal.SIGSTOP)
                stopped.append(pid)
            except ProcessLookupError:
                pass

    timer = threading.Timer(after, freeze)
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        timer.join()
        for pid in stopped:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass


class SlowDns:
    """A DNS server on a loopback address that answers every question "no such name" (NXDOMAIN)
    after `delay` seconds, each question in its own thread: a slow resolver, for real."""

    def __init__(self, address: str = "127.0.0.153", delay: float = 1.5) -> None:
        self.address = address
        self.delay = delay
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._socket.bind((address, 53))
        self._stopping = False
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def resolv_conf(self, folder: Path) -> Path:
        """A resolv.conf that sends every lookup to this server, once, waiting up to 5 s."""
        path = folder / "resolv.conf"
        path.write_text(f"nameserver {self.address}\noptions timeout:5 attempts:1\n")
        return path

    def __enter__(self) -> SlowDns:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stopping = True
        self._socket.close()

    def _serve(self) -> None:
        while not self._stopping:
            try:
                query, client = self._socket.recvfrom(4096)
            except OSError:
                return
            threading.Thread(target=self._answer, args=(query, client), daemon=True).start()

    def _answer(self, query: bytes, client: tuple[str, int]) -> None:
        time.sleep(self.delay)
        end = 12
        while end < len(query) and query[end]:
            end += query[end] + 1
        question = query[12:end + 5]  # the name, its 0 byte, its type and class
        flags = 0x8003 | (query[2] << 8 & 0x0100) | 0x0080  # answer, RD copied, RA, NXDOMAIN
        header = query[:2] + flags.to_bytes(2, "big") + b"\x00\x01" + b"\x00" * 6
        try:
            self._socket.sendto(header + question, client)
        except OSError:
            pass


def with_resolv_conf(resolv_conf: Path, argv: list[str]) -> list[str]:
    """`argv` run in a mount namespace of its own where /etc/resolv.conf is `resolv_conf`."""
    return ["unshare", "--mount", "--", "sh", "-c",
            'mount --bind "$0" /etc/resolv.conf && exec "$@"', str(resolv_conf), *argv]
