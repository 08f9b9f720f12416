-- The monitor's time series, alert history and state snapshot. Every row carries the
-- installation's namespace (LEPTON_TOPIC_PREFIX), so installations sharing a database
-- never see each other's data.

-- Downsampled on write: each sample is added to its bucket at every resolution (sum, count,
-- min, max), so reading a long range never scans raw points and no roll-up job can lag.
CREATE TABLE monitor_points (
    namespace    text             NOT NULL,
    metric       text             NOT NULL,
    subject      text             NOT NULL,
    resolution_s integer          NOT NULL,
    bucket_ms    bigint           NOT NULL,
    sum          double precision NOT NULL,
    count        integer          NOT NULL,
    min          double precision NOT NULL,
    max          double precision NOT NULL,
    PRIMARY KEY (namespace, metric, subject, resolution_s, bucket_ms)
);

-- Retention deletes by resolution and age.
CREATE INDEX monitor_points_age ON monitor_points (resolution_s, bucket_ms);

CREATE TABLE monitor_alerts (
    id           bigserial        PRIMARY KEY,
    namespace    text             NOT NULL,
    rule         text             NOT NULL,
    subject      text             NOT NULL,
    severity     text             NOT NULL,
    state        text             NOT NULL,
    value        double precision NOT NULL,
    threshold    double precision NOT NULL,
    summary      text             NOT NULL,
    tenant       text,
    labels       jsonb            NOT NULL,
    active_since bigint           NOT NULL,
    time         bigint           NOT NULL
);

CREATE INDEX monitor_alerts_recent ON monitor_alerts (namespace, time DESC);

CREATE TABLE monitor_snapshots (
    namespace text   PRIMARY KEY,
    taken_at  bigint NOT NULL,
    state     jsonb  NOT NULL,
    alerts    jsonb  NOT NULL
);
