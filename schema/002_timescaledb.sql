-- TimescaleDB path: applied by setup_database() only when the `timescaledb` extension is
-- available (pg_available_extensions) and `CREATE EXTENSION timescaledb` succeeded, right
-- after 001_adserving.sql, in the same transaction. Idempotent like 001.
--
-- A hypertable's unique indexes must include its time column, so the idempotency key cannot
-- stay a UNIQUE constraint on the table itself: a redelivered entry with a new created_at
-- (a foreign producer re-sending under the same message id) would not conflict. Instead the
-- keys move to a plain side table `<table>_keys` with a primary key on the key; the
-- built-in store inserts there first (ON CONFLICT DO NOTHING ... RETURNING) and inserts into
-- the hypertable only the rows whose key was new, in the same statement and transaction.
-- streamtasks.adserving.store detects the side table and switches to that statement.

CREATE TABLE IF NOT EXISTS training_data_keys (
    idempotency_key text        PRIMARY KEY,
    created_at      timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS inference_results_keys (
    idempotency_key text        PRIMARY KEY,
    created_at      timestamptz NOT NULL
);

-- First run only (the table constraint still exists): move existing keys to the side table,
-- then drop the constraint so create_hypertable() accepts the table.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_constraint
               WHERE conname = 'training_data_idempotency_key_key'
                 AND conrelid = 'training_data'::regclass) THEN
        INSERT INTO training_data_keys (idempotency_key, created_at)
            SELECT idempotency_key, created_at FROM training_data
            ON CONFLICT (idempotency_key) DO NOTHING;
        ALTER TABLE training_data DROP CONSTRAINT training_data_idempotency_key_key;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_constraint
               WHERE conname = 'inference_results_idempotency_key_key'
                 AND conrelid = 'inference_results'::regclass) THEN
        INSERT INTO inference_results_keys (idempotency_key, created_at)
            SELECT idempotency_key, created_at FROM inference_results
            ON CONFLICT (idempotency_key) DO NOTHING;
        ALTER TABLE inference_results DROP CONSTRAINT inference_results_idempotency_key_key;
    END IF;
END
$$;

-- `keyed` is NOT NULL with no default: only the keyed INSERT (which sets it) can add rows.
-- A worker still holding a plan made for the plain schema tries a direct COPY without it
-- and fails with not_null_violation instead of storing a row whose key was never checked;
-- it then plans again and takes the keyed path. Existing rows get TRUE.
ALTER TABLE training_data ADD COLUMN IF NOT EXISTS keyed boolean NOT NULL DEFAULT TRUE;
ALTER TABLE training_data ALTER COLUMN keyed DROP DEFAULT;
ALTER TABLE inference_results ADD COLUMN IF NOT EXISTS keyed boolean NOT NULL DEFAULT TRUE;
ALTER TABLE inference_results ALTER COLUMN keyed DROP DEFAULT;

-- Key tables grow with the data; with a retention policy, streamtasks_prune_keys (below)
-- deletes the keys of dropped rows. BRIN keeps that delete cheap.
CREATE INDEX IF NOT EXISTS training_data_keys_created_brin
    ON training_data_keys USING brin (created_at);
CREATE INDEX IF NOT EXISTS inference_results_keys_created_brin
    ON inference_results_keys USING brin (created_at);

-- Chunks of `streamtasks.chunk_interval` (set by setup_database() from
-- TIMESCALEDB_CHUNK_INTERVAL; one day when the file is applied by hand). This is the pre-2.13
-- signature, still accepted by every TimescaleDB 2.x release; if_not_exists makes a second
-- run a no-op, migrate_data moves rows already stored by the plain schema. The default time
-- index is skipped: 001 already indexes (model_name, created_at), and chunk exclusion does
-- the rest.
SELECT create_hypertable('training_data', 'created_at',
                         chunk_time_interval => coalesce(nullif(current_setting('streamtasks.chunk_interval', true), ''), '1 day')::interval,
                         create_default_indexes => FALSE,
                         if_not_exists => TRUE, migrate_data => TRUE);
SELECT create_hypertable('inference_results', 'created_at',
                         chunk_time_interval => coalesce(nullif(current_setting('streamtasks.chunk_interval', true), ''), '1 day')::interval,
                         create_default_indexes => FALSE,
                         if_not_exists => TRUE, migrate_data => TRUE);

-- Compression (columnstore): one segment per model, rows ordered by time inside it, so a
-- per-model time range decompresses only its model's segments. Set once: TimescaleDB
-- refuses to change these settings while compressed chunks exist. Inserting into a
-- compressed chunk works (TimescaleDB >= 2.11) and needs no decompression here: the
-- hypertable has no unique index (the keys live in <table>_keys). The policy that
-- compresses chunks (TIMESCALEDB_COMPRESS_AFTER) is set by setup_database().
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['training_data', 'inference_results'] LOOP
        IF NOT (SELECT compression_enabled FROM timescaledb_information.hypertables
                WHERE format('%I.%I', hypertable_schema, hypertable_name)::regclass = t::regclass) THEN
            EXECUTE format('ALTER TABLE %I SET (timescaledb.compress, '
                           'timescaledb.compress_segmentby = %L, timescaledb.compress_orderby = %L)',
                           t, 'model_name', 'created_at');
        END IF;
    END LOOP;
END
$$;

-- The key tables' cleanup, run as a TimescaleDB job next to each retention policy
-- (setup_database() schedules it when TIMESCALEDB_RETENTION is set). config:
-- {"hypertable": "<table>", "keys": "<table>_keys", "drop_after": "<interval>"}.
-- A key is deleted only once its row cannot exist any more: older than the retention
-- horizon AND older than the oldest chunk still there (retention drops whole chunks, so a
-- row just past the horizon may still sit in a chunk that is kept). Idempotency window:
-- an entry re-sent after its key was deleted is stored again, as a new row (in a chunk past
-- retention, which the next retention run drops).
CREATE OR REPLACE PROCEDURE streamtasks_prune_keys(job_id integer, config jsonb)
LANGUAGE plpgsql AS $$
DECLARE
    target  regclass    := (config->>'hypertable')::regclass;
    keys    regclass    := (config->>'keys')::regclass;
    horizon timestamptz := now() - (config->>'drop_after')::interval;
    oldest  timestamptz;
BEGIN
    SELECT min(range_start) INTO oldest FROM timescaledb_information.chunks
     WHERE format('%I.%I', hypertable_schema, hypertable_name)::regclass = target;
    IF oldest IS NOT NULL AND oldest < horizon THEN
        horizon := oldest;
    END IF;
    EXECUTE format('DELETE FROM %s WHERE created_at < $1', keys) USING horizon;
END
$$;
