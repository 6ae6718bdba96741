"""Per-model performance statistics: exact queries on plain PostgreSQL, hourly continuous
aggregates (with per-hour latency histograms) on TimescaleDB."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from .db import HAS_TIMESCALEDB, connection

log = logging.getLogger("streamtasks.db")


_TOTALS = """
SELECT count(*) AS requests,
       min(created_at) AS first_at,
       max(created_at) AS last_at,
       percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY processing_time_ms) AS pct,
       avg(confidence) AS mean_confidence,
       avg(is_anomaly::int)::float8 AS anomaly_rate,
       count(*) FILTER (WHERE is_anomaly) AS anomalies
FROM inference_results
WHERE model_name = $1 AND created_at >= $2 AND created_at < $3
"""
_TRAINING_COUNT = """
SELECT count(*) FROM training_data
WHERE model_name = $1 AND created_at >= $2 AND created_at < $3
"""
_BUCKETS = """
SELECT {bucket} AS bucket,
       count(*) AS requests,
       avg(confidence) AS mean_confidence,
       avg(is_anomaly::int)::float8 AS anomaly_rate,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY processing_time_ms) AS p50_ms,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY processing_time_ms) AS p95_ms,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY processing_time_ms) AS p99_ms
FROM inference_results
WHERE model_name = $1 AND created_at >= $2 AND created_at < $3
GROUP BY 1 ORDER BY 1
"""
_BUCKET_TSDB = "time_bucket(INTERVAL '1 hour', created_at)"
_BUCKET_PLAIN = "date_trunc('hour', created_at, 'UTC')"


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def stats_window(hours: float, now: datetime) -> float:
    """``hours`` as a stats window ending at ``now``: a number > 0 (``ValueError`` for
    anything else: 0, negative, NaN, not a number), clamped so that the window does not
    begin before 1970 (``inf`` means "since 1970": stream ids, and so dead-letter ids, start
    there, and ``XREVRANGE`` refuses a negative one)."""
    try:
        value = float(hours)
    except (TypeError, ValueError):
        raise ValueError(f"hours must be a number > 0, not {hours!r}") from None
    if math.isnan(value) or value <= 0:
        raise ValueError(f"hours must be a number > 0, not {hours!r}")
    return min(value, max((now - _EPOCH).total_seconds(), 1.0) / 3600.0)


async def model_performance_stats(
    pool: Any, model_name: str, hours: float, *, now: datetime | None = None
) -> dict[str, Any]:
    """Performance of ``model_name`` over the window ``[now - hours, now)``.

    Returns ``requests`` (inference rows), ``throughput_rps`` (requests per second over
    the span that has data: first to last request in the window, at least 1 s),
    ``window_rps`` (requests / window seconds), ``first_at``/``last_at``,
    ``peak_hourly_rps`` and ``peak_hour`` (the busiest UTC hour's requests / 3600),
    ``p50_ms``/``p95_ms``/``p99_ms`` (continuous percentiles of ``processing_time_ms``),
    ``mean_confidence``, ``anomaly_rate`` (fraction of requests flagged), ``anomalies``,
    ``training_rows`` and ``buckets``: one dict per UTC hour that has requests, oldest
    first, with ``bucket``, ``requests``, ``mean_confidence``, ``anomaly_rate``, ``p50_ms``,
    ``p95_ms``, ``p99_ms``.
    Aggregates of an empty window are ``None``.
    """
    until = now or datetime.now(timezone.utc)
    hours = stats_window(hours, until)
    since = until - timedelta(hours=hours)
    async with connection(pool) as conn:
        if await conn.fetchval(_HAS_AGGREGATES):  # TimescaleDB's hourly aggregates (schema/003)
            return await _stats_from_aggregates(conn, model_name, hours, since, until)
        tsdb = await conn.fetchval(HAS_TIMESCALEDB)
        totals = await conn.fetchrow(_TOTALS, model_name, since, until)
        training = await conn.fetchval(_TRAINING_COUNT, model_name, since, until)
        bucket_sql = _BUCKETS.format(bucket=_BUCKET_TSDB if tsdb else _BUCKET_PLAIN)
        buckets = await conn.fetch(bucket_sql, model_name, since, until)
    p50, p95, p99 = totals["pct"] or (None, None, None)
    return {
        "model_name": model_name,
        "hours": hours,
        "since": since,
        "until": until,
        "requests": totals["requests"],
        **_throughput(totals["requests"], totals["first_at"], totals["last_at"], hours, buckets),
        "p50_ms": p50,
        "p95_ms": p95,
        "p99_ms": p99,
        "mean_confidence": totals["mean_confidence"],
        "anomaly_rate": totals["anomaly_rate"],
        "anomalies": totals["anomalies"],
        "training_rows": training,
        "timescaledb": tsdb,
        "source": "rows",
        "buckets": [dict(row) for row in buckets],
    }


#: The shortest span a throughput is computed over (one request is 1 req/s, not infinite).
MIN_THROUGHPUT_SPAN_S = 1.0


def _throughput(
    requests: int, first_at: datetime | None, last_at: datetime | None, hours: float, buckets: Any
) -> dict[str, Any]:
    """Throughput over the span that has data, over the window, and the busiest hour's."""
    span = (last_at - first_at).total_seconds() if first_at and last_at else 0.0
    peak = max(buckets, key=lambda b: b["requests"], default=None)
    return {
        "throughput_rps": requests / max(span, MIN_THROUGHPUT_SPAN_S) if requests else 0.0,
        "window_rps": requests / (hours * 3600.0),
        "first_at": first_at,
        "last_at": last_at,
        "peak_hourly_rps": peak["requests"] / 3600.0 if peak else None,
        "peak_hour": peak["bucket"] if peak else None,
    }


# --------------------------------------------------------------------------- stats from aggregates

#: The latency histogram of ``inference_results_hourly`` (schema/003_timescaledb_aggregates.sql):
#: ``histogram(ln(1 + processing_time_ms), LOW, HIGH, BUCKETS)``.
LATENCY_HISTOGRAM = (0.0, 12.0, 300)
#: A percentile read from that histogram is within this factor of (1 + the exact one, in ms).
LATENCY_PRECISION_FACTOR = math.exp((LATENCY_HISTOGRAM[1] - LATENCY_HISTOGRAM[0]) / LATENCY_HISTOGRAM[2])

_HAS_AGGREGATES = (
    "SELECT to_regclass('inference_results_hourly') IS NOT NULL"
    " AND to_regclass('training_data_hourly') IS NOT NULL"
)
_LATENCY_HIST_SQL = "histogram(ln(1 + processing_time_ms), {}, {}, {})".format(*LATENCY_HISTOGRAM)
# The window's whole hours [$3, $4) from the aggregate; its partial hours [$2, $3) and
# [$4, $5) from the raw rows, aggregated the same way.
_AGG_HOURS = f"""
SELECT time_bucket(INTERVAL '1 hour', created_at) AS bucket,
       count(*) AS requests,
       sum(confidence) AS confidence_sum,
       count(*) FILTER (WHERE is_anomaly) AS anomalies,
       min(created_at) AS first_at,
       max(created_at) AS last_at,
       {_LATENCY_HIST_SQL} AS latency_log_hist
FROM inference_results
WHERE model_name = $1 AND ((created_at >= $2 AND created_at < $3) OR (created_at >= $4 AND created_at < $5))
GROUP BY 1
UNION ALL
SELECT bucket, requests, confidence_sum, anomalies, first_at, last_at, latency_log_hist
FROM inference_results_hourly
WHERE model_name = $1 AND bucket >= $3 AND bucket < $4
ORDER BY 1
"""
_AGG_TRAINING = """
SELECT (SELECT count(*) FROM training_data
        WHERE model_name = $1
          AND ((created_at >= $2 AND created_at < $3) OR (created_at >= $4 AND created_at < $5)))
     + (SELECT coalesce(sum(rows), 0)::bigint FROM training_data_hourly
        WHERE model_name = $1 AND bucket >= $3 AND bucket < $4)
"""


def _hour_floor(at: datetime) -> datetime:
    return at.replace(minute=0, second=0, microsecond=0)


async def _stats_from_aggregates(
    conn: Any, model_name: str, hours: float, since: datetime, until: datetime
) -> dict[str, Any]:
    """:func:`model_performance_stats` from the hourly continuous aggregates.

    Counts, sums, means and times equal the raw-row answer; percentiles come from the
    latency histogram (within :data:`LATENCY_PRECISION_FACTOR` of ``1 + exact``).
    """
    first_full = _hour_floor(since) + (timedelta(hours=1) if since != _hour_floor(since) else timedelta())
    last_full = _hour_floor(until)
    if first_full >= last_full:  # no whole hour inside: all from the raw rows
        first_full = last_full = until
    args = (model_name, since, first_full, last_full, until)
    rows = await conn.fetch(_AGG_HOURS, *args)
    training = await conn.fetchval(_AGG_TRAINING, *args)
    total_hist = [0] * (LATENCY_HISTOGRAM[2] + 2)
    buckets = []
    requests = anomalies = 0
    confidence_sum = 0.0
    first_at: datetime | None = None
    last_at: datetime | None = None
    for row in rows:
        hist = row["latency_log_hist"]
        for i, n in enumerate(hist):
            total_hist[i] += n
        requests += row["requests"]
        anomalies += row["anomalies"]
        confidence_sum += row["confidence_sum"]
        first_at = row["first_at"] if first_at is None else min(first_at, row["first_at"])
        last_at = row["last_at"] if last_at is None else max(last_at, row["last_at"])
        buckets.append(
            {
                "bucket": row["bucket"],
                "requests": row["requests"],
                "mean_confidence": row["confidence_sum"] / row["requests"],
                "anomaly_rate": row["anomalies"] / row["requests"],
                "p50_ms": histogram_percentile(hist, 0.5),
                "p95_ms": histogram_percentile(hist, 0.95),
                "p99_ms": histogram_percentile(hist, 0.99),
            }
        )
    return {
        "model_name": model_name,
        "hours": hours,
        "since": since,
        "until": until,
        "requests": requests,
        **_throughput(requests, first_at, last_at, hours, buckets),
        "p50_ms": histogram_percentile(total_hist, 0.5),
        "p95_ms": histogram_percentile(total_hist, 0.95),
        "p99_ms": histogram_percentile(total_hist, 0.99),
        "mean_confidence": confidence_sum / requests if requests else None,
        "anomaly_rate": anomalies / requests if requests else None,
        "anomalies": anomalies,
        "training_rows": training,
        "timescaledb": True,
        "source": "aggregates",
        "buckets": buckets,
    }


def histogram_percentile(hist: Sequence[int], q: float) -> float | None:
    """``percentile_cont(q)`` of the latencies counted in a :data:`LATENCY_HISTOGRAM`.

    ``hist`` is TimescaleDB's ``histogram()``: ``[below LOW, BUCKETS buckets…, >= HIGH]`` of
    ``ln(1 + ms)``. Each order statistic is placed inside its bucket by rank (evenly spread),
    then interpolated like ``percentile_cont``; the result is within
    :data:`LATENCY_PRECISION_FACTOR` of ``1 + exact``. None for an empty histogram.
    """
    total = sum(hist)
    if total == 0:
        return None
    pos = q * (total - 1)
    lo = math.floor(pos)
    a = _histogram_value(hist, lo)
    if pos == lo:
        return a
    return a + (_histogram_value(hist, lo + 1) - a) * (pos - lo)


def _histogram_value(hist: Sequence[int], k: int) -> float:
    """The estimated k-th smallest latency (0-based), in ms."""
    low, high, n = LATENCY_HISTOGRAM
    width = (high - low) / n
    seen = 0
    for i, count in enumerate(hist):
        if k < seen + count:
            if i == 0:
                return math.expm1(low)
            if i == n + 1:
                return math.expm1(high)
            x = low + (i - 1) * width + (k - seen + 0.5) / count * width
            return math.expm1(x)
        seen += count
    return math.expm1(high)  # pragma: no cover - k < total by construction
