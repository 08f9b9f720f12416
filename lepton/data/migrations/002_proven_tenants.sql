-- Least privilege for the catalog (issue 16): who reads it, as whom, and an audit trail
-- nobody can rewrite. Applied by lepton_ingest, the catalog's owner; it grants the roles
-- of the role setup (lepton/devstack/roles.sql) by name.
--
-- Who the tenant is:
--   * lepton_tenant (ingest) and lepton_reader (trainer, evaluator, the operator's client)
--     act for the tenant a trusted caller names in app.tenant_id: a service, for the
--     tenant of a request whose signature it verified; the operator, for anyone;
--   * a tenant's own login (member of lepton_tenants) is the tenant of its row in
--     tenant_roles, proven by PostgreSQL's authentication: app.tenant_id means nothing
--     to it, and it can SET ROLE to neither group above.
-- Writes by readers (shares, the audit of their reads) go through SECURITY DEFINER
-- functions below, which record who acted from the login, not from what the caller says.

-- 1. Which tenant each tenant login is.
CREATE TABLE lepton_ingest.tenant_roles (
    role_name  name        PRIMARY KEY,
    tenant     text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- session_user, not current_user: the login that authenticated, whatever role it set since.
CREATE FUNCTION lepton_ingest.login_tenant() RETURNS text
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, lepton_ingest
    AS $$ SELECT r.tenant FROM lepton_ingest.tenant_roles r WHERE r.role_name = session_user $$;

-- The tenant the policies see. A tenant's own login is its tenant whatever role it holds
-- or setting it makes; a login that is neither that nor acting as a group above sees
-- nothing.
CREATE OR REPLACE FUNCTION lepton_ingest.current_tenant() RETURNS text
    LANGUAGE sql STABLE
    AS $$ SELECT coalesce(lepton_ingest.login_tenant(),
                          CASE WHEN current_user IN ('lepton_tenant', 'lepton_reader')
                               THEN nullif(current_setting('app.tenant_id', true), '') END) $$;

-- 2. Reading: a tenant login as itself, anyone else as lepton_reader for the tenant named.
CREATE FUNCTION lepton_ingest.act_for(tenant text, region text) RETURNS text
    LANGUAGE plpgsql
    -- No SET clause: it would undo the role and settings made here when the function returns.
    AS $$
DECLARE
    proven text := lepton_ingest.login_tenant();
BEGIN
    IF proven IS NULL THEN
        PERFORM set_config('role', 'lepton_reader', true);
        PERFORM set_config('app.tenant_id', tenant, true);
    ELSIF proven IS DISTINCT FROM tenant THEN
        PERFORM lepton_ingest.refuse_impersonation(tenant);
    END IF;
    PERFORM set_config('app.region', coalesce(region, ''), true);
    RETURN coalesce(proven, tenant);
END
$$;

-- The tenant and the actor of what a SECURITY DEFINER function records (inside one,
-- current_user is the owner: only the login and the settings tell who called).
CREATE FUNCTION lepton_ingest.acting_tenant() RETURNS text
    LANGUAGE sql STABLE
    AS $$ SELECT coalesce(lepton_ingest.login_tenant(),
                          CASE WHEN pg_has_role(session_user, 'lepton_reader', 'MEMBER')
                                 OR pg_has_role(session_user, 'lepton_tenant', 'MEMBER')
                               THEN nullif(current_setting('app.tenant_id', true), '') END) $$;

-- A service names the part of itself that acted (trainer:<node>); a tenant or an operator
-- is named by its login, whatever it claims.
CREATE FUNCTION lepton_ingest.acting_actor(claimed text) RETURNS text
    LANGUAGE sql STABLE
    AS $$ SELECT CASE
                     WHEN lepton_ingest.login_tenant() IS NOT NULL
                         THEN 'tenant:' || lepton_ingest.login_tenant()
                     WHEN pg_has_role(session_user, 'lepton_client', 'MEMBER')
                         THEN 'operator:' || session_user
                     ELSE coalesce(claimed, 'service:' || regexp_replace(session_user, '^lepton_', ''))
                 END $$;

-- Whether reader may read owner's dataset from reader_region. (In an SQL function a column
-- of the same name would win over an argument: none of these names is a column.)
CREATE FUNCTION lepton_ingest.shared_with(reader text, dataset_owner text, dataset text,
                                          reader_region text) RETURNS boolean
    LANGUAGE sql STABLE
    AS $$ SELECT reader = dataset_owner
              OR EXISTS (SELECT 1 FROM lepton_ingest.shares s
                         WHERE s.owner_tenant = dataset_owner AND s.name = dataset
                           AND s.grantee = reader
                           AND (s.region = '*' OR s.region = reader_region)) $$;

-- 3. The audit table is append-only, for its owner too; each row names the login that
-- wrote it; the outbox (what ingest still has to publish on lepton.audit) is a table of
-- its own, so relaying never updates an audit row.
ALTER TABLE lepton_ingest.audit ADD COLUMN login name NOT NULL DEFAULT session_user;

CREATE TABLE lepton_ingest.audit_outbox (id bigint PRIMARY KEY);
INSERT INTO lepton_ingest.audit_outbox (id)
    SELECT id FROM lepton_ingest.audit WHERE published_at IS NULL;
DROP INDEX lepton_ingest.audit_unpublished;
ALTER TABLE lepton_ingest.audit DROP COLUMN published_at;

CREATE FUNCTION lepton_ingest.audit_written() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, lepton_ingest
    AS $$
BEGIN
    NEW.login := session_user;  -- a default can be overridden, this cannot
    INSERT INTO lepton_ingest.audit_outbox (id) VALUES (NEW.id);
    PERFORM pg_notify('lepton_ingest_audit', '');
    RETURN NEW;
END
$$;
CREATE TRIGGER written BEFORE INSERT ON lepton_ingest.audit
    FOR EACH ROW EXECUTE FUNCTION lepton_ingest.audit_written();

CREATE FUNCTION lepton_ingest.audit_is_append_only() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    RAISE EXCEPTION 'lepton_ingest.audit is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
-- Per statement, so that even a DELETE matching no row is refused.
CREATE TRIGGER append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON lepton_ingest.audit
    FOR EACH STATEMENT EXECUTE FUNCTION lepton_ingest.audit_is_append_only();
REVOKE UPDATE, DELETE, TRUNCATE ON lepton_ingest.audit FROM PUBLIC, lepton_tenant, CURRENT_USER;

CREATE FUNCTION lepton_ingest.record(claimed_actor text, tenant text, action text,
                                     resource text, owner text, outcome text, detail text,
                                     region text) RETURNS void
    LANGUAGE sql
    AS $$ INSERT INTO lepton_ingest.audit (actor, tenant, action, resource, owner, outcome,
                                           detail, region)
          VALUES (lepton_ingest.acting_actor(claimed_actor), tenant, action, resource,
                  nullif(owner, tenant), outcome, detail, region) $$;

-- 4. What readers call. Each records what happened and who did it.

-- A tenant login asked to act for another tenant: refused by act_for, recorded here.
CREATE FUNCTION lepton_ingest.refuse_impersonation(claimed text) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, lepton_ingest
    AS $$
DECLARE
    proven text := lepton_ingest.login_tenant();
BEGIN
    IF proven IS NULL OR proven = claimed THEN
        RETURN;
    END IF;
    PERFORM lepton_ingest.record(NULL, proven, 'read', 'tenant:' || claimed, claimed, 'denied',
                                 'this login acts for ' || proven || ' only', NULL);
END
$$;

-- A read that found no visible row: why (not_shared: the dataset exists and is not shared
-- with the reader, in its region; not_found), recorded as a denial. The only way to tell
-- the two apart, so that learning a dataset exists is always audited.
CREATE FUNCTION lepton_ingest.read_refused(dataset_owner text, dataset text, version text,
                                           claimed_actor text) RETURNS text
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, lepton_ingest
    AS $$
DECLARE
    reader text := lepton_ingest.acting_tenant();
    reader_region text := nullif(current_setting('app.region', true), '');
    hidden boolean;
    detail text;
BEGIN
    IF reader IS NULL THEN
        RAISE EXCEPTION 'no tenant to read for' USING ERRCODE = 'insufficient_privilege';
    END IF;
    hidden := EXISTS (SELECT 1 FROM lepton_ingest.datasets d
                      WHERE d.owner_tenant = dataset_owner AND d.name = dataset)
              AND NOT lepton_ingest.shared_with(reader, dataset_owner, dataset, reader_region);
    detail := CASE WHEN hidden
                   THEN 'not shared with ' || reader || coalesce(' in ' || reader_region, '')
                   ELSE 'no such dataset' || coalesce(' version ' || version, '') END;
    PERFORM lepton_ingest.record(claimed_actor, reader, 'read',
                                 'dataset:' || dataset_owner || '/' || dataset
                                     || coalesce('@' || version, ''),
                                 dataset_owner, 'denied', detail, reader_region);
    RETURN CASE WHEN hidden THEN 'not_shared' ELSE 'not_found' END;
END
$$;

-- A version's rows were read: recorded as allowed, if the reader may see that version.
CREATE FUNCTION lepton_ingest.read_done(dataset_owner text, dataset text, version text,
                                        rows bigint, claimed_actor text) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, lepton_ingest
    AS $$
DECLARE
    reader text := lepton_ingest.acting_tenant();
    reader_region text := nullif(current_setting('app.region', true), '');
BEGIN
    IF reader IS NULL
       OR NOT lepton_ingest.shared_with(reader, dataset_owner, dataset, reader_region)
       OR NOT EXISTS (SELECT 1 FROM lepton_ingest.datasets d
                      WHERE d.owner_tenant = dataset_owner AND d.name = dataset
                        AND d.version = read_done.version) THEN
        RAISE EXCEPTION 'not a version this login may read' USING ERRCODE = 'insufficient_privilege';
    END IF;
    PERFORM lepton_ingest.record(claimed_actor, reader, 'read',
                                 'dataset:' || dataset_owner || '/' || dataset || '@' || version,
                                 dataset_owner, 'allowed', rows || ' rows', reader_region);
END
$$;

-- Grant ('grant') or withdraw ('revoke') a share of the acting tenant's dataset: for a
-- tenant's own login or an operator (a member of lepton_client), never a service.
-- Returns allowed, no_such_dataset or not_permitted; each is recorded.
CREATE FUNCTION lepton_ingest.change_share(action text, dataset text, grantee text,
                                           region text) RETURNS text
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, lepton_ingest
    AS $$
DECLARE
    owner text := lepton_ingest.acting_tenant();
    detail text := CASE action WHEN 'grant' THEN 'to ' ELSE 'from ' END || grantee
                   || coalesce(' in ' || region, '');
    outcome text;
BEGIN
    IF action NOT IN ('grant', 'revoke') OR owner IS NULL THEN
        RAISE EXCEPTION 'change_share(%): needs grant or revoke, for a tenant', action
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF lepton_ingest.login_tenant() IS NULL
       AND NOT pg_has_role(session_user, 'lepton_client', 'MEMBER') THEN
        outcome := 'not_permitted';
    ELSIF NOT EXISTS (SELECT 1 FROM lepton_ingest.datasets d
                      WHERE d.owner_tenant = owner AND d.name = dataset) THEN
        outcome := 'no_such_dataset';
    ELSE
        outcome := 'allowed';
        IF action = 'grant' THEN
            INSERT INTO lepton_ingest.shares (owner_tenant, name, grantee, region)
            VALUES (owner, dataset, change_share.grantee, coalesce(change_share.region, '*'))
            ON CONFLICT DO NOTHING;
        ELSE
            DELETE FROM lepton_ingest.shares s
            WHERE s.owner_tenant = owner AND s.name = dataset
              AND s.grantee = change_share.grantee
              AND (change_share.region IS NULL OR s.region = change_share.region);
        END IF;
    END IF;
    PERFORM lepton_ingest.record(NULL, owner, action, 'dataset:' || owner || '/' || dataset,
                                 owner, CASE outcome WHEN 'allowed' THEN 'allowed' ELSE 'denied' END,
                                 CASE outcome WHEN 'allowed' THEN detail
                                      ELSE detail || ': ' || replace(outcome, '_', ' ') END,
                                 region);
    RETURN outcome;
END
$$;

-- Replaced by read_refused, which records that someone learnt a dataset exists.
DROP FUNCTION lepton_ingest.dataset_exists(text, text);

-- 5. Policies. The owner (lepton_ingest) is bound by them too (FORCE): these are what it
-- does as itself, in the functions above and in relaying the audit.
CREATE POLICY ingest_reads ON lepton_ingest.datasets FOR SELECT TO lepton_ingest USING (true);
CREATE POLICY ingest_shares ON lepton_ingest.shares FOR ALL TO lepton_ingest
    USING (true) WITH CHECK (true);
CREATE POLICY ingest_relays ON lepton_ingest.audit FOR SELECT TO lepton_ingest USING (true);
CREATE POLICY ingest_records ON lepton_ingest.audit FOR INSERT TO lepton_ingest
    WITH CHECK (true);

-- The same rules as 001's, for every reader, with the tenant looked up once per query
-- (an InitPlan) rather than once per row.
ALTER POLICY datasets_visible ON lepton_ingest.datasets
    TO lepton_tenant, lepton_reader, lepton_tenants
    USING (owner_tenant = (SELECT lepton_ingest.current_tenant())
           OR EXISTS (SELECT 1 FROM lepton_ingest.shares s
                      WHERE s.owner_tenant = datasets.owner_tenant
                        AND s.name = datasets.name
                        AND s.grantee = (SELECT lepton_ingest.current_tenant())
                        AND (s.region = '*'
                             OR s.region = current_setting('app.region', true))));
ALTER POLICY shares_visible ON lepton_ingest.shares
    TO lepton_tenant, lepton_reader, lepton_tenants
    USING (owner_tenant = (SELECT lepton_ingest.current_tenant())
           OR grantee = (SELECT lepton_ingest.current_tenant()));
-- Shares change only through change_share.
DROP POLICY shares_owner_insert ON lepton_ingest.shares;
DROP POLICY shares_owner_delete ON lepton_ingest.shares;
REVOKE INSERT, DELETE ON lepton_ingest.shares FROM lepton_tenant;

-- 6. Grants. Readers read; they own nothing and write only through the functions.
GRANT USAGE ON SCHEMA lepton_ingest
    TO lepton_reader, lepton_tenants, lepton_trainer, lepton_evaluator, lepton_client;
GRANT USAGE ON SCHEMA lepton_data TO lepton_reader, lepton_tenants;
GRANT SELECT ON lepton_ingest.datasets, lepton_ingest.shares TO lepton_reader, lepton_tenants;

REVOKE ALL ON FUNCTION lepton_ingest.act_for(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION lepton_ingest.act_for(text, text)
    TO lepton_trainer, lepton_evaluator, lepton_client, lepton_tenants;
REVOKE ALL ON FUNCTION lepton_ingest.acting_tenant(), lepton_ingest.acting_actor(text),
    lepton_ingest.shared_with(text, text, text, text),
    lepton_ingest.record(text, text, text, text, text, text, text, text),
    lepton_ingest.refuse_impersonation(text),
    lepton_ingest.read_refused(text, text, text, text),
    lepton_ingest.read_done(text, text, text, bigint, text),
    lepton_ingest.change_share(text, text, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION lepton_ingest.refuse_impersonation(text) TO lepton_tenants;
GRANT EXECUTE ON FUNCTION lepton_ingest.read_refused(text, text, text, text),
    lepton_ingest.read_done(text, text, text, bigint, text),
    lepton_ingest.change_share(text, text, text, text) TO lepton_reader, lepton_tenants;
