-- streamtasks adserving schema, plain PostgreSQL (>= 12).
--
-- Idempotent: every statement is IF NOT EXISTS, so applying this file twice changes nothing.
-- `streamtasks db init` / `setup_database()` applies it in one transaction under an advisory
-- lock. See schema/README.md for the design (why no partitioning, why BRIN).

-- Training data: one row per request the API saw.
CREATE TABLE IF NOT EXISTS training_data (
    model_name      text        NOT NULL,
    request_id      text        NOT NULL,
    input_data      jsonb       NOT NULL,
    metadata        jsonb       NOT NULL DEFAULT '{}'::jsonb,
    source_ip       inet,
    created_at      timestamptz NOT NULL,               -- the producer's time (_st_ts), else the entry id's
    -- identity of the stream entry: the producer's message id, else "<stream>/<entry id>"
    idempotency_key text        NOT NULL,
    stream          text        NOT NULL,
    entry_id        text        NOT NULL,
    stored_at       timestamptz NOT NULL DEFAULT now(), -- when the row was committed
    CONSTRAINT training_data_idempotency_key_key UNIQUE (idempotency_key)
);

-- Inference results: one row per prediction the API returned.
CREATE TABLE IF NOT EXISTS inference_results (
    model_name         text             NOT NULL,
    request_id         text             NOT NULL,
    prediction         jsonb            NOT NULL,
    confidence         double precision NOT NULL,
    anomaly_score      double precision NOT NULL,
    is_anomaly         boolean          NOT NULL DEFAULT false,
    processing_time_ms double precision NOT NULL CHECK (processing_time_ms >= 0),
    metadata           jsonb            NOT NULL DEFAULT '{}'::jsonb,
    created_at         timestamptz      NOT NULL,
    idempotency_key    text             NOT NULL,
    stream             text             NOT NULL,
    entry_id           text             NOT NULL,
    stored_at          timestamptz      NOT NULL DEFAULT now(),
    CONSTRAINT inference_results_idempotency_key_key UNIQUE (idempotency_key)
);

-- Per-model time-range queries ("model X over the last 24 h") walk this index.
CREATE INDEX IF NOT EXISTS training_data_model_created_idx
    ON training_data (model_name, created_at);
CREATE INDEX IF NOT EXISTS inference_results_model_created_idx
    ON inference_results (model_name, created_at);

-- Whole-table time ranges (retention deletes, "everything since T"): rows arrive in
-- roughly created_at order, so a BRIN index is a few pages even at hundreds of millions
-- of rows and prunes all but the matching block ranges.
CREATE INDEX IF NOT EXISTS training_data_created_brin
    ON training_data USING brin (created_at) WITH (pages_per_range = 64);
CREATE INDEX IF NOT EXISTS inference_results_created_brin
    ON inference_results USING brin (created_at) WITH (pages_per_range = 64);

-- No index on request_id by default: every index costs ingest throughput. If you join
-- predictions to their inputs by request id, add one (CONCURRENTLY, on a live table):
--   CREATE INDEX CONCURRENTLY IF NOT EXISTS training_data_request_idx
--       ON training_data (request_id);
