-- Lepton's PostgreSQL roles and schemas: run once in Lepton's database, as a superuser,
-- before any service starts; running it again changes nothing. The local stack runs it at
-- every `lepton stack up`; on an existing server an operator runs it with
--     psql -v ON_ERROR_STOP=1 -d lepton -f deploy/postgres/roles.sql
-- and then gives each login a password (psql: \password lepton_ingest), or whatever
-- authentication the server uses. The passwords are never in this file.
--
-- One login per actor, none a superuser, none with BYPASSRLS, CREATEROLE, CREATEDB or
-- REPLICATION, and NOINHERIT: a group role's privileges apply only after an explicit
-- SET ROLE. Each service owns one schema, named after its login, where it applies its own
-- migrations ("$user" on the search path puts its migration records and unqualified tables
-- there); the catalog's migrations (lepton/data/migrations) grant the readers by name.
--
--   login             owns                          may SET ROLE to
--   lepton_scheduler  lepton_scheduler              -
--   lepton_ingest     lepton_ingest, lepton_data    lepton_tenant (and grant it, below)
--   lepton_trainer    lepton_trainer                lepton_reader
--   lepton_evaluator  lepton_evaluator              lepton_reader
--   lepton_monitor    lepton_monitor                -
--   lepton_client     -                             lepton_reader (the operator's client)
--
-- Group roles (NOLOGIN), on which the catalog's row-level security is keyed:
--   lepton_tenant   acts for the tenant a service names in app.tenant_id, and writes
--                   (ingest, for the tenant of a verified request); owns dataset tables
--   lepton_reader   acts for the tenant named in app.tenant_id, read-only (the trainer and
--                   the evaluator for a verified request; the operator for any tenant)
--   lepton_tenants  every tenant's own login (lepton_tenant_<name>, made by
--                   lepton.data.access.add_tenant): its tenant is proven by the login
--                   itself (lepton_ingest.tenant_roles), never by a setting it chooses

DO $$
DECLARE
    login text;
    grouped text;
BEGIN
    FOREACH login IN ARRAY ARRAY['lepton_scheduler', 'lepton_ingest', 'lepton_trainer',
                                 'lepton_evaluator', 'lepton_monitor', 'lepton_client'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = login) THEN
            EXECUTE format('CREATE ROLE %I LOGIN', login);
        END IF;
        -- Also whatever an earlier hand may have given it.
        EXECUTE format('ALTER ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE '
                       'NOREPLICATION NOBYPASSRLS NOINHERIT', login);
        EXECUTE format('ALTER ROLE %I SET search_path = "$user", public', login);
        EXECUTE format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO %I',
                       current_database(), login);
    END LOOP;
    FOREACH grouped IN ARRAY ARRAY['lepton_tenant', 'lepton_reader', 'lepton_tenants'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = grouped) THEN
            EXECUTE format('CREATE ROLE %I NOLOGIN', grouped);
        END IF;
        EXECUTE format('ALTER ROLE %I NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE '
                       'NOREPLICATION NOBYPASSRLS', grouped);
    END LOOP;
END
$$;

GRANT lepton_reader TO lepton_trainer, lepton_evaluator, lepton_client;

-- Two grants only for migration files databases already hold, which must stay byte for
-- byte what they are: the catalog's first one grants lepton_tenant to whoever applies it
-- (hence ADMIN OPTION: ingest may grant lepton_tenant, and the catalog's policies still
-- key a tenant's own login on the login, whatever role it holds), and the first ones of
-- ingest, the trainer and the evaluator say CREATE SCHEMA IF NOT EXISTS, which PostgreSQL
-- checks against the database even when the schema exists.
GRANT lepton_tenant TO lepton_ingest WITH ADMIN OPTION;
DO $$
BEGIN
    EXECUTE format('GRANT CREATE ON DATABASE %I TO lepton_ingest, lepton_trainer, '
                   'lepton_evaluator', current_database());
END
$$;

CREATE SCHEMA IF NOT EXISTS lepton_scheduler AUTHORIZATION lepton_scheduler;
CREATE SCHEMA IF NOT EXISTS lepton_ingest AUTHORIZATION lepton_ingest;
CREATE SCHEMA IF NOT EXISTS lepton_data AUTHORIZATION lepton_ingest;
CREATE SCHEMA IF NOT EXISTS lepton_trainer AUTHORIZATION lepton_trainer;
CREATE SCHEMA IF NOT EXISTS lepton_evaluator AUTHORIZATION lepton_evaluator;
CREATE SCHEMA IF NOT EXISTS lepton_monitor AUTHORIZATION lepton_monitor;

-- Before PostgreSQL 15 every role could create objects in public; nothing of Lepton's
-- belongs there.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
