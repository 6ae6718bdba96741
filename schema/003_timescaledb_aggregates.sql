-- TimescaleDB path, after 002: hourly per-model continuous aggregates that
-- model_performance_stats() (`streamtasks stats`) reads instead of the raw rows.
-- Applied only with TimescaleDB, in the same transaction as 001/002. Idempotent.
--
-- Real-time (materialized_only = false): hours the refresh policy has not materialised yet
-- are computed from the raw rows at query time, so the aggregate never lags the table.
-- A late row in an hour already materialised (a redelivery, a producer's late send) is
-- counted once the refresh policy (TIMESCALEDB_AGGREGATE_REFRESH) next runs.
--
-- Continuous aggregates take no ordered-set aggregates (percentile_cont), so latency is
-- kept as a histogram of ln(1 + processing_time_ms): 300 buckets over [0, 12), each 0.04
-- wide, i.e. a factor e^0.04 = 1.041 in (1 + ms). A percentile read from it is within
-- 4.1 % of (1 + the exact percentile in ms); latencies >= e^12 - 1 ms (162.8 s) land in
-- the overflow bucket and read as 162.8 s. streamtasks/db.py (LATENCY_HISTOGRAM) mirrors
-- these three numbers: change them together, and drop the views to rebuild.

CREATE MATERIALIZED VIEW IF NOT EXISTS inference_results_hourly
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT model_name,
       time_bucket(INTERVAL '1 hour', created_at)           AS bucket,
       count(*)                                             AS requests,
       sum(confidence)                                      AS confidence_sum,
       count(*) FILTER (WHERE is_anomaly)                   AS anomalies,
       min(created_at)                                      AS first_at,
       max(created_at)                                      AS last_at,
       histogram(ln(1 + processing_time_ms), 0.0, 12.0, 300) AS latency_log_hist
FROM inference_results
GROUP BY model_name, bucket
WITH NO DATA;

CREATE MATERIALIZED VIEW IF NOT EXISTS training_data_hourly
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT model_name,
       time_bucket(INTERVAL '1 hour', created_at) AS bucket,
       count(*)                                   AS rows
FROM training_data
GROUP BY model_name, bucket
WITH NO DATA;
