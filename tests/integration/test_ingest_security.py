"""Row-level security, sharing, encryption and the audit trail, on the real servers."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path

import asyncpg
import pandas as pd
import pytest

from lepton.config import KafkaAccess
from lepton.contract.codec import Codec
from lepton.data.access import AccessDenied, DatasetNotFound
from lepton.data.catalog import list_datasets, revoke_dataset, share_dataset
from lepton.data.reading import export_csv, read_dataset
from tests.integration.ingest_support import (
    as_tenant_fetch,
    request,
    running_ingest,
    unique_tenant,
)

pytestmark = pytest.mark.integration

PATIENTS = pd.DataFrame(
    {
        "patient": ["p1", "p2", "p3"],
        "phone": ["13800138000", "13911112222", None],
        "note": ['=HYPERLINK("http://x")', "+1", "fine"],
        "age": [34, 51, 47],
    }
)
SPEC = json.dumps(
    {
        "columns": {
            "patient": {"type": "string", "nullable": False},
            "phone": {"type": "string", "sensitive": True},
            "note": {"type": "string"},
            "age": {"type": "integer", "min": 0, "max": 130, "sensitive": True},
        },
        "unique": ["patient"],
        "dedupe": "key",
    }
)


async def _audit_events(ingest, wanted: dict[str, int]) -> dict[str, list[dict]]:
    """Audit events per tenant, read from the one audit topic until each count is met."""
    found: dict[str, list[dict]] = {tenant: [] for tenant in wanted}
    while any(len(found[tenant]) < count for tenant, count in wanted.items()):
        _, record = await ingest.next("lepton.audit")
        if record["tenant"] in found:
            found[record["tenant"]].append(record)
    return found


async def test_rls_sharing_encryption_and_audit(
    kafka: KafkaAccess,
    database_for: Callable[[str], str],
    codec: Codec,
    tmp_path: Path,
    pool: asyncpg.Pool,
) -> None:
    PATIENTS.to_csv(tmp_path / "patients.csv", index=False)
    owner, partner, stranger = unique_tenant(), unique_tenant(), unique_tenant()
    async with running_ingest(kafka, database_for("ingest"), codec, tmp_path) as ingest:
        outcome, ready = await ingest.submit(
            request(
                owner, "patients", [{"name": "p", "kind": "csv", "uri": "patients.csv"}], spec=SPEC
            )
        )
        assert outcome == "ready", ready
        assert [c["sensitive"] for c in ready["columns"]] == [False, True, False, True]
        table = ready["location"].split(".", 1)[1]

        # The stored bytes of sensitive columns hold no plaintext.
        raw = await pool.fetch(f'SELECT c1, c3 FROM lepton_data."{table}"')
        stored = b"".join(bytes(v) for row in raw for v in row if v is not None)
        assert len(stored) > 0
        for secret in (b"13800138000", b"13911112222", b"34", b"51"):
            assert secret not in stored

        # The owner reads plaintext.
        mine = await read_dataset(pool, reader_tenant=owner, name="patients")
        assert mine["phone"].tolist()[:2] == ["13800138000", "13911112222"]
        assert pd.isna(mine["phone"].tolist()[2])
        assert mine["age"].tolist() == [34, 51, 47]

        # Another tenant sees nothing: not through the API, not as the owning role.
        with pytest.raises(AccessDenied):
            await read_dataset(pool, reader_tenant=stranger, name="patients", owner_tenant=owner)
        assert await as_tenant_fetch(pool, stranger, f'SELECT * FROM lepton_data."{table}"') == []
        assert (
            await as_tenant_fetch(
                pool,
                stranger,
                "SELECT * FROM lepton_ingest.datasets WHERE owner_tenant = $1",
                owner,
            )
            == []
        )
        owner_role = await pool.fetchval(
            "SELECT tableowner FROM pg_tables WHERE schemaname = 'lepton_data' AND tablename = $1",
            table,
        )
        assert owner_role == "lepton_tenant"
        assert len(await as_tenant_fetch(pool, owner, f'SELECT * FROM lepton_data."{table}"')) == 3
        with pytest.raises(DatasetNotFound):
            await read_dataset(pool, reader_tenant=stranger, name="nothing", owner_tenant=owner)

        # Sharing, limited to a region, then everywhere, then revoked.
        await share_dataset(
            pool, owner_tenant=owner, name="patients", with_tenant=partner, region="cn-B"
        )
        with pytest.raises(AccessDenied):
            await read_dataset(
                pool, reader_tenant=partner, name="patients", owner_tenant=owner, region="eu-1"
            )
        theirs = await read_dataset(
            pool, reader_tenant=partner, name="patients", owner_tenant=owner, region="cn-B"
        )
        assert theirs["phone"].tolist()[:2] == ["13800138000", "13911112222"]
        assert await list_datasets(pool, reader_tenant=partner) == []
        listed = await list_datasets(pool, reader_tenant=partner, region="cn-B")
        assert [(d.owner_tenant, d.name, d.shared) for d in listed] == [(owner, "patients", True)]
        assert await list_datasets(pool, reader_tenant=stranger) == []
        await revoke_dataset(pool, owner_tenant=owner, name="patients", with_tenant=partner)
        with pytest.raises(AccessDenied):
            await read_dataset(
                pool, reader_tenant=partner, name="patients", owner_tenant=owner, region="cn-B"
            )
        with pytest.raises(DatasetNotFound):
            await share_dataset(pool, owner_tenant=stranger, name="patients", with_tenant=partner)

        # Every action is in the audit table and on lepton.audit.
        events = await _audit_events(ingest, {owner: 4, partner: 3, stranger: 3})
    owner_events, partner_events, stranger_events = events[owner], events[partner], events[stranger]
    assert [(e["action"], e["outcome"]) for e in owner_events] == [
        ("write", "allowed"),
        ("read", "allowed"),
        ("grant", "allowed"),
        ("revoke", "allowed"),
    ]
    assert owner_events[0]["actor"] == "service:ingest"
    assert [(e["action"], e["outcome"]) for e in partner_events] == [
        ("read", "denied"),
        ("read", "allowed"),
        ("read", "denied"),
    ]
    assert partner_events[0]["owner"] == owner
    assert "not shared" in partner_events[0]["detail"]
    assert [(e["action"], e["outcome"]) for e in stranger_events] == [
        ("read", "denied"),
        ("read", "denied"),
        ("grant", "denied"),
    ]
    rows = await pool.fetch(
        "SELECT action, outcome FROM lepton_ingest.audit WHERE tenant = $1 ORDER BY id", partner
    )
    assert [(r["action"], r["outcome"]) for r in rows] == [
        ("read", "denied"),
        ("read", "allowed"),
        ("read", "denied"),
    ]

    # Export neutralises formulas; the stored value is unchanged.
    assert mine["note"].tolist()[0] == '=HYPERLINK("http://x")'
    out = io.StringIO()
    export_csv(mine, out)
    lines = out.getvalue().splitlines()
    assert lines[1].split(",")[2].startswith("\"'=HYPERLINK")
    assert "'+1" in lines[2]


async def test_reads_never_run_as_the_superuser_session(
    kafka: KafkaAccess,
    database_for: Callable[[str], str],
    codec: Codec,
    tmp_path: Path,
    pool: asyncpg.Pool,
) -> None:
    """The pool logs in as a superuser, which bypasses RLS: reads must switch role first."""
    pd.DataFrame({"x": [1, 2]}).to_csv(tmp_path / "x.csv", index=False)
    owner, other = unique_tenant(), unique_tenant()
    async with running_ingest(kafka, database_for("ingest"), codec, tmp_path) as ingest:
        outcome, ready = await ingest.submit(
            request(owner, "xs", [{"name": "x", "kind": "csv", "uri": "x.csv"}])
        )
    assert outcome == "ready"
    table = ready["location"].split(".", 1)[1]
    assert await pool.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
    assert len(await pool.fetch(f'SELECT * FROM lepton_data."{table}"')) == 2  # bypassed
    with pytest.raises(AccessDenied):
        await read_dataset(pool, reader_tenant=other, name="xs", owner_tenant=owner)
    forced = await pool.fetchrow(
        "SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE relname = $1", table
    )
    assert tuple(forced) == (True, True)
    bypass = await pool.fetchval(
        "SELECT rolbypassrls FROM pg_roles WHERE rolname = 'lepton_tenant'"
    )
    assert bypass is False
