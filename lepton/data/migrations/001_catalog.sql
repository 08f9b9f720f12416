-- Ingest's catalog, shares, keys, rejects, requests and audit trail, under row-level security.
--
-- Tenant-scoped work runs as lepton_tenant (SET LOCAL ROLE), a role without BYPASSRLS, with
-- the tenant in app.tenant_id (and the reader's region in app.region) for the transaction.
-- Every table is FORCE ROW LEVEL SECURITY, so even the role that owns the per-version data
-- tables sees only what the policies let the current tenant see.

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'lepton_tenant') THEN
        CREATE ROLE lepton_tenant NOLOGIN NOBYPASSRLS NOINHERIT;
    END IF;
    -- A service connecting as an ordinary role needs membership to SET ROLE.
    IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        EXECUTE format('GRANT lepton_tenant TO %I', current_user);
    END IF;
END
$$;

CREATE SCHEMA IF NOT EXISTS lepton_ingest;
CREATE SCHEMA IF NOT EXISTS lepton_data;
GRANT USAGE ON SCHEMA lepton_ingest TO lepton_tenant;
GRANT USAGE, CREATE ON SCHEMA lepton_data TO lepton_tenant;

CREATE FUNCTION lepton_ingest.current_tenant() RETURNS text
    LANGUAGE sql STABLE
    AS $$ SELECT nullif(current_setting('app.tenant_id', true), '') $$;

CREATE TABLE lepton_ingest.datasets (
    owner_tenant   text        NOT NULL,
    name           text        NOT NULL,
    version        text        NOT NULL,
    table_name     text        NOT NULL UNIQUE CHECK (table_name ~ '^ds_[0-9a-f]{24}$'),
    columns        jsonb       NOT NULL,
    rows           bigint      NOT NULL,
    quality        jsonb       NOT NULL,
    spec           jsonb       NOT NULL,
    spec_inferred  boolean     NOT NULL,
    lineage        jsonb       NOT NULL,
    region         text,
    request_id     text        NOT NULL,
    wrapped_key    bytea,
    created_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (owner_tenant, name, version)
);

CREATE TABLE lepton_ingest.shares (
    owner_tenant text        NOT NULL,
    name         text        NOT NULL,
    grantee      text        NOT NULL,
    region       text        NOT NULL DEFAULT '*',  -- '*': readable from any region
    granted_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (owner_tenant, name, grantee, region)
);

CREATE TABLE lepton_ingest.rejects (
    owner_tenant text   NOT NULL,
    name         text   NOT NULL,
    request_id   text   NOT NULL,
    source       text   NOT NULL,
    source_row   bigint NOT NULL,
    rule         text   NOT NULL,
    column_name  text,
    reason       text   NOT NULL,
    raw          jsonb  NOT NULL
);
CREATE INDEX ON lepton_ingest.rejects (owner_tenant, name, request_id);

CREATE TABLE lepton_ingest.requests (
    tenant       text        NOT NULL,
    request_id   text        NOT NULL,
    dataset      text        NOT NULL,
    outcome      text        NOT NULL CHECK (outcome IN ('ready', 'rejected')),
    result       jsonb       NOT NULL,
    completed_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (tenant, request_id)
);

-- The outbox of lepton.audit: rows are written in the transaction of what they record and
-- relayed to Kafka by the ingest service (published_at marks what was sent).
CREATE TABLE lepton_ingest.audit (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    time         timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor        text        NOT NULL,
    tenant       text        NOT NULL,
    action       text        NOT NULL CHECK (action IN ('read', 'write', 'grant', 'revoke', 'delete')),
    resource     text        NOT NULL,
    owner        text,
    outcome      text        NOT NULL CHECK (outcome IN ('allowed', 'denied')),
    detail       text,
    region       text,
    published_at timestamptz
);
CREATE INDEX audit_unpublished ON lepton_ingest.audit (id) WHERE published_at IS NULL;

