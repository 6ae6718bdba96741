"""``streamtasks status`` drawn for a terminal: a :func:`~streamtasks.observe.inspect.gather_status`
dict as rich tables, fitted to the width it is drawn at.

From :data:`WIDE` columns on, one table row per stream with every number; narrower (an
80-column terminal), the same rows with short headers and short numbers (``12.3k``), and the
consumers and trimming in tables and lines of their own below, so no header is cut and no row
wraps. Every value that comes from Redis is drawn as plain text (never rich markup).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timezone
from typing import Any

from rich import box
from rich.console import Console, ConsoleOptions, RenderResult
from rich.table import Table
from rich.text import Text

from ..observe.inspect import NO_GROUP, secs
from ..observe.scheduled import due_in

#: From this many columns on, the full table (every column in one row per stream).
WIDE = 120
#: Columns the wide layout needs more when it shows delayed entries (their own column).
SCHEDULED_WIDTH = 12
#: Marks a stream without its consumer group in the narrow layout (explained below the table).
NO_GROUP_MARK = " *"
#: A number longer than this is shortened in the narrow layout (``1.2M``).
SHORT_DIGITS = 6


def num(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def short(value: int | None) -> str:
    """``num`` in at most :data:`SHORT_DIGITS` characters: ``99,999``, ``123.4k``, ``1.2M``."""
    exact = num(value)
    if value is None or len(exact) <= SHORT_DIGITS:
        return exact
    for unit, size in (("G", 10**9), ("M", 10**6), ("k", 10**3)):
        if abs(value) >= size:
            return f"{value / size:.1f}{unit}" if abs(value) < 100 * size else f"{value // size}{unit}"
    return exact


def waiting(s: Mapping[str, Any]) -> int | None:
    """What the lag column shows: the entries in the stream the group was not given yet."""
    value: int | None = s["undelivered"] if s.get("undelivered") is not None else s["lag"]
    return value


def consumer_text(c: Mapping[str, Any]) -> str:
    if c.get("live") and not c["pending"]:
        return f"{c['name']} (idle {secs(c['idle'])})"
    dead = "" if c.get("live") else ", DEAD"
    return f"{c['name']} ({c['pending']} pending, idle {secs(c['idle'])}{dead})"


class StatusView:
    """The renderable: streams, workers, what could not be read, and the verdict."""

    def __init__(self, status: Mapping[str, Any]) -> None:
        self.status = status

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        status = self.status
        if not status["redis"]["ok"]:  # nothing else to show: one line
            yield Text(f"UNHEALTHY: {status['problems'][0]}", style="bold red")
            return
        wide = options.max_width >= WIDE + SCHEDULED_WIDTH * _any_scheduled(status)
        yield from (_wide_streams(status) if wide else _narrow_streams(status))
        yield from _periodic(status)
        if status["group"] is None and not status["streams"]:
            yield Text("no consumer groups in this Redis (no worker has started on it)")
        if status.get("workers_known", True) is False:
            yield Text("live workers: not known (the heartbeats could not be read)", style="yellow")
        elif status["workers"]:
            yield _workers_table(status, wide)
        else:
            yield Text("no live workers", style="yellow")
        if status.get("actors"):
            yield _actors_table(status)
        yield from _not_checked(status)
        if status["ok"]:
            partly = " (as far as this Redis user may read: see above)" if status.get("not_checked") else ""
            yield Text(f"healthy{partly}", style="bold green")
        else:
            yield Text("UNHEALTHY", style="bold red")
            yield from (Text(f"  - {p}", style="red") for p in status["problems"])


def _title(status: Mapping[str, Any], what: str) -> Text:
    group = status["group"]
    return Text(f"{what} (group {group})" if group is not None else f"{what} (every consumer group)")


def _every_group(status: Mapping[str, Any]) -> bool:
    return status["group"] is None


def _group_cell(s: Mapping[str, Any]) -> str:
    return str(s["group"]) if s["group"] != NO_GROUP else "-"


def _stream_name(s: Mapping[str, Any]) -> str:
    return str(s["stream"]) + (" (no group)" if s["group_exists"] is False else "")


def _cells(s: Mapping[str, Any], n: Callable[[int | None], str]) -> dict[str, str]:
    """A stream's numbers as table cells, each number drawn by ``n``."""
    trim = s.get("trim") or {}
    return {
        "stream": _stream_name(s),
        "group": _group_cell(s),
        "length": n(s["length"]),
        "lag": n(waiting(s)),
        "pending": n(s["pending"]),
        "oldest": secs(s["oldest_pending_age"]),
        "dead": n(s["dead_letters"]),
        "added": n(s.get("added_1m")) + ("+" if s.get("added_1m_capped") else ""),
        "scheduled": scheduled_text(s, n),
        "trimmed": f"{num(trim.get('removed'))} ({trim.get('held_by') or '-'})",
        "consumers": ", ".join(consumer_text(c) for c in s["consumers"]) or "-",
    }


