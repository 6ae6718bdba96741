#!/usr/bin/env python3
"""The benchmark suite: ``python benchmarks/run.py --help`` (needs the ``bench`` extra).

Starts throwaway Redis and PostgreSQL (unless ``--redis-url``/``--database-url``), drains a
backlog with the lean loop and with ``streamtasks worker streamtasks.builtins:registry``,
runs the five-field job with the hand-written Ray driver, FastStream and a streamtasks batch
handler, measures latency at a fixed offered load, the producer, and the worker's memory, and
prints tables with the ratios. See ``benchmarks/README.md``.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import Any

# A source checkout without an install: streamtasks from the repository (this directory,
# with the harness modules, is already first on sys.path).
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

import click
import peers
from report import report
from rich.console import Console
from suite import (
    CURVE_SIZES,
    DEFAULT_BIG_KB,
    DEFAULT_BIG_N,
    DEFAULT_LATENCY_SECONDS,
    DEFAULT_N,
    DEFAULT_PRODUCER_N,
    DEFAULT_RATE,
    PHASES,
    BenchOptions,
    run_bench,
)


def _sizes(value: str | None) -> tuple[int, ...]:
    return tuple(int(s) for s in value.split(",")) if value else CURVE_SIZES


@click.command()
@click.option(
    "--n",
    "n",
    type=click.IntRange(min=1000),
    default=DEFAULT_N,
    show_default=True,
    help="Backlog size of the drain runs (the acceptance run uses 200000).",
)
@click.option(
    "--repeat",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Drain runs per consumer (alternating between the consumers).",
)
@click.option(
    "--rate",
    type=click.IntRange(min=1),
    default=DEFAULT_RATE,
    show_default=True,
    help="Offered load of the latency runs, entries/s.",
)
@click.option(
    "--latency-seconds", type=click.FloatRange(min=1), default=DEFAULT_LATENCY_SECONDS, show_default=True
)
@click.option("--producer-n", type=click.IntRange(min=1), default=DEFAULT_PRODUCER_N, show_default=True)
@click.option(
    "--big-n",
    type=click.IntRange(min=0),
    default=DEFAULT_BIG_N,
    show_default=True,
    help="Entries of the big-entry RSS check (0: skip it).",
)
@click.option("--big-kb", type=click.IntRange(min=1), default=DEFAULT_BIG_KB, show_default=True)
@click.option("--curve", is_flag=True, help="Also drain backlogs of 10k / 100k / 1M entries (slow).")
@click.option("--curve-sizes", help="Comma-separated backlog sizes for --curve.")
@click.option("--job-n", type=click.IntRange(min=1000), help="Backlog of the job phase (default: --n).")
@click.option(
    "--peers",
    "job_peers",
    default=",".join(peers.KINDS),
    show_default=True,
    help="Comma-separated consumers of the job phase.",
)
@click.option("--skip", multiple=True, type=click.Choice(PHASES))
@click.option("--only", multiple=True, type=click.Choice(PHASES), help="Run only these phases.")
@click.option("--num-cpus", type=click.IntRange(min=1), help="CPUs of the local Ray (worker and driver).")
@click.option(
    "--redis-url", help="Use this Redis (own stream names, deleted after) instead of a throwaway one."
)
@click.option(
    "--database-url", help="Use this PostgreSQL (own schema, dropped after) instead of a throwaway one."
)
@click.option("--keep-dir", is_flag=True, help="Keep the work directory (consumer logs).")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the results as JSON on stdout (progress and tables on stderr).",
)
def main(
    as_json: bool,
    curve_sizes: str | None,
    job_peers: str,
    skip: tuple[str, ...],
    only: tuple[str, ...],
    **kw: Any,
) -> None:
    """Benchmark the built-in handlers against the lean loop, and the job against its peers."""
    kinds = tuple(k for k in job_peers.split(",") if k)
    unknown = set(kinds) - set(peers.KINDS)
    if unknown:
        raise click.BadParameter(f"unknown: {', '.join(sorted(unknown))}", param_hint="--peers")
    skipped = frozenset(skip) | (frozenset(PHASES) - frozenset(only) if only else frozenset())
    opts = BenchOptions(curve_sizes=_sizes(curve_sizes), job_peers=kinds, skip=skipped, **kw)
    console = Console(stderr=as_json, width=None if not as_json else 160)
    # SIGTERM like Ctrl-C: the consumers and throwaway servers are stopped on the way out.
    signal.signal(signal.SIGTERM, lambda *_: signal.raise_signal(signal.SIGINT))
    results = asyncio.run(run_bench(opts, console))
    report(results, console)
    if as_json:
        click.echo(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
