"""The benchmark suite (``benchmarks/run.py``, outside the package) runs end to end at a tiny
size, the way a user runs it, and reports the ratios and the job's peers (not a timed test)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
RUN = ROOT / "benchmarks" / "run.py"
N = 3000
PEERS = (
    "lean", "ray-driver", "faststream", "streamtasks", "streamtasks-actors", "streamtasks-inline",
    "streamtasks-actors-inline",
)  # fmt: skip


def run_bench(redis_url: str, database_url: str) -> tuple[dict[str, Any], str]:
    """``python benchmarks/run.py ... --json`` at N entries: (results, tables on stderr)."""
    argv = [sys.executable, str(RUN), "--n", str(N), "--rate", "500", "--latency-seconds", "1"]
    argv += ["--producer-n", "300", "--skip", "big", "--redis-url", redis_url]
    argv += ["--database-url", database_url, "--json"]
    env = {**os.environ, "COLUMNS": "250"}
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=240, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout), done.stderr


@pytest.mark.timeout(300)
def test_bench_runs_every_phase_and_reports_ratios_and_peers(redis_url: str, database_url: str) -> None:
    """One run of the suite: the built-ins' drain, latency and producer phases and the job's
    peers each complete and are reported (the checks below say what each must show)."""
    results, text = run_bench(redis_url, database_url)
    check_builtins_vs_lean(results, text)
    check_job_peers(results, text)


def check_builtins_vs_lean(results: dict[str, Any], text: str) -> None:
    """Lean loop and streamtasks each store all N rows; latency, producer and the table follow."""
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

    assert "streamtasks / lean" in text
    drain_row = next(line for line in text.splitlines() if f"drain {N:,} backlog" in line)
    assert drain_row.rstrip(" │").endswith("x")  # the ratio column
    assert "steady rows/s" in text
    assert "Producer.send_many" in text


def check_job_peers(results: dict[str, Any], text: str) -> None:
    """Ray driver, FastStream, streamtasks (task and actor mode, each also with --inline-start)
    and the lean loop each COPY all N job rows; the table
    gives start-up, tree RSS and CPU per entry by process group (Ray workers for the Ray ones)."""
    runs = results["job"]["runs"]
    assert tuple(runs) == PEERS
    for kind in PEERS:
        (run,) = runs[kind]
        assert run["rows"] == N, f"{kind} stored {run['rows']} of {N} rows"
        assert run["first_ack_s"] > 0 and run["peak_tree_rss_mb"] > 0
        assert run["cpu_s"].get("router", 0) > 0  # (services' CPU only for throwaway ones)
    for kind in ("ray-driver", "streamtasks", "streamtasks-actors"):
        assert runs[kind][0]["cpu_s"].get("ray workers", 0) > 0, f"{kind}: {runs[kind][0]}"
    assert runs["faststream"][0]["cpu_s"].get("children", 0) > 0  # its two worker processes
    assert f"The job: {N:,} five-field entries" in text
    assert "CPU µs/entry, steady: all processes" in text
    assert "streamtasks / this" in text
