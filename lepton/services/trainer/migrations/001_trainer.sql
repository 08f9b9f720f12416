-- The trainer's tables: what each node agent runs (so a restarted agent knows what it
-- lost), the model catalog, and the shared Optuna journals of gang searches.
--
-- Every statement is idempotent: migrations are recorded per service name, and each
-- node's agent is its own service (trainer-<node id>), so every agent applies this file.

CREATE SCHEMA IF NOT EXISTS lepton_trainer;

-- One row per worker run an agent accepted, keyed by node and lease: a redelivered
-- instruction finds its row and changes nothing.
CREATE TABLE IF NOT EXISTS lepton_trainer.runs (
    node_id      text        NOT NULL,
    job_id       text        NOT NULL,
    lease_epoch  bigint      NOT NULL,
    worker_index integer     NOT NULL,
    attempt      integer     NOT NULL,
    gang_size    integer     NOT NULL,
    tenant       text        NOT NULL,
    status       text        NOT NULL
        CHECK (status IN ('running', 'succeeded', 'failed', 'stopped', 'lost', 'stale')),
    reason       text,
    model_id     text,
    accepted_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at  timestamptz,
    PRIMARY KEY (node_id, job_id, lease_epoch, worker_index)
);
CREATE INDEX IF NOT EXISTS runs_node_status ON lepton_trainer.runs (node_id, status);

CREATE TABLE IF NOT EXISTS lepton_trainer.models (
    model_id          text        PRIMARY KEY,
    job_id            text        NOT NULL,
    attempt           integer     NOT NULL,
    lease_epoch       bigint      NOT NULL,
    tenant            text        NOT NULL,
    model_name        text        NOT NULL,
    dataset_owner     text        NOT NULL,
    dataset_name      text        NOT NULL,
    dataset_version   text        NOT NULL,
    problem_type      text        NOT NULL,
    target_column     text        NOT NULL,
    feature_columns   jsonb       NOT NULL,
    algorithm         text        NOT NULL,
    parameters        jsonb       NOT NULL,
    scoring           text        NOT NULL,
    cv_score          double precision NOT NULL,
    cv_fold_scores    jsonb       NOT NULL,
    trials            jsonb       NOT NULL,  -- every trial: family, params, state, scores
    training_seconds  double precision NOT NULL,
    artifact_uri      text        NOT NULL,
    artifact_format   text        NOT NULL,
    artifact_sha256   text        NOT NULL CHECK (artifact_sha256 ~ '^[0-9a-f]{64}$'),
    created_at        timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS models_tenant_name ON lepton_trainer.models (tenant, model_name);
CREATE INDEX IF NOT EXISTS models_job ON lepton_trainer.models (job_id);

-- Optuna journal logs of gang studies (study name = job id), in the order appended.
CREATE TABLE IF NOT EXISTS lepton_trainer.study_journal (
    study   text   NOT NULL,
    seq     bigint NOT NULL,
    log     text   NOT NULL,  -- JSON text: Optuna logs may hold NaN, which jsonb refuses
    PRIMARY KEY (study, seq)
);
