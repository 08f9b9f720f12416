"""Small process and port helpers shared by the local stack's servers."""

from __future__ import annotations

import contextlib
import fcntl
import os
import resource
import signal
import socket
import subprocess
import time
from typing import TYPE_CHECKING

import psutil

from lepton.errors import StackError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator
    from pathlib import Path

__all__ = [
    "StackError",
    "exclusive",
    "free_port",
    "free_ports",
    "is_alive",
    "port_holder",
    "port_is_free",
    "spawn",
    "stop_process",
    "stop_processes",
    "wait_gone",
    "write_private",
]


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
        return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on now (the system's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def free_ports(count: int) -> list[int]:
    """``count`` distinct free ports: the system may hand the same one out twice once a
    probe has closed it."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def port_holder(port: int) -> str:
    """Who listens on a loopback ``port``: a program's name and pid when the system says
    (it may not, for another user's process), else "another program"."""
    try:
        connections = psutil.net_connections(kind="tcp")
    except psutil.AccessDenied:
        connections = []
    for connection in connections:
        if connection.laddr and connection.laddr.port == port and connection.pid is not None:
            if connection.status != psutil.CONN_LISTEN:
                continue
            try:
                process = psutil.Process(connection.pid)
                return (
                    f"{process.name()} (pid {connection.pid}: {' '.join(process.cmdline())[:120]})"
                )
            except psutil.Error:
                return f"pid {connection.pid}"
    return "another program"


def _more_open_files() -> None:
    """Runs in the child before exec: a broker holds several files per partition."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (_OPEN_FILES, max(hard, _OPEN_FILES)))
    except (ValueError, OSError):  # not allowed to raise the hard limit: take all of it
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


_OPEN_FILES = 1_048_576


def spawn(command: list[str], log_path: Path, env: dict[str, str] | None = None) -> int:
    """Start a detached server process (its own session) logging to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **(env or {})},
            preexec_fn=_more_open_files,  # runs before exec; it only sets a limit
        )
    return process.pid


def is_alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        process = psutil.Process(pid)
        return bool(process.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def wait_gone(pid: int, timeout_s: float) -> bool:
    """Wait up to ``timeout_s`` for a process that may not be this one's child to end;
    whether it did. A dead process counts as gone while still a zombie: where nothing reaps
    orphans (a container whose first process is not an init), it stays one for good."""
    deadline = time.monotonic() + timeout_s
    while is_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(_POLL_S)
    return True


_POLL_S = 0.05


def stop_process(pid: int | None, grace_s: float = 20.0) -> None:
    """SIGTERM the process group, wait up to ``grace_s``, then SIGKILL it."""
    stop_processes([pid], grace_s)


def stop_processes(pids: Iterable[int | None], grace_s: float = 20.0) -> None:
    """SIGTERM each process group at once, wait up to ``grace_s`` for them all, then SIGKILL
    those left: a cluster's nodes stop together, none waiting out the others' grace."""
    stopping = []
    for pid in pids:
        if pid is None or not is_alive(pid):
            continue
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
            stopping.append(pid)
    deadline = time.monotonic() + grace_s
    for pid in stopping:
        if not wait_gone(pid, max(0.0, deadline - time.monotonic())):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)


@contextlib.contextmanager
def exclusive(
    path: Path, timeout_s: float, holder: str, on_wait: Callable[[str], None] | None = None
) -> Iterator[None]:
    """Hold the lock file ``path`` (across processes) while the block runs, waiting up to
    ``timeout_s`` for ``holder`` (who else takes it) to release it; ``on_wait`` is told
    once, when the wait begins. A StackError after the bound."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as lock:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise StackError(
                        f"{holder} has held {path} for more than {timeout_s:.0f} s: "
                        f"is one stuck? (`fuser {path}` names it)"
                    ) from None
                if on_wait is not None:
                    on_wait(f"waiting up to {timeout_s:.0f} s for {holder} to finish")
                    on_wait = None
                time.sleep(_POLL_S)  # the holder releases it when done; nothing to await
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` readable by its owner only (0600) from the first byte on:
    passwords, private keys, a configuration that holds either."""
    path.unlink(missing_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(data)
