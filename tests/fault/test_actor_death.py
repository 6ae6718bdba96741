"""Actor mode: an actor's death is recovered the moment Ray reports it. kill -9 of an actor's
process mid-batch: its entries are handled by another actor within seconds (not after the
visibility timeout), exactly the dead consumer's entries are taken (a live actor's are not,
however long its handler runs), and the death is one line in the worker's log."""

from __future__ import annotations

import os
import re
import signal
import time
from typing import Any

import pytest
from support.invariants import Invariants, Workers, poll

pytestmark = [pytest.mark.fault, pytest.mark.integration]

#: Within this many seconds of the kill the dead actor's entry runs again (the visibility
#: timeout is 30 s: only the recovery on death can do it).
RECOVERED_WITHIN_S = 3.0
DEATH_LINE = re.compile(
    r"actor (\d+) \((\S+), pid (\d+) on node \S+ \(\w+\)\) died: .*; it held (\d+) entries"
)


def _pid(ledger: Any, i: int) -> int:
    return int(ledger.lindex("pids", i).split()[0])


def _quiet_about_the_death(log: str) -> None:
    """One line, not a traceback, a supervisor's restart or Ray's own "worker died" line."""
    assert len(DEATH_LINE.findall(log)) == 1, log
    assert "background loop 'actor-" not in log and "Traceback" not in log, log
    assert "A worker died or was killed" not in log, log


async def test_a_killed_actors_entries_are_handled_by_another_within_seconds(
    inv: Invariants, workers: Workers, ledger: Any
) -> None:
    """kill -9 of the actor running the marker (visibility timeout 30 s): the marker runs
    again in another process within 3 s; nothing lost; only the killed batch ran twice."""
    w = workers.start(
        name="pool",
        args=["--mode", "actors", "--actors", "2", "--visibility-timeout", "30"],
        env={"FAULT_BATCH_SIZE": "10"},
    )
    marker = (await inv.send_each([{"pid": "1"}]))[0]
    await inv.send(200)
    await poll(lambda: ledger.llen("pids") >= 1, 30, "the handler recorded its pid", workers.logs)
    killed = _pid(ledger, 0)
    os.kill(killed, signal.SIGKILL)
    started = time.monotonic()
    await poll(lambda: ledger.llen("pids") >= 2, 30, "the marker ran again", workers.logs)
    took = time.monotonic() - started
    print(f"kill -9 -> the marker running in another process: {took:.2f}s")
    assert _pid(ledger, 1) != killed
    assert took < RECOVERED_WITHIN_S, f"{took:.1f}s\n{w.output_tail()}"
    ledger.set("release", 1)
    out, _ = await inv.check(60, may_repeat=inv.sent, logs=workers.logs)
    assert len(out.handled) == 201 and not out.dead
    assert len(out.duplicates) <= 10  # the killed batch only
    assert int(ledger.hget("runs", marker)) == 2
    [(index, consumer, pid, held)] = DEATH_LINE.findall(w.output())
    assert int(pid) == killed and consumer == f"{consumer.rsplit('-a', 1)[0]}-a{index}" and int(held) >= 1
    _quiet_about_the_death(w.output())
    w.terminate()
    assert w.wait(60) == 0, w.output_tail()


async def test_the_recovery_takes_only_the_dead_actors_entries_never_a_slow_live_ones(
    inv: Invariants, workers: Workers, ledger: Any
) -> None:
    """Two actors, each running one long entry at a time with one more read ahead (4 sent:
    each holds 2). The one killed has its 2 entries handed over; the live one's running entry
    keeps its lease well past the visibility timeout (3 s) and runs once."""
    w = workers.start(
        name="pool",
        args=["--mode", "actors", "--actors", "2"],
        env={"FAULT_BATCH_SIZE": "1", "FAULT_MAX_IN_FLIGHT": "1"},
    )
    await inv.send_each([{"pid": "1"} for _ in range(4)])
    await poll(lambda: ledger.llen("pids") >= 2, 30, "both actors run an entry", workers.logs)
    (slow_pid, slow), (victim_pid, victim) = [
        (int(pid), key.decode()) for pid, key in (line.split() for line in ledger.lrange("pids", 0, 1))
    ]
    assert slow_pid != victim_pid, "one actor runs one entry at a time"
    os.kill(victim_pid, signal.SIGKILL)
    await poll(lambda: ledger.llen("pids") >= 3, 30, "the dead actor's entries ran again", workers.logs)
    time.sleep(7)  # the slow entry runs on, over twice the visibility timeout  # noqa: ASYNC251
    assert int(ledger.hget("runs", slow)) == 1, w.output_tail()
    ledger.set("release", 1)
    out, _ = await inv.check(60, may_repeat={victim}, logs=workers.logs)
    assert len(out.handled) == 4 and int(ledger.hget("runs", slow)) == 1
    assert sum(int(n) for n in ledger.hvals("runs")) == 5  # the killed entry ran twice, no other
    [(_, _, pid, held)] = DEATH_LINE.findall(w.output())
    assert (int(pid), int(held)) == (victim_pid, 2)
    _quiet_about_the_death(w.output())
    w.terminate()
    assert w.wait(60) == 0, w.output_tail()
