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
    "executors.py": "an async batch on the adopted process loop: returned to the dispatcher, "
    "which awaits it like a pool thread's batch (its failure fails the batch)",
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


async def test_close_ends_a_loop_that_lost_its_first_cancellation() -> None:
    """A loop that runs on after a cancellation (as one does when ``asyncio.wait_for`` before
    Python 3.12 swallows it) is cancelled again: close() returns and the loop has ended."""
    import asyncio

    from streamtasks.worker.supervise import Supervisor

    swallowed = asyncio.Event()
    ran_on = 0

    async def loses_one_cancel() -> None:
        nonlocal ran_on
        while True:
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                if swallowed.is_set():
                    raise
                swallowed.set()  # the first one is lost, as in wait_for's race
            ran_on += swallowed.is_set()

    supervisor = Supervisor(lambda event: None)
    supervisor.spawn("stubborn", loses_one_cancel)
    await asyncio.sleep(0.05)
    await asyncio.wait_for(supervisor.close(), timeout=5)
    assert swallowed.is_set() and ran_on > 0  # it did run on after the first cancellation
    assert not supervisor._tasks  # and it has ended


async def test_cancel_and_wait_leaves_no_error_unretrieved() -> None:
    import asyncio
    import gc

    from streamtasks.aio import cancel_and_wait

    async def fails() -> None:
        raise ValueError("boom")

    async def sleeps() -> None:
        await asyncio.sleep(60)

    failed, sleeping = asyncio.create_task(fails()), asyncio.create_task(sleeps())
    await asyncio.sleep(0)
    reported: list[object] = []
    asyncio.get_running_loop().set_exception_handler(lambda loop, context: reported.append(context))
    await cancel_and_wait([failed, sleeping])
    assert sleeping.cancelled() and isinstance(failed.exception(), ValueError)
    del failed, sleeping
    gc.collect()
    assert reported == []