ALTER TABLE lepton_ingest.datasets ENABLE ROW LEVEL SECURITY;
ALTER TABLE lepton_ingest.datasets FORCE ROW LEVEL SECURITY;
ALTER TABLE lepton_ingest.shares ENABLE ROW LEVEL SECURITY;
ALTER TABLE lepton_ingest.shares FORCE ROW LEVEL SECURITY;
ALTER TABLE lepton_ingest.rejects ENABLE ROW LEVEL SECURITY;
ALTER TABLE lepton_ingest.rejects FORCE ROW LEVEL SECURITY;
ALTER TABLE lepton_ingest.requests ENABLE ROW LEVEL SECURITY;
ALTER TABLE lepton_ingest.requests FORCE ROW LEVEL SECURITY;
ALTER TABLE lepton_ingest.audit ENABLE ROW LEVEL SECURITY;
ALTER TABLE lepton_ingest.audit FORCE ROW LEVEL SECURITY;

CREATE POLICY shares_visible ON lepton_ingest.shares FOR SELECT TO lepton_tenant
    USING (owner_tenant = lepton_ingest.current_tenant()
           OR grantee = lepton_ingest.current_tenant());
CREATE POLICY shares_owner_insert ON lepton_ingest.shares FOR INSERT TO lepton_tenant
    WITH CHECK (owner_tenant = lepton_ingest.current_tenant());
CREATE POLICY shares_owner_delete ON lepton_ingest.shares FOR DELETE TO lepton_tenant
    USING (owner_tenant = lepton_ingest.current_tenant());

CREATE POLICY datasets_visible ON lepton_ingest.datasets FOR SELECT TO lepton_tenant
    USING (owner_tenant = lepton_ingest.current_tenant()
           OR EXISTS (SELECT 1 FROM lepton_ingest.shares s
                      WHERE s.owner_tenant = datasets.owner_tenant
                        AND s.name = datasets.name
                        AND s.grantee = lepton_ingest.current_tenant()
                        AND (s.region = '*'
                             OR s.region = current_setting('app.region', true))));
CREATE POLICY datasets_owner_insert ON lepton_ingest.datasets FOR INSERT TO lepton_tenant
    WITH CHECK (owner_tenant = lepton_ingest.current_tenant());

CREATE POLICY rejects_owner ON lepton_ingest.rejects FOR ALL TO lepton_tenant
    USING (owner_tenant = lepton_ingest.current_tenant())
    WITH CHECK (owner_tenant = lepton_ingest.current_tenant());
CREATE POLICY requests_owner ON lepton_ingest.requests FOR ALL TO lepton_tenant
    USING (tenant = lepton_ingest.current_tenant())
    WITH CHECK (tenant = lepton_ingest.current_tenant());
CREATE POLICY audit_own_select ON lepton_ingest.audit FOR SELECT TO lepton_tenant
    USING (tenant = lepton_ingest.current_tenant());
CREATE POLICY audit_own_insert ON lepton_ingest.audit FOR INSERT TO lepton_tenant
    WITH CHECK (tenant = lepton_ingest.current_tenant());

GRANT SELECT, INSERT ON lepton_ingest.datasets TO lepton_tenant;
GRANT SELECT, INSERT, DELETE ON lepton_ingest.shares TO lepton_tenant;
GRANT SELECT, INSERT ON lepton_ingest.rejects TO lepton_tenant;
GRANT SELECT, INSERT ON lepton_ingest.requests TO lepton_tenant;
GRANT SELECT, INSERT ON lepton_ingest.audit TO lepton_tenant;

-- Whether a version table may be read by the current tenant: its catalog row is visible.
-- Data tables call it as an InitPlan, (SELECT lepton_ingest.table_visible('ds_…')), so it
-- runs once per query rather than once per row.
CREATE FUNCTION lepton_ingest.table_visible(table_name text) RETURNS boolean
    LANGUAGE sql STABLE
    AS $$ SELECT EXISTS (SELECT 1 FROM lepton_ingest.datasets d WHERE d.table_name = $1) $$;

-- Lets a reader tell "not shared with you" from "no such dataset" without seeing the row.
CREATE FUNCTION lepton_ingest.dataset_exists(owner text, dataset text) RETURNS boolean
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, lepton_ingest
    AS $$ SELECT EXISTS (SELECT 1 FROM lepton_ingest.datasets d
                         WHERE d.owner_tenant = owner AND d.name = dataset) $$;
REVOKE ALL ON FUNCTION lepton_ingest.dataset_exists(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION lepton_ingest.dataset_exists(text, text) TO lepton_tenant;