def _level_cells(base: str, t: Mapping[str, Any], n: Callable[[int | None], str]) -> dict[str, str]:
    """A prioritized stream's levels added up (``status["levels"]``)."""
    return {
        **_shard_cells(base, {**t, "shards": 0}, n),
        "stream": f"{base} (all {len(t['levels'])} levels)",
        "lag": n(t["lag"]),
        "scheduled": "",
    }


def _shard_cells(base: str, t: Mapping[str, Any], n: Callable[[int | None], str]) -> dict[str, str]:
    return {
        "stream": f"{base} (all {t['shards']} shards)",
        "group": "",
        "length": n(t["length"]),
        "lag": n(t.get("undelivered", t["lag"])),
        "pending": n(t["pending"]),
        "oldest": "",
        "dead": n(t["dead_letters"]),
        "added": "",
        "scheduled": n(t.get("scheduled")),
        "trimmed": "",
        "consumers": "",
    }


# -- wide: one row per stream, every column --------------------------------------------------

#: (cell, header) of the wide table; text columns fold, numbers never wrap.
_WIDE = [
    ("stream", "stream"),
    ("group", "group"),
    ("length", "length"),
    ("lag", "lag"),
    ("pending", "pending"),
    ("oldest", "oldest pending"),
    ("dead", "dead letters"),
    ("added", "added/1m"),
    ("scheduled", "scheduled"),
    ("trimmed", "trimmed (held by)"),
    ("consumers", "consumers"),
]


def _wide_streams(status: Mapping[str, Any]) -> Iterator[Any]:
    table = Table(title=_title(status, "streams"), title_justify="left")
    rows = [_cells(s, num) for s in status["streams"]]
    rows += [_shard_cells(base, t, num) for base, t in (status.get("shards") or {}).items()]
    rows += [_level_cells(base, t, num) for base, t in (status.get("levels") or {}).items()]
    shown = {"group": _every_group(status), "scheduled": _any_scheduled(status)}
    columns = [(k, h) for k, h in _WIDE if shown.get(k, True)]
    for key, header in columns:
        if key in ("stream", "group", "trimmed", "consumers"):  # wrapped in their cells, never cut
            table.add_column(header, overflow="fold", min_width=len(header) if key == "trimmed" else None)
        elif key == "scheduled":
            table.add_column(header, justify="right", overflow="fold", min_width=len("scheduled"))
        else:
            table.add_column(header, justify="right", no_wrap=True, min_width=len(header))
    for row in rows:
        table.add_row(*(Text(row[k]) for k, _ in columns))
    yield table


# -- narrow: short headers and numbers, the rest folded below --------------------------------

_NARROW = ["stream", "length", "lag", "pending", "oldest", "dead", "in/1m"]


def _narrow_table(title: Text | None, columns: list[str], left: tuple[str, ...]) -> Table:
    table = Table(
        title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True
    )
    for col in columns:
        if col in left:
            table.add_column(col, overflow="fold", min_width=len(col))
        else:
            table.add_column(col, justify="right", no_wrap=True, min_width=len(col))
    return table


def _narrow_streams(status: Mapping[str, Any]) -> Iterator[Any]:
    """One table per group (no group column), the sharded totals, the consumers, the trims."""
    by_group: dict[str, list[Mapping[str, Any]]] = {}
    for s in status["streams"]:
        by_group.setdefault(s["group"], []).append(s)
    for group, streams in by_group.items() or [(status["group"], [])]:
        title = _title(status, "streams") if not _every_group(status) else _group_title(group)
        table = _narrow_table(title, _NARROW, ("stream",))
        for s in streams:
            cells = {
                **_cells(s, short),
                "stream": str(s["stream"]) + NO_GROUP_MARK * (s["group_exists"] is False),
            }
            table.add_row(
                *(Text(cells[k]) for k in ("stream", "length", "lag", "pending", "oldest", "dead", "added"))
            )
        yield table
        if any(s["group_exists"] is False for s in streams):
            yield Text(f"{NO_GROUP_MARK.strip()} no consumer group", style="yellow")
    yield from _narrow_totals(status)
    yield from _narrow_consumers(status)
    for s in status["streams"]:
        if s.get("scheduled"):
            yield Text(f"{s['stream']}: {scheduled_text(s, short)} scheduled")
        trim = s.get("trim") or {}
        if trim.get("removed"):
            held = f" (held by {trim['held_by']})" if trim.get("held_by") else ""
            yield Text(f"{s['stream']}: {num(trim['removed'])} trimmed{held}")


def _any_scheduled(status: Mapping[str, Any]) -> bool:
    """Whether a stream has delayed entries waiting (the wide table then shows the column)."""
    shards = (status.get("shards") or {}).values()
    return any(s.get("scheduled") for s in [*status["streams"], *shards])


