"""What a local Ray leaves behind when its worker is killed (kill -9, OOM): its raylet and GCS
go within a second or two, but the two agent processes the raylet started beside them (Ray
2.60's ``ray::DashboardAgent`` and ``ray::RuntimeEnvAgent``) notice only 60-90 s later
(measured here). A worker about to start a local Ray stops such leftovers first, and only
them: an agent whose raylet died was reparented to pid 1 (or to the subreaper of its
container), while the agents of a live Ray -- another worker's, a ``ray start`` node's --
are the children of their raylet. Linux only (``/proc``); elsewhere nothing is done.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger("streamtasks.worker")

#: Process titles of the agents a raylet starts beside its workers.
AGENT_TITLES = ("ray::DashboardAgent", "ray::RuntimeEnvAgent")


def leftover_agents(proc: Path = Path("/proc"), uid: int | None = None) -> list[tuple[int, str]]:
    """``(pid, title)`` of this user's Ray agents whose raylet is gone (parent pid 1)."""
    uid = os.getuid() if uid is None else uid
    found = []
    for pid, ppid, title, owner in _processes(proc):
        if ppid == 1 and owner == uid and title.startswith(AGENT_TITLES):
            found.append((pid, title.split()[0]))
    return found


def stop_leftover_agents(proc: Path = Path("/proc")) -> list[int]:
    """SIGKILL every :func:`leftover_agents` (one INFO line says which); their pids. Not
    SIGTERM: with their raylet gone they ignore it (measured on Ray 2.60), and they hold
    nothing worth a graceful end."""
    found = leftover_agents(proc)
    for pid, _ in found:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:  # gone meanwhile, or not ours after all
            continue
    if found:
        log.info(
            "stopped %d process(es) a local Ray left when its worker died: %s",
            len(found),
            ", ".join(f"{title} pid {pid}" for pid, title in found),
        )
    return [pid for pid, _ in found]


def _processes(proc: Path) -> Iterator[tuple[int, int, str, int]]:
    """``(pid, parent pid, title, owner uid)`` of every process ``proc`` shows."""
    try:
        entries = list(proc.iterdir())
    except OSError:
        return
    for entry in entries:
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
            owner = entry.stat().st_uid
        except OSError:  # ended meanwhile, or not readable
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 1 and fields[1].isdigit():
            yield int(entry.name), int(fields[1]), title.strip(), owner
