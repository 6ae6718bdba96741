#!/usr/bin/env python3
"""The benchmark suite: ``python benchmarks/run.py --help``; the same as ``streamtasks bench``.

Starts throwaway Redis and PostgreSQL (unless ``--redis-url``/``--database-url``), drains a
backlog with the lean loop and with ``streamtasks worker streamtasks.builtins:registry``,
measures latency at a fixed offered load, the producer, and the worker's memory, and prints
a table with the ratios streamtasks / lean loop. See ``benchmarks/README.md``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from streamtasks.bench import bench_command

if __name__ == "__main__":
    bench_command()
