"""No loop the worker starts runs unsupervised: every task it spawns is either a supervised
loop (``worker/supervise.py``) or a task whose end is awaited where it is started."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import streamtasks.worker

WORKER_DIR = Path(streamtasks.worker.__file__).parent
#: Where a task may be created outside the supervisor, and why that is safe.
ALLOWED = {
    "supervise.py": "the supervisor itself",
    "dispatch.py": "one task per batch; its end settles the batch and is awaited on drain",
    "startup.py": "the executor's start and a stop watcher, both ended before it returns",
    "inline_start.py": "the inline start: a Worker (its loops supervised) whose run is awaited by "
    "stop() when the worker command ends; its failure is logged at once and the worker goes on",
}
SPAWNERS = ("create_task", "ensure_future", "run_coroutine_threadsafe")


def test_every_task_the_worker_creates_is_supervised_or_awaited() -> None:
    found: dict[str, int] = {}
    for path in sorted(WORKER_DIR.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            func = node.func if isinstance(node, ast.Call) else None
            if isinstance(func, ast.Attribute) and func.attr in SPAWNERS:
                found[path.name] = found.get(path.name, 0) + 1
    assert set(found) <= set(ALLOWED), f"tasks created outside the supervisor: {found}"
    assert "worker.py" not in found, "Worker starts its loops with self.supervisor.spawn"


def test_the_worker_spawns_its_loops_through_the_supervisor() -> None:
    source = (WORKER_DIR / "worker.py").read_text()
    tree = ast.parse(source)
    loops = {n.name for n in ast.walk(tree) if isinstance(n, ast.AsyncFunctionDef)}
    loops = {name for name in loops if name.endswith("_loop")}
    spawned = set(re.findall(r"self\.supervisor\.spawn\(\"\w+\", self\.(\w+)\)", source))
    # run() awaits the read loop itself: its failure ends run() (and the process, non-zero)
    assert loops - {"_read_loop"} <= spawned, loops - spawned


def test_a_failed_step_outside_a_loop_is_visible_until_it_works_again() -> None:
    from streamtasks.worker.events import Event, LoopFailed
    from streamtasks.worker.supervise import Supervisor

    events: list[Event] = []
    supervisor = Supervisor(events.append)
    supervisor.failed("settle", PermissionError("NOPERM xack"))
    assert supervisor.failing == {"settle": "PermissionError: NOPERM xack"}
    assert events == [LoopFailed("settle", "PermissionError: NOPERM xack", 0.0)]
    supervisor.healthy("settle")
    assert supervisor.failing == {}
