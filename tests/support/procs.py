"""Run CLI subprocesses (workers, producers) in tests and kill them on purpose.

Example::

    with ManagedProcess(
        [sys.executable, "-m", "streamtasks", "worker", "app:registry"],
        log_dir=tmp_path / "worker", env={"REDIS_URL": redis_url}, cwd=tmp_path,
    ) as worker:
        worker.wait_for_log(r"worker ready", timeout=30)
        worker.kill9()                      # the worker and every process it started
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

import psutil

POLL_INTERVAL_S = 0.05
DEFAULT_LOG_TIMEOUT_S = 30.0
DEFAULT_WAIT_TIMEOUT_S = 30.0
OUTPUT_TAIL_CHARS = 4000
REAP_TIMEOUT_S = 10.0


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports on 127.0.0.1 that were free a moment ago: held open together
    while they are chosen (one :func:`free_port` at a time may give the same port twice)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(count)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]


class ProcessFailed(AssertionError):
    """A managed process did not do what the test waited for; the message has its output."""


class ManagedProcess:
    """A subprocess with its stdout/stderr in ``log_dir/{stdout,stderr}.log``.

    ``env`` is merged over ``os.environ`` (plus ``PYTHONUNBUFFERED=1`` so log lines appear
    at once). The process starts in its own session, so signals sent to the test process
    group do not reach it. Used as a context manager it is started on enter (if not yet)
    and, on exit, it and all its descendants are SIGKILLed if still alive.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        log_dir: Path | str,
        env: Mapping[str, str] | None = None,
        cwd: Path | str | None = None,
        name: str | None = None,
    ) -> None:
        self.argv = [str(a) for a in argv]
        self.log_dir = Path(log_dir)
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.cwd = Path(cwd) if cwd is not None else None
        self.name = name or Path(self.argv[0]).name
        self.stdout_path = self.log_dir / "stdout.log"
        self.stderr_path = self.log_dir / "stderr.log"
        self._popen: subprocess.Popen[bytes] | None = None

    # lifecycle --------------------------------------------------------------
    def start(self) -> ManagedProcess:
        """Start the process (once); return self."""
        if self._popen is not None:
            return self
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self._popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
            )
        return self

    @property
    def popen(self) -> subprocess.Popen[bytes]:
        """The underlying Popen; raises if the process was never started."""
        if self._popen is None:
            raise RuntimeError(f"{self.name} was not started")
        return self._popen

    @property
    def pid(self) -> int:
        """The process id."""
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        """The exit code (negative signal number if killed), or None while running."""
        return self.popen.poll()

    @property
    def running(self) -> bool:
        """True while the process has not exited."""
        return self._popen is not None and self._popen.poll() is None

    def terminate(self) -> None:
        """Send SIGTERM to the process only (a graceful stop request)."""
        self.signal(signal.SIGTERM)

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the process if it is still running."""
        if self.running:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(sig)

    def descendants(self) -> list[psutil.Process]:
        """The live processes started (directly or not) by this process."""
        try:
            return list(psutil.Process(self.pid).children(recursive=True))
        except psutil.NoSuchProcess:
            return []

    def kill9(self) -> None:
        """SIGKILL the process and every descendant (found via psutil), then reap it."""
        if self._popen is None:
            return
        victims = self.descendants()
        self.signal(signal.SIGKILL)
        for proc in victims:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        psutil.wait_procs(victims, timeout=REAP_TIMEOUT_S)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(REAP_TIMEOUT_S)

    def wait(self, timeout: float = DEFAULT_WAIT_TIMEOUT_S) -> int:
        """Wait for exit and return the exit code; raise ProcessFailed on timeout."""
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise ProcessFailed(
                f"{self.name} still running after {timeout:.1f}s\n{self.output_tail()}"
            ) from None

    # output -----------------------------------------------------------------
    def stdout(self) -> str:
        """Everything written to stdout so far."""
        return _read(self.stdout_path)

    def stderr(self) -> str:
        """Everything written to stderr so far."""
        return _read(self.stderr_path)

    def output(self) -> str:
        """stdout followed by stderr, as written so far."""
        return self.stdout() + self.stderr()

    def output_tail(self, chars: int = OUTPUT_TAIL_CHARS) -> str:
        """The end of both streams, labelled, for failure messages."""
        return (
            f"--- {self.name} stdout (tail) ---\n{self.stdout()[-chars:]}\n"
            f"--- {self.name} stderr (tail) ---\n{self.stderr()[-chars:]}"
        )

    def _search(self, regex: re.Pattern[str]) -> re.Match[str] | None:
        return regex.search(self.stdout()) or regex.search(self.stderr())

    def _not_found(self, regex: re.Pattern[str], timeout: float) -> ProcessFailed:
        state = "running" if self.running else f"exited with {self.returncode}"
        return ProcessFailed(
            f"{self.name} ({state}) did not log /{regex.pattern}/ within {timeout:.1f}s\n{self.output_tail()}"
        )

    def _poll_log(self, regex: re.Pattern[str], deadline: float, timeout: float) -> re.Match[str] | None:
        """The match if the pattern appeared; None to keep waiting; raises when it never can."""
        alive = self.running
        match = self._search(regex)
        if match:
            return match
        if not alive or time.monotonic() >= deadline:
            raise self._not_found(regex, timeout)
        return None

    def wait_for_log(
        self, pattern: str | re.Pattern[str], timeout: float = DEFAULT_LOG_TIMEOUT_S
    ) -> re.Match[str]:
        """Block until ``pattern`` (regex, multiline) matches stdout or stderr; return the match.

        Raises ProcessFailed (with the output tail) on timeout, or as soon as the process
        has exited without the pattern appearing.
        """
        regex = _regex(pattern)
        deadline = time.monotonic() + timeout
        while (match := self._poll_log(regex, deadline, timeout)) is None:
            time.sleep(POLL_INTERVAL_S)
        return match

    async def await_log(
        self, pattern: str | re.Pattern[str], timeout: float = DEFAULT_LOG_TIMEOUT_S
    ) -> re.Match[str]:
        """``wait_for_log`` for async tests: polls without blocking the event loop."""
        regex = _regex(pattern)
        deadline = time.monotonic() + timeout
        while True:  # the output is in files: nothing to await but time
            match = self._poll_log(regex, deadline, timeout)
            if match is not None:
                return match
            await asyncio.sleep(POLL_INTERVAL_S)

    # context manager --------------------------------------------------------
    def __enter__(self) -> ManagedProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.kill9()


def _regex(pattern: str | re.Pattern[str]) -> re.Pattern[str]:
    return re.compile(pattern, re.MULTILINE) if isinstance(pattern, str) else pattern


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


#: The process title Ray gives a streamtasks actor (actor mode).
ACTOR_TITLE = "ray::WorkerActor"


def reap_orphan_actors(timeout: float = REAP_TIMEOUT_S) -> list[int]:
    """Actor mode, after the test's workers were killed: their actors are children of the Ray
    node, not of the worker, and run until Ray sees their owner gone (well under a second when
    idle). Until then they read: after the next test's FLUSHALL one would recreate its group.
    Wait for every streamtasks actor to end, SIGKILL what is left; returns the pids killed."""

    def title(proc: psutil.Process) -> str:
        with contextlib.suppress(psutil.Error):
            return " ".join(proc.cmdline())
        return ""

    # Only this test session's own (descendant) actors: never another run's or a user's.
    mine = psutil.Process().children(recursive=True)
    actors = [p for p in mine if title(p).startswith(ACTOR_TITLE)]
    _, alive = psutil.wait_procs(actors, timeout=timeout if actors else 0)
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    return [proc.pid for proc in alive]
