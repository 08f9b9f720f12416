"""The catalog's first migration is the file databases already hold, byte for byte."""

from __future__ import annotations

from lepton.data import tables
from lepton.runtime import database

# What lepton_migrations holds for it, in databases migrated by ingest before the move too.
APPLIED_CHECKSUM = "be7a28b489519ed7dcc01aeca8c09b82b88dc8f443c90181c485a277d9866885"


def test_the_applied_catalog_migration_is_unchanged() -> None:
    first = database.load_migrations(tables.MIGRATIONS)[0]
    assert (first.version, first.name) == (1, "catalog")  # the name the adoption looks for
    assert first.checksum == APPLIED_CHECKSUM, "add a new migration instead of editing 001"
