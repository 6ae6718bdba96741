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

-- Key tables grow with the data: retention on the hypertable (see schema/README.md) should
-- be paired with a DELETE FROM <table>_keys WHERE created_at < <same horizon>; BRIN keeps
-- that delete cheap.
CREATE INDEX IF NOT EXISTS training_data_keys_created_brin
    ON training_data_keys USING brin (created_at);
CREATE INDEX IF NOT EXISTS inference_results_keys_created_brin
    ON inference_results_keys USING brin (created_at);

-- One-day chunks. This is the pre-2.13 signature, still accepted by every TimescaleDB 2.x
-- release; if_not_exists makes a second run a no-op, migrate_data moves rows already stored
-- by the plain schema. The default time index is skipped: 001 already indexes
-- (model_name, created_at), and chunk exclusion does the rest.
SELECT create_hypertable('training_data', 'created_at',
                         chunk_time_interval => INTERVAL '1 day',
                         create_default_indexes => FALSE,
                         if_not_exists => TRUE, migrate_data => TRUE);
SELECT create_hypertable('inference_results', 'created_at',
                         chunk_time_interval => INTERVAL '1 day',
                         create_default_indexes => FALSE,
                         if_not_exists => TRUE, migrate_data => TRUE);