def scheduled_text(s: Mapping[str, Any], n: Callable[[int | None], str]) -> str:
    """Delayed entries waiting, and when the soonest is due: ``12 (in 4.2s)``."""
    count = s.get("scheduled")
    if not count:
        return n(count)
    return f"{n(count)} ({due_in(s.get('next_due_in'))})"


def _periodic(status: Mapping[str, Any]) -> Iterator[Any]:
    """The periodic handlers: schedule, last tick, next tick."""
    rows = [(s, s["periodic"]) for s in status["streams"] if s.get("periodic")]
    if not rows:
        return
    table = _narrow_table(
        Text("periodic handlers"), ["stream", "schedule", "last tick", "next tick"], ("stream", "schedule")
    )
    for s, p in rows:
        table.add_row(
            *map(Text, [s["stream"], p["schedule"] or "-", _when(p["last_tick"]), due_in(p["next_tick_in"])])
        )
    yield table


def _when(ts: float | None) -> str:
    return "-" if ts is None else datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _narrow_totals(status: Mapping[str, Any]) -> Iterator[Any]:
    """The sharded streams' shards added up, and the prioritized streams' levels."""
    for key, title, cells_of in (
        ("shards", "sharded streams (the shards added up)", _shard_cells),
        ("levels", "prioritized streams (the levels added up)", _level_cells),
    ):
        totals = status.get(key) or {}
        if not totals:
            continue
        table = _narrow_table(Text(title), [*_NARROW[:4], "dead"], ("stream",))
        for base, t in totals.items():
            cells = cells_of(base, t, short)
            table.add_row(*(Text(cells[k]) for k in ("stream", "length", "lag", "pending", "dead")))
        yield table


def _group_title(group: str | None) -> Text:
    return Text(f"streams (group {group})" if group != NO_GROUP else "streams (no consumer group)")


def _narrow_consumers(status: Mapping[str, Any]) -> Iterator[Any]:
    rows = [(s, c) for s in status["streams"] for c in s["consumers"]]
    if not rows:
        return
    columns = ["stream", "consumer", "pending", "idle", "live"]
    table = _narrow_table(Text("consumers"), columns, ("stream", "consumer"))
    for s, c in rows:
        live = "yes" if c.get("live") else "DEAD" if c.get("live") is False else "-"
        table.add_row(*map(Text, [s["stream"], c["name"], short(c["pending"]), secs(c["idle"]), live]))
    yield table


# -- workers and what was not checked ---------------------------------------------------------


def _workers_table(status: Mapping[str, Any], wide: bool) -> Table:
    """Wide: every column. Narrow: no streams, the host's first label, the group only when
    workers of several groups are listed."""
    groups = {w.get("group") for w in status["workers"]}
    if wide:
        workers = Table(title=Text("live workers"), title_justify="left")
        columns = ["consumer", "group", "state", "host", "pid", "last heartbeat", "in flight", "streams"]
        for col in columns:
            workers.add_column(col, overflow="fold")
    else:
        columns = [
            "consumer",
            *(["group"] if len(groups) > 1 else []),
            "state",
            "host",
            "pid",
            "beat",
            "in flight",
        ]
        workers = _narrow_table(Text("live workers"), columns, ("consumer", "group", "host"))
    for w in status["workers"]:
        host = str(w["host"] or "-")
        values = {
            "consumer": str(w["consumer"]),
            "group": str(w.get("group") or "-"),
            "state": str(w.get("state") or "-"),
            "host": host if wide else host.split(".")[0],
            "pid": str(w["pid"] or "-"),
            "last heartbeat": secs(w["heartbeat_age"]) + " ago",
            "beat": secs(w["heartbeat_age"]) + " ago",
            "in flight": num(w["in_flight"]),
            "streams": ", ".join(w["streams"]),
        }
        workers.add_row(*(Text(values[col]) for col in columns))
    return workers


def _not_checked(status: Mapping[str, Any]) -> Iterator[Text]:
    lines = status.get("not_checked") or []
    if lines:
        yield Text("not checked (the Redis user may not run these):", style="yellow")
        yield from (Text(f"  - {line}", style="yellow") for line in lines)


def _actors_table(status: Mapping[str, Any]) -> Any:
    """Actor-mode workers' actors, per group of handlers: running of desired, what is still
    starting (Ray has not placed it), the bounds of ``--actors auto``, the last decision."""
    table = Table(title="actors", title_justify="left")
    for col in ("worker", "handlers", "running / desired", "starting", "min-max", "last decision"):
        table.add_column(col)
    for pool in status["actors"]:
        for g in pool["groups"]:
            bounds = "fixed" if g["min"] is None else f"{g['min']}-{g['max']}"
            table.add_row(
                str(pool["consumer"]),
                ", ".join(g["handlers"]),
                f"{g['running']} / {g['desired']}",
                str(g["starting"]),
                bounds,
                g["reason"] or "-",
            )
    return table
