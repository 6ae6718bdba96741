"""The results of ``run.py`` (plain data, as ``--json`` prints them) as rich tables."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

#: CPU categories of the job table, in this order (``harness._category`` names them).
JOB_CPU = ("router", "children", "ray workers", "ray system", "postgres", "redis-server")
JOB_CPU_LABELS = {
    "router": "router / driver / main process",
    "children": "other child processes (FastStream workers)",
}


def _k(v: float) -> str:
    return f"{v / 1000:.1f}k" if v >= 1000 else f"{v:.0f}"


def _runs(values: Sequence[float], fmt: Callable[[float], str] = _k) -> str:
    return " / ".join(fmt(v) for v in values)


def _ratio(a: Sequence[float], b: Sequence[float]) -> str:
    return " / ".join(f"{x / y:.2f}x" if y else "-" for x, y in zip(a, b, strict=True))


def _us(v: float) -> str:
    return f"{v:.1f}"


def _sec(v: float) -> str:
    return f"{v:.2f}s"


def _mb(v: float) -> str:
    return f"{v:.0f} MB"


def report(results: dict[str, Any], console: Console) -> None:
    """Print the results as rich tables."""
    table = Table(title="streamtasks vs the lean loop (same run; 'a / b' = repeated runs)")
    for col in ("metric", "lean loop", "streamtasks", "streamtasks / lean"):
        table.add_column(col, justify="right" if col != "metric" else "left")
    if "drain" in results:
        _drain_rows(table, results["drain"], results["options"]["n"])
    if "latency" in results:
        _latency_rows(table, results["latency"])
    if table.row_count:
        console.print(table)
    if "drain" in results:
        _cpu_table(results["drain"]["streamtasks"][-1], results["drain"]["lean"][-1], console)
    if "job" in results:
        _job_table(results["job"], console)
    if "producer" in results:
        _producer_table(results["producer"], console)
    if "big" in results:
        _big_line(results["big"], console)
    if "curve" in results:
        _curve_table(results["curve"], console)


def _big_line(big: dict[str, Any], console: Console) -> None:
    for lean, st in zip(big["lean"], big["streamtasks"], strict=True):
        console.print(
            f"[bold]Backlog of {big['n']:,} entries of {big['entry_kb']} KB[/]: drain "
            f"{st['rows_per_s']:,} rows/s vs lean loop {lean['rows_per_s']:,} "
            f"({st['rows_per_s'] / max(lean['rows_per_s'], 1):.2f}x; steady {st['steady_rows_per_s']:,} vs "
            f"{lean['steady_rows_per_s']:,}); worker RSS peak {st['peak_rss_mb']:.0f} MB (target < 250 MB), "
            f"Ray tree {st['peak_tree_rss_mb']:.0f} MB; lean loop {lean['peak_rss_mb']:.0f} MB"
        )


def _curve_table(points: list[dict[str, Any]], console: Console) -> None:
    curve = Table(title="Per-entry cost vs backlog size (streamtasks, first ack -> last ack)")
    for col in ("backlog", "µs / entry", "rows/s (drain, start-up incl.)", "steady rows/s", "worker RSS MB"):
        curve.add_column(col, justify="right")
    for c in points:
        curve.add_row(
            f"{c['n']:,}", f"{c['per_entry_us']:.1f}", f"{c['rows_per_s']:,}",
            f"{c['steady_rows_per_s']:,}", f"{c['peak_rss_mb']:.0f}",
        )  # fmt: skip
    console.print(curve)


def _drain_rows(table: Table, drain: dict[str, list[dict[str, Any]]], n: int) -> None:
    def col(kind: str, key: str) -> list[float]:
        return [float(r[key]) for r in drain[kind]]

    for label, key, fmt in (
        (f"drain {n:,} backlog, rows/s (start-up incl.)", "rows_per_s", _k),
        ("steady rows/s (20-80 % of the backlog)", "steady_rows_per_s", _k),
        ("start-up: spawn -> first XREADGROUP", "startup_s", _sec),
        ("spawn -> first row committed", "first_ack_s", _sec),
        ("peak RSS, consumer process", "peak_rss_mb", _mb),
        ("peak RSS, consumer + Ray process tree", "peak_tree_rss_mb", _mb),
    ):
        lean, st = col("lean", key), col("streamtasks", key)
        ratio = _ratio(st, lean) if key in ("rows_per_s", "steady_rows_per_s") else ""
        table.add_row(label, _runs(lean, fmt), _runs(st, fmt), ratio)


def _latency_rows(table: Table, lat: dict[str, dict[str, Any]]) -> None:
    lean, st = lat["lean"], lat["streamtasks"]
    for which, label in (("visible_ms", "XADD -> row visible"), ("stored_ms", "XADD -> stored_at")):
        for p in ("p50", "p95", "p99"):
            table.add_row(
                f"{label} {p} at {st['offered_per_s']:,}/s (ms)",
                f"{lean[which][p]:.1f}",
                f"{st[which][p]:.1f}",
                "",
            )


def _cpu_table(st: dict[str, Any], lean: dict[str, Any], console: Console) -> None:
    """CPU seconds over the whole drain (start-up included) and µs per entry in the steady
    window (20-80 % acked), by process group, with the steady ratio of all processes."""
    table = Table(title="CPU during the drain, per process (last run)")
    table.add_column("process")
    table.add_column("lean loop, s", justify="right")
    table.add_column("streamtasks, s", justify="right")
    table.add_column("lean, µs/entry steady", justify="right")
    table.add_column("streamtasks, µs/entry steady", justify="right")
    cats = sorted(set(st["cpu_s"]) | set(lean["cpu_s"]), key=lambda c: -st["cpu_s"].get(c, 0.0))
    for cat in cats:
        table.add_row(
            "consumer process" if cat == "router" else cat,
            f"{lean['cpu_s'].get(cat, 0.0):.1f}",
            f"{st['cpu_s'].get(cat, 0.0):.1f}",
            f"{lean['steady_cpu_us'].get(cat, 0.0):.1f}",
            f"{st['steady_cpu_us'].get(cat, 0.0):.1f}",
        )
    lean_us, st_us = sum(lean["steady_cpu_us"].values()), sum(st["steady_cpu_us"].values())
    ratio = f" ({st_us / lean_us:.2f}x)" if lean_us else ""
    table.add_row("all processes", "", "", f"{lean_us:.1f}", f"{st_us:.1f}{ratio}")
    table.add_row("wall seconds", f"{lean['seconds']:.1f}", f"{st['seconds']:.1f}", "", "")
    console.print(table)


def _job_table(job: dict[str, Any], console: Console) -> None:
    """One column per peer; CPU as µs per entry (all runs' mean) by process group."""
    runs: dict[str, list[dict[str, Any]]] = job["runs"]
    kinds = list(runs)
    n = job["n"]
    table = Table(title=f"The job: {n:,} five-field entries -> COPY, per consumer ('a / b' = repeated runs)")
    table.add_column("metric")
    for kind in kinds:
        table.add_column(kind, justify="right")
    for label, key, fmt in (
        ("steady rows/s (20-80 %)", "steady_rows_per_s", _k),
        (f"drain {n:,} rows/s (start-up incl.)", "rows_per_s", _k),
        ("start-up: spawn -> first row committed", "first_ack_s", _sec),
        ("peak RSS of the process tree", "peak_tree_rss_mb", _mb),
    ):
        table.add_row(label, *(_runs([float(r[key]) for r in runs[k]], fmt) for k in kinds))
    for label, key in (("steady", "steady_rows_per_s"), ("drain", "rows_per_s")):
        if "lean" in runs:
            cells = [_ratio([r[key] for r in runs[k]], [r[key] for r in runs["lean"]]) for k in kinds]
            table.add_row(f"{label}: this / lean loop", *cells)
        for ours in ("streamtasks", "streamtasks-actors"):
            if ours in runs:
                cells = [_ratio([r[key] for r in runs[ours]], [r[key] for r in runs[k]]) for k in kinds]
                table.add_row(f"{label}: {ours} / this", *cells)
    cats = [c for c in JOB_CPU if any(c in r["cpu_s"] for k in kinds for r in runs[k])]
    for cat in cats:
        label = f"CPU µs/entry, steady: {JOB_CPU_LABELS.get(cat, cat)}"
        table.add_row(
            label, *(_runs([r["steady_cpu_us"].get(cat, 0.0) for r in runs[k]], _us) for k in kinds)
        )
    table.add_row(
        "CPU µs/entry, steady: all processes",
        *(_runs([sum(r["steady_cpu_us"].values()) for r in runs[k]], _us) for k in kinds),
    )
    table.add_row("CPU µs/entry, whole run: all processes", *(_cpu_us(runs[k], None) for k in kinds))
    console.print(table)


def cpu_per_entry_us(run: dict[str, Any], cat: str | None) -> float:
    """CPU µs per entry of one run, for one process group or (``None``) all of them."""
    cpu: dict[str, float] = run["cpu_s"]
    seconds = sum(cpu.values()) if cat is None else cpu.get(cat, 0.0)
    return float(seconds / run["n"] * 1e6)


def _cpu_us(runs: list[dict[str, Any]], cat: str | None) -> str:
    return " / ".join(f"{cpu_per_entry_us(r, cat):.1f}" for r in runs)


def _producer_table(p: dict[str, Any], console: Console) -> None:
    table = Table(title="Producer: entries/s into Redis (same pre-encoded entries)")
    for col in ("method", "entries/s", "vs raw pipeline"):
        table.add_column(col, justify="right" if col != "method" else "left")
    table.add_row("raw redis-py pipeline loop (1000 per execute)", _k(p["raw_pipeline"]), "1.00x")
    for key, label in (
        ("send_many", "Producer.send_many"),
        ("gathered_sends", "concurrent Producer.send, gathered"),
        ("gathered_facade", "concurrent AsyncProcessingSystem.send_training_data, gathered"),
    ):
        table.add_row(label, _k(p[key]), f"{p[key + '_ratio']:.2f}x")
    console.print(table)
