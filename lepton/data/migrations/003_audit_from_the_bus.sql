-- The audit table keeps every denial, wherever it happened (issue 16): a record refused by
-- a service's subscriber (a forged or unauthorised writer) is published on lepton.audit by
-- that service, and ingest copies it here. Such a row is already on the bus, so it is not
-- queued for the relay again; its position on lepton.audit makes the copy idempotent.
ALTER TABLE lepton_ingest.audit DROP CONSTRAINT audit_action_check;
ALTER TABLE lepton_ingest.audit ADD CONSTRAINT audit_action_check
    CHECK (action IN ('read', 'write', 'grant', 'revoke', 'delete', 'publish'));
ALTER TABLE lepton_ingest.audit ADD COLUMN bus_position text UNIQUE;

CREATE OR REPLACE FUNCTION lepton_ingest.audit_written() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, lepton_ingest
    AS $$
BEGIN
    NEW.login := session_user;  -- a default can be overridden, this cannot
    IF NEW.bus_position IS NULL THEN  -- a row copied from lepton.audit is published already
        INSERT INTO lepton_ingest.audit_outbox (id) VALUES (NEW.id);
        PERFORM pg_notify('lepton_ingest_audit', '');
    END IF;
    RETURN NEW;
END
$$;
