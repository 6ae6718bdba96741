"""What ``status`` calls a problem, judged from the samples of :mod:`.inspect` (pure: no I/O).

A number that could not be read (``None``: the user may not run the command) is no evidence
either way: the judgements that need it are not made, and ``status`` says what it did not
check (:meth:`~.readings.Findings.not_checked`).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from .scheduled import schedule_problems

#: The group of a named stream that has no consumer group at all (``group=None``).
NO_GROUP = ""


def failing_or_lost(streams: list[dict[str, Any]], workers: list[dict[str, Any]]) -> list[str]:
    """Keys of delayed entries and periodic handlers that do not fit; workers whose background
    loops fail; lags that cannot drain (entries trimmed unread)."""
    problems = schedule_problems(streams)
    problems += [
        f"worker {w['consumer']}: background loop {', '.join(map(repr, w['failing_loops']))} failing "
        "(see its log)"
        for w in workers
        if w.get("failing_loops")
    ]
    problems += [
        f"{s['stream']}: lag {s['lag']} cannot drain: {s['undeliverable']} entries were trimmed or "
        f"deleted before group {s['group']!r} read them (lost)"
        for s in streams
        if s.get("undeliverable")
    ]
    return problems


def judge(
    streams: list[dict[str, Any]],
    workers: list[dict[str, Any]] | None,
    stuck_after: float,
    named: Collection[str] = (),
) -> tuple[list[str], list[dict[str, Any]]]:
    """Problems (one line each) and dead consumers (pending entries, no live heartbeat).

    A stream without its group is a problem when it has entries, or when it is ``named``
    (asked for by name: nothing reads it, perhaps a typo), unless a live worker of the group
    serves it (a starting worker creates its group). ``workers`` None: the heartbeats could
    not be read, so nothing is judged that needs to know who is alive.
    """
    problems: list[str] = failing_or_lost(streams, workers or [])
    dead: list[dict[str, Any]] = []
    for s in streams:
        name = s["stream"]
        of_group = [w for w in workers or [] if w.get("group", s["group"]) == s["group"]]
        serving = [w for w in of_group if not w["streams"] or name in w["streams"]]
        if s["group_exists"] is False:
            if workers is not None and not serving and (s["length"] or name in named):
                what = f"{s['length']} entries" if s["length"] else "no entries"
                grp = f" {s['group']!r}" if s["group"] != NO_GROUP else ""
                problems.append(f"{name}: {what} and no consumer group{grp}: no worker reads it")
            continue
        if workers is not None:
            problems += _dead_consumers(s, {w["consumer"] for w in of_group}, dead)
        age = s["oldest_pending_age"]
        if age is not None and age > stuck_after:
            problems.append(
                f"{name}: oldest pending entry {s['oldest_pending_id']} is {age:.0f}s old "
                f"(> --stuck-after {stuck_after:.0f}s)"
            )
        if workers is not None and not serving and (s["pending"] or s["undelivered"]):
            problems.append(
                f"{name}: no live worker, but {s['pending'] or 0} pending and {s['undelivered'] or 0} "
                "undelivered entries"
            )
    return problems, dead


def _dead_consumers(s: dict[str, Any], live: set[str], dead: list[dict[str, Any]]) -> list[str]:
    """Consumers of ``s`` holding pending entries without a live heartbeat (added to ``dead``)."""
    problems = []
    for c in s["consumers"]:
        c["live"] = c["name"] in live
        if c["pending"] and not c["live"]:
            dead.append(
                {"stream": s["stream"], "consumer": c["name"], "pending": c["pending"], "idle": c["idle"]}
            )
            problems.append(
                f"{s['stream']}: dead consumer {c['name']} holds {c['pending']} pending entries "
                f"(no heartbeat; idle {c['idle']:.0f}s)"
            )
    return problems
