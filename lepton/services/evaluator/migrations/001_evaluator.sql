-- The evaluator's read models: evaluations (one per model), the champion of each tenant's
-- model name, and every champion-and-challenger verdict.

CREATE SCHEMA IF NOT EXISTS lepton_evaluator;

-- One row per model: a redelivered models.ready finds it and evaluates nothing again.
-- The events are stored with the row, so that a crash between storing and publishing is
-- repaired by publishing them at the redelivery (published stays false until then).
CREATE TABLE IF NOT EXISTS lepton_evaluator.evaluations (
    model_id       text        PRIMARY KEY,
    tenant         text        NOT NULL,
    model_name     text        NOT NULL,
    status         text        NOT NULL CHECK (status IN ('evaluated', 'failed')),
    ready          jsonb       NOT NULL,  -- the lepton.ModelReady record
    evaluated      jsonb,                 -- the lepton.ModelEvaluated record
    promoted       jsonb,                 -- the lepton.ModelPromoted verdict, if any
    error_type     text,
    error_message  text,
    published      boolean     NOT NULL DEFAULT false,
    created_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    CHECK ((status = 'evaluated') = (evaluated IS NOT NULL)),
    CHECK ((status = 'failed') = (error_type IS NOT NULL))
);
CREATE INDEX IF NOT EXISTS evaluations_tenant_name
    ON lepton_evaluator.evaluations (tenant, model_name, created_at);

CREATE TABLE IF NOT EXISTS lepton_evaluator.champions (
    tenant      text        NOT NULL,
    model_name  text        NOT NULL,
    model_id    text        NOT NULL REFERENCES lepton_evaluator.evaluations (model_id),
    since       timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (tenant, model_name)
);

-- Every verdict, ours and the rollbacks others publish; a redelivered rollback matches
-- its own row and changes nothing.
CREATE TABLE IF NOT EXISTS lepton_evaluator.verdicts (
    id          bigserial   PRIMARY KEY,
    tenant      text        NOT NULL,
    model_name  text        NOT NULL,
    model_id    text        NOT NULL,
    verdict     text        NOT NULL,
    decided_at  bigint      NOT NULL,  -- epoch ms, as in the event
    record      jsonb       NOT NULL,
    UNIQUE (tenant, model_name, model_id, verdict, decided_at)
);
