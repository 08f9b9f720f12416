-- An audit row that can never be published (too large for lepton.audit, or not a valid
-- lepton.AuditEvent) was sent again at every start, and stopped ingest every time (issue
-- 17). The relay now sets such a row aside: it stays in the outbox, marked with when and
-- why, and is skipped from then on; its dead letter on lepton.audit.dlq carries it (cut
-- to fit when it must be). The audit row itself is never changed: the table is append-only.
ALTER TABLE lepton_ingest.audit_outbox ADD COLUMN set_aside_at timestamptz;
ALTER TABLE lepton_ingest.audit_outbox ADD COLUMN set_aside_reason text;
CREATE INDEX audit_outbox_pending ON lepton_ingest.audit_outbox (id) WHERE set_aside_at IS NULL;
