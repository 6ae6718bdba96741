"""``status``'s priority-level totals (pure): per prioritized stream, each level's numbers
with its shards added up, and all levels together; unprioritized streams left alone."""

from __future__ import annotations

from typing import Any

from streamtasks.observe.totals import level_totals


def _sample(stream: str, length: int, lag: int | None, pending: int = 0, dead: int = 0) -> dict[str, Any]:
    return {"stream": stream, "length": length, "lag": lag, "pending": pending, "dead_letters": dead}


def test_levels_of_a_sharded_stream_are_summed_per_level_and_overall() -> None:
    samples = [
        _sample("orders:{0}", 3, 1), _sample("orders:{1}", 4, 2, pending=1),
        _sample("orders:p1:{0}", 5, 5, dead=2), _sample("orders:p1:{1}", 6, None),
        _sample("plain", 9, 9), _sample("other:{0}", 1, 1),
    ]  # fmt: skip
    totals = level_totals(samples)
    assert list(totals) == ["orders"]
    orders = totals["orders"]
    rows = [(r["level"], r["length"], r["lag"], r["pending"], r["dead_letters"]) for r in orders["levels"]]
    assert rows == [(0, 7, 3, 1, 0), (1, 11, None, 0, 2)]
    assert (orders["length"], orders["lag"], orders["pending"], orders["dead_letters"]) == (18, None, 1, 2)


def test_a_stream_is_prioritized_only_when_a_lower_level_is_there() -> None:
    assert level_totals([_sample("orders", 1, 0)]) == {}
    got = level_totals([_sample("orders:p2", 2, 2)])
    assert [r["level"] for r in got["orders"]["levels"]] == [2]
