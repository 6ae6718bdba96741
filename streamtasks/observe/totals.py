"""Sharded and prioritized streams added up, from the samples of :mod:`.inspect` (pure): what
``status``, ``/metrics`` and the dashboard show as one row for all a stream's shards, and per
priority level."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .. import keys


def shard_totals(samples: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per sharded stream: its shards' numbers added up (``lag`` None if any shard's is)."""
    out: dict[str, dict[str, Any]] = {}
    for s in samples:
        base = keys.shard_base(s["stream"])
        if base is None:
            continue
        total = out.setdefault(
            base,
            {
                "shards": 0,
                "length": 0,
                "lag": 0,
                "undelivered": 0,
                "pending": 0,
                "dead_letters": 0,
                "scheduled": 0,
            },
        )
        total["shards"] += 1
        for name in ("length", "pending", "dead_letters", "scheduled"):
            total[name] += int(s[name] or 0)
        for name in ("lag", "undelivered"):
            total[name] = None if total[name] is None or s[name] is None else total[name] + s[name]
    return out


_SUMMED = ("length", "lag", "pending", "dead_letters")


def level_totals(samples: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per prioritized stream (one with a level-1+ stream among ``samples``): ``levels``, one
    dict per level (``level``, and its streams' numbers added up), and the levels' totals
    (``lag`` None if any stream's is)."""
    placed = [(*keys.level_of(s["stream"]), s) for s in samples]
    prioritized = {base for base, level, _ in placed if level > 0}
    out: dict[str, dict[str, Any]] = {}
    for base, level, s in sorted(placed, key=lambda p: (p[0], p[1])):
        if base not in prioritized:
            continue
        total = out.setdefault(base, {"levels": [], **dict.fromkeys(_SUMMED, 0)})
        if not total["levels"] or total["levels"][-1]["level"] != level:
            total["levels"].append({"level": level, **dict.fromkeys(_SUMMED, 0)})
        for row in (total, total["levels"][-1]):
            for name in _SUMMED:
                row[name] = None if row[name] is None or s[name] is None else row[name] + int(s[name])
    return out
