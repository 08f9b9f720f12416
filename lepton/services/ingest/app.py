"""The ingest service: the data node. Loads, cleans, integrates, stores and shares datasets.

For each ``lepton.data.requested`` it reads the sources in bounded chunks (in a worker
thread), cleans them by the request's spec (or an inferred one), and streams the result
into a new version table by COPY, inside one transaction that also writes the catalog row,
the rejects, the request's outcome and the audit row. Then it publishes
``lepton.data.ready`` or, for input it must refuse, ``lepton.data.rejected`` with a
specific reason. A redelivered request finds its recorded outcome and publishes it again
without redoing anything. Audit rows (the service's and the data API's) are relayed from
the database to ``lepton.audit`` by a background task (:mod:`lepton.services.ingest.audit_relay`).
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import os
import tempfile
import time
from typing import TYPE_CHECKING, Any, TypeVar

import asyncpg

from lepton.bus import Event, Handler, MessageTooLargeError, TransientError
from lepton.data import tables
from lepton.data.keys import decode_master_key
from lepton.runtime.service import Context, Service, run
from lepton.services.ingest import instruments, storage
from lepton.services.ingest.audit_relay import relay_audit
from lepton.services.ingest.input_bounds import Bounds, clip, clip_bytes
from lepton.services.ingest.pipeline import Integration, Outcome, Pipeline
from lepton.services.ingest.query_spool import spool_query
from lepton.services.ingest.security import ColumnSealer
from lepton.services.ingest.settings import IngestSettings
from lepton.services.ingest.source_limits import Limits, resolve_location
from lepton.services.ingest.sources import SourceReader, SourceRequest
from lepton.services.ingest.spec import IngestRejected, check_names, parse_spec

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from lepton.config import Settings

__all__ = ["Ingest", "create_app", "main"]

_FILE_KINDS = ("csv", "parquet", "jsonl")
_SPOOL_MEMORY = 8 * 1024 * 1024
T = TypeVar("T")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class Ingest:
    """Handles one request at a time against the service's pool and publisher."""

    def __init__(self, context: Context, settings: IngestSettings) -> None:
        self.context = context
        self.settings = settings
        self.limits = Limits(
            roots=tuple(settings.ingest_roots),
            remote_protocols=frozenset(settings.ingest_remote_protocols),
            max_bytes=settings.ingest_max_file_bytes,
            max_ratio=settings.ingest_max_compression_ratio,
            chunk_bytes=settings.ingest_chunk_bytes,
            chunk_rows=settings.ingest_chunk_rows,
            bounds=settings.input_bounds(),
        )
        key = settings.master_key
        self.master = decode_master_key(key.get_secret_value()) if key is not None else None

    async def handle(self, event: Event) -> None:
        if event.type == "lepton.AuditEvent":
            await self._keep_audit(event)
            return
        request = event.record
        tenant, dataset, request_id = request["tenant"], request["dataset"], request["request_id"]
        log = self.context.log.bind(tenant=tenant, dataset=dataset, request_id=request_id)
        try:
            async with self.context.pool.acquire() as connection, connection.transaction():
                await storage.as_tenant(connection, tenant)
                done = await storage.completed(connection, tenant, request_id)
            if done is None:
                started = time.perf_counter()
                done = await self._ingest(request)
                instruments.DURATION.labels(done[0]).observe(time.perf_counter() - started)
        except (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError) as exc:
            raise TransientError(f"database unavailable: {exc}") from exc
        outcome, record = await self._answer(*done)
        log.info(outcome, version=record.get("version"), code=record.get("code"))

    async def _answer(self, outcome: str, record: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """Publish the request's answer. A ``data.ready`` too large for its topic (a spec,
        columns or lineage of megabytes) becomes a ``data.rejected`` saying so, so the
        requester hears back; a rejection too large is dead-lettered (cut to fit)."""
        publisher, key = self.context.publisher, f"{record['tenant']}/{record['dataset']}"
        try:
            await publisher.publish(self.context.topic(f"lepton.data.{outcome}"), key, record)
        except MessageTooLargeError as exc:
            if outcome != "ready":
                raise
            record = _rejection(
                record,
                IngestRejected(
                    "answer_too_large",
                    f"the answer, {exc.size:,} bytes, is over the {exc.limit:,}-byte limit of "
                    f"{exc.topic}; version {record['version']} is stored (lepton data show)",
                ),
                self.limits.bounds,
            )
            await publisher.publish(self.context.topic("lepton.data.rejected"), key, record)
            return "rejected", record
        return outcome, record

    async def _keep_audit(self, event: Event) -> None:
        """Another service's denial, from ``lepton.audit``, into the audit table (ingest's
        own rows are there already: it published them from it)."""
        if event.headers.get("ce_source") == self.context.publisher.source.encode():
            return
        position = f"{event.topic}/{event.partition}/{event.offset}"
        try:
            await storage.copy_audit(self.context.pool, event.record, position)
        except (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError) as exc:
            raise TransientError(f"database unavailable: {exc}") from exc

    async def _ingest(self, request: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        spools: list[str] = []
        try:
            try:
                pipeline, sealer = await self._plan(request, spools)
                try:
                    return await self._store(request, pipeline, sealer)
                except (asyncpg.DataError, asyncpg.ProgramLimitExceededError) as exc:
                    # Data the bounds let through but PostgreSQL cannot store (a row too
                    # wide for a page, say) is the input's fault: an answer, not a crash.
                    raise IngestRejected(
                        "storage_refused", f"PostgreSQL cannot store these rows: {exc}"
                    ) from None
            except IngestRejected as rejected:
                return await self._reject(request, rejected)
        finally:
            for path in spools:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)

    async def _plan(
        self, request: dict[str, Any], spools: list[str]
    ) -> tuple[Pipeline, ColumnSealer | None]:
        check_names(request)
        spec = parse_spec(request["spec"]) if request.get("spec") else None
        if not request["sources"]:
            raise IngestRejected("spec_invalid", "the request has no sources")
        names = [source["name"] for source in request["sources"]]
        if len(set(names)) != len(names):
            raise IngestRejected("spec_invalid", f"source names repeat: {names}")
        readers = [await self._reader(source, spools) for source in request["sources"]]
        integration = request.get("integration") or {}
        sealer = None
        if spec is not None and any(c.sensitive for c in spec.columns.values()):
            if self.master is None:
                raise IngestRejected(
                    "spec_invalid",
                    "the spec marks columns sensitive but the service has no master key "
                    "(LEPTON_MASTER_KEY)",
                )
            sealer = ColumnSealer(self.master, request["tenant"], request["dataset"])
        pipeline = Pipeline(
            readers,
            spec,
            Integration(
                mode=integration.get("mode", "union"),
                join_keys=tuple(integration.get("join_keys", ())),
                join_how=integration.get("join_how", "inner"),
            ),
            stats_sample_rows=self.settings.ingest_stats_sample_rows,
            max_join_rows=self.settings.ingest_max_join_rows,
            max_reject_fraction=self.settings.ingest_max_reject_fraction,
            bounds=self.limits.bounds,
            encrypt=sealer.seal if sealer is not None else None,
        )
        await asyncio.to_thread(pipeline.prepare)
        return pipeline, sealer

    async def _reader(self, source: dict[str, Any], spools: list[str]) -> SourceReader:
        wanted = SourceRequest(
            name=source["name"],
            kind=source["kind"],
            uri=source.get("uri"),
            query=source.get("query"),
            options=dict(source.get("options") or {}),
        )
        if wanted.kind in _FILE_KINDS:
            location = resolve_location(wanted.uri, self.limits, wanted.name)
            return SourceReader(wanted, location, self.limits, wanted.kind)
        if wanted.kind != "postgres":
            raise IngestRejected(
                "spec_invalid",
                f"source {wanted.name!r} has kind {wanted.kind!r}; this service reads csv, "
                "parquet, jsonl and postgres",
                source=wanted.name,
            )
        url = self.settings.ingest_postgres_sources.get(wanted.uri or "")
        if url is None or not wanted.query:
            raise IngestRejected(
                "source_unreadable",
                f"source {wanted.name!r}: "
                + (
                    "a postgres source needs a query"
                    if url is not None
                    else f"no PostgreSQL connection named {wanted.uri!r} is configured "
                    "(LEPTON_INGEST_POSTGRES_SOURCES)"
                ),
                source=wanted.name,
            )
        connection = await asyncpg.connect(url.get_secret_value())
        try:
            path, digest, _rows = await spool_query(
                connection,
                wanted.query,
                wanted.name,
                self.limits.chunk_rows,
                self.settings.ingest_query_timeout_s,
            )
        except asyncpg.PostgresError as exc:
            raise IngestRejected(
                "source_unreadable",
                f"source {wanted.name!r}: the query failed: {exc}",
                source=wanted.name,
            ) from None
        finally:
            await connection.close()
        spools.append(path)
        reader = SourceReader(wanted, path, self.limits, "parquet")
        reader.content_hash = digest
        return reader

    async def _store(
        self, request: dict[str, Any], pipeline: Pipeline, sealer: ColumnSealer | None
    ) -> tuple[str, dict[str, Any]]:
        tenant, dataset, request_id = request["tenant"], request["dataset"], request["request_id"]
        region = request.get("region") or self.settings.ingest_region
        outcome = pipeline.outcome
        assert outcome is not None
        with tempfile.SpooledTemporaryFile(max_size=_SPOOL_MEMORY) as rejects:
            async with self.context.pool.acquire() as connection, connection.transaction():
                await storage.as_tenant(connection, tenant)
                await storage.lock_dataset(connection, tenant, dataset)
                done = await storage.completed(connection, tenant, request_id)
                if done is not None:  # another delivery of this request finished first
                    return done
                columns = outcome.pg_columns()
                table = await storage.create_version_table(connection, columns)
                await storage.copy_rows(
                    connection,
                    table,
                    [name for name, _ in columns],
                    self._stream(pipeline.pieces(), rejects),
                )
                existing = await tables.catalog_version(
                    connection, tenant, dataset, outcome.version
                )
                if existing is not None:
                    await storage.discard_version_table(connection, table)
                    table = existing
                else:
                    await storage.protect_version_table(connection, table)
                    await tables.record_version(
                        connection,
                        tenant=tenant,
                        dataset=dataset,
                        version=outcome.version,
                        table=table,
                        columns=_columns(outcome),
                        rows=outcome.rows,
                        quality=outcome.quality.summary(),
                        spec=outcome.spec.to_json(),
                        spec_inferred=outcome.inferred,
                        lineage=outcome.lineage,
                        region=region,
                        request_id=request_id,
                        wrapped_key=sealer.wrapped_key if sealer is not None else None,
                    )
                if rejects.tell():
                    rejects.seek(0)
                    await storage.copy_rejects(connection, tenant, dataset, request_id, rejects)
                record = _ready(request, outcome, f"{storage.DATA_SCHEMA}.{table}", region)
                record["reused"] = existing is not None
                await storage.record_request(
                    connection, tenant, request_id, dataset, "ready", record
                )
                await storage.audit(
                    connection,
                    tenant=tenant,
                    action="write",
                    resource=f"dataset:{tenant}/{dataset}@{outcome.version}",
                    outcome="allowed",
                    detail=f"{outcome.rows} rows"
                    + (", content already stored" if existing else ""),
                    region=region,
                )
        instruments.count_rows(outcome.quality, outcome.rows)  # once committed
        return "ready", record

    async def _stream(self, pieces: Iterator[Any], rejects: Any) -> AsyncIterator[bytes]:
        """The pieces' CSV for COPY, the next piece cleaned in a thread meanwhile."""
        writer = csv.writer(text := io.TextIOWrapper(rejects, encoding="utf-8", newline=""))
        async for piece in _prefetched(pieces):
            if len(piece.rejects):
                writer.writerows(piece.rejects.itertuples(index=False, name=None))
                text.flush()
            if piece.copy_csv:
                yield piece.copy_csv
        text.flush()
        text.detach()

    async def _reject(
        self, request: dict[str, Any], rejected: IngestRejected
    ) -> tuple[str, dict[str, Any]]:
        tenant, dataset, request_id = request["tenant"], request["dataset"], request["request_id"]
        record = _rejection(request, rejected, self.limits.bounds)
        async with self.context.pool.acquire() as connection, connection.transaction():
            await storage.as_tenant(connection, tenant)
            await storage.lock_dataset(connection, tenant, dataset)
            done = await storage.completed(connection, tenant, request_id)
            if done is not None:
                return done
            await storage.record_request(
                connection, tenant, request_id, dataset, "rejected", record
            )
            await storage.audit(
                connection,
                tenant=tenant,
                action="write",
                resource=f"dataset:{tenant}/{dataset}",
                outcome="denied",
                detail=f"{rejected.code}: {record['reason']}",
                region=request.get("region") or self.settings.ingest_region,
            )
        instruments.REJECTIONS.labels(rejected.code).inc()  # once committed
        return "rejected", record


async def _prefetched(items: Iterator[T]) -> AsyncIterator[T]:
    """Items of a blocking iterator, each computed in a thread while the last is used."""
    end = object()
    pending = asyncio.ensure_future(asyncio.to_thread(next, items, end))
    try:
        while True:
            item = await pending
            if item is end:
                return
            pending = asyncio.ensure_future(asyncio.to_thread(next, items, end))
            yield item  # type: ignore[misc]
    finally:
        # Never leave the iterator running in a thread once the consumer is gone.
        if not pending.done():
            with contextlib.suppress(Exception):
                await pending


def _rejection(request: dict[str, Any], rejected: IngestRejected, bounds: Bounds) -> dict[str, Any]:
    """The ``lepton.data.rejected`` answering ``request`` (or another answer to it). It
    never echoes megabytes of the input back: the answer and its audit row stay small."""
    return {
        "request_id": request["request_id"],
        "tenant": request["tenant"],
        "dataset": request["dataset"],
        "code": rejected.code,
        "reason": clip_bytes(rejected.reason, bounds.reason_bytes),
        "source": None if rejected.source is None else clip(rejected.source, bounds.sample_chars),
        "column": None if rejected.column is None else clip(rejected.column, bounds.sample_chars),
        "row": rejected.row,
        "rejected_at": _now_ms(),
    }


def _columns(outcome: Outcome) -> list[dict[str, Any]]:
    return [
        {
            "name": name,
            "type": column.type,
            "nullable": column.nullable,
            "sensitive": column.sensitive,
        }
        for name, column in outcome.columns
    ]


def _ready(
    request: dict[str, Any], outcome: Outcome, location: str, region: str | None
) -> dict[str, Any]:
    return {
        "request_id": request["request_id"],
        "tenant": request["tenant"],
        "dataset": request["dataset"],
        "version": outcome.version,
        "reused": False,
        "rows": outcome.rows,
        "columns": _columns(outcome),
        "quality": outcome.quality.summary(),
        "spec_inferred": outcome.inferred,
        "spec": outcome.spec.to_json(),
        "lineage": outcome.lineage,
        "location": location,
        "region": region,
        "ready_at": _now_ms(),
    }


def create_app(settings: IngestSettings | None = None) -> Service:
    configured = settings or IngestSettings()

    async def handler_factory(context: Context) -> Handler:
        await tables.migrate(context.pool)
        return Ingest(context, configured).handle

    return Service(
        name="ingest",
        actor="ingest",
        # lepton.audit: other services' denials, kept in the audit table ingest owns.
        consumes=["lepton.data.requested", "lepton.audit"],
        settings=configured,
        handler_factory=handler_factory,
        background=[relay_audit],
        production_checks=[_sensitive_columns_can_be_encrypted],
    )


def _sensitive_columns_can_be_encrypted(settings: Settings) -> str | None:
    if isinstance(settings, IngestSettings) and settings.master_key is None:
        return "LEPTON_MASTER_KEY is unset: sensitive columns could not be encrypted"
    return None


def main() -> None:
    run(create_app)
