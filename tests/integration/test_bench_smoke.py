"""The benchmark suite runs end to end at a tiny size and reports the ratios (not a timed test)."""

from __future__ import annotations

import io
import json

import pytest
from rich.console import Console

from streamtasks.bench import BenchOptions, report, run_bench

pytestmark = pytest.mark.integration

N = 3000


async def test_bench_drains_with_both_consumers_and_reports_ratio_rows(
    redis_url: str, database_url: str
) -> None:
    """Lean loop and streamtasks each store all N rows; latency, producer and the table follow."""
    opts = BenchOptions(
        n=N, rate=500, latency_seconds=1.0, producer_n=300, skip=frozenset({"big"}),
        redis_url=redis_url, database_url=database_url,
    )  # fmt: skip
    out = io.StringIO()
    console = Console(file=out, width=200)
    results = await run_bench(opts, console)

    for kind in ("lean", "streamtasks"):
        (run,) = results["drain"][kind]
        assert run["rows"] == N, f"{kind} stored {run['rows']} of {N} rows"
        assert run["rows_per_s"] > 0 and run["startup_s"] > 0
        assert run["peak_rss_mb"] > 0
        assert results["latency"][kind]["probes"] > 0
    assert (
        results["drain"]["streamtasks"][0]["peak_tree_rss_mb"]
        > results["drain"]["streamtasks"][0]["peak_rss_mb"]
    )
    for way in ("send_many", "gathered_sends", "gathered_facade"):
        assert results["producer"][f"{way}_ratio"] > 0
    json.dumps(results)  # --json must be able to print it

    report(results, console)
    text = out.getvalue()
    assert "streamtasks / lean" in text
    drain_row = next(line for line in text.splitlines() if f"drain {N:,} backlog" in line)
    assert drain_row.rstrip(" │").endswith("x")  # the ratio column
    assert "steady rows/s" in text
    assert "Producer.send_many" in text
