"""Time series, alert history and state snapshots in PostgreSQL.

Each sample is added on write to a bucket at every resolution (10 s, 5 min, 1 h) as sum,
count, min and max: that is the downsampling, with nothing to roll up later. Retention
deletes old buckets per resolution. All SQL is parameterised; every row carries the
installation's namespace so that installations sharing a database stay apart.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    import asyncpg

    from lepton.services.monitor.rules import Transition

__all__ = ["RESOLUTIONS", "SeriesStore"]

_DAY_S = 86_400


@dataclass(frozen=True, slots=True)
class Resolution:
    seconds: int
    keep_s: int  # how long its buckets are kept


def resolutions(retention_days: int) -> tuple[Resolution, ...]:
    return (
        Resolution(10, _DAY_S),
        Resolution(300, 30 * _DAY_S),
        Resolution(3600, retention_days * _DAY_S),
    )


RESOLUTIONS = tuple(resolution.seconds for resolution in resolutions(1))
MAX_POINTS = 2000  # per series and request, which picks the resolution of a range

_WRITE = """
INSERT INTO monitor_points AS p
    (namespace, metric, subject, resolution_s, bucket_ms, sum, count, min, max)
SELECT $1, u.metric, u.subject, r.seconds, $5::bigint - ($5::bigint % (r.seconds * 1000::bigint)),
       u.value, 1, u.value, u.value
FROM unnest($2::text[], $3::text[], $4::float8[]) AS u(metric, subject, value)
CROSS JOIN unnest($6::int[]) AS r(seconds)
ON CONFLICT (namespace, metric, subject, resolution_s, bucket_ms) DO UPDATE
SET sum = p.sum + EXCLUDED.sum,
    count = p.count + 1,
    min = LEAST(p.min, EXCLUDED.min),
    max = GREATEST(p.max, EXCLUDED.max)
"""

_READ = """
SELECT subject, bucket_ms, sum / count AS avg, min, max
FROM monitor_points
WHERE namespace = $1 AND metric = $2 AND resolution_s = $3
  AND bucket_ms >= $4 AND bucket_ms <= $5 AND ($6::text IS NULL OR subject = $6)
  AND ($8::text IS NULL OR starts_with(subject, $8))
ORDER BY subject, bucket_ms
LIMIT $7
"""


class SeriesStore:
    def __init__(self, pool: asyncpg.Pool, namespace: str, retention_days: int = 90) -> None:
        self._pool = pool
        self._namespace = namespace
        self._resolutions = resolutions(retention_days)
        self._retention_ms = retention_days * _DAY_S * 1000

    async def write(self, now_ms: int, points: Mapping[tuple[str, str], float]) -> None:
        """Add one sample of each (metric, subject) at ``now_ms`` to every resolution."""
        if not points:
            return
        metrics, subjects = zip(*points, strict=True)
        await self._pool.execute(
            _WRITE,
            self._namespace,
            list(metrics),
            list(subjects),
            [float(value) for value in points.values()],
            now_ms,
            [resolution.seconds for resolution in self._resolutions],
        )

    def pick_resolution(self, since_ms: int, until_ms: int, now_ms: int) -> int:
        """The finest resolution that still holds ``since_ms`` and fits MAX_POINTS."""
        for resolution in self._resolutions:
            kept = now_ms - resolution.keep_s * 1000 <= since_ms
            if kept and (until_ms - since_ms) / (resolution.seconds * 1000) <= MAX_POINTS:
                return resolution.seconds
        return self._resolutions[-1].seconds

    async def read(
        self,
        metric: str,
        subject: str | None,
        since_ms: int,
        until_ms: int,
        resolution_s: int,
        max_rows: int = 50_000,
        subject_prefix: str | None = None,
    ) -> dict[str, list[list[float]]]:
        """Points per subject: ``[bucket_ms, avg, min, max]``, oldest first; only of the
        subjects that begin with ``subject_prefix`` when it is given."""
        rows = await self._pool.fetch(
            _READ,
            self._namespace,
            metric,
            resolution_s,
            since_ms - since_ms % (resolution_s * 1000),
            until_ms,
            subject,
            max_rows,
            subject_prefix,
        )
        series: dict[str, list[list[float]]] = {}
        for row in rows:
            series.setdefault(row["subject"], []).append(
                [row["bucket_ms"], row["avg"], row["min"], row["max"]]
            )
        return series

    async def prune(self, now_ms: int) -> int:
        """Delete buckets past their resolution's retention, and old alert history."""
        deleted = 0
        async with self._pool.acquire() as connection, connection.transaction():
            for resolution in self._resolutions:
                status = await connection.execute(
                    "DELETE FROM monitor_points WHERE resolution_s = $1 AND bucket_ms < $2 "
                    "AND namespace = $3",
                    resolution.seconds,
                    now_ms - resolution.keep_s * 1000,
                    self._namespace,
                )
                deleted += int(status.rsplit(" ", 1)[-1])
            await connection.execute(
                "DELETE FROM monitor_alerts WHERE namespace = $1 AND time < $2",
                self._namespace,
                now_ms - self._retention_ms,
            )
        return deleted

    async def record_alerts(self, transitions: Iterable[Transition]) -> None:
        rows = [
            (
                self._namespace,
                record["rule"],
                record["subject"],
                record["severity"],
                record["state"],
                record["value"],
                record["threshold"],
                record["summary"],
                record["tenant"],
                json.dumps(record["labels"]),
                record["active_since"],
                record["time"],
            )
            for record in (transition.record() for transition in transitions)
        ]
        if rows:
            await self._pool.executemany(
                "INSERT INTO monitor_alerts (namespace, rule, subject, severity, state, value, "
                "threshold, summary, tenant, labels, active_since, time) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::jsonb, $11, $12)",
                rows,
            )

    async def alerts(
        self, limit: int, state: str | None = None, tenant: str | None = None
    ) -> list[dict[str, Any]]:
        """The newest alert transitions, newest first; only ``tenant``'s when given."""
        rows = await self._pool.fetch(
            "SELECT rule, subject, severity, state, value, threshold, summary, tenant, "
            "labels::text AS labels, active_since, time FROM monitor_alerts "
            "WHERE namespace = $1 AND ($2::text IS NULL OR state = $2) "
            "AND ($4::text IS NULL OR tenant = $4) "
            "ORDER BY time DESC, id DESC LIMIT $3",
            self._namespace,
            state,
            limit,
            tenant,
        )
        return [{**dict(row), "labels": json.loads(row["labels"])} for row in rows]

    async def save_snapshot(
        self, now_ms: int, state: Mapping[str, Any], alerts: Iterable[Mapping[str, Any]]
    ) -> None:
        # Encoded off the event loop: a full view is megabytes of JSON.
        state_text, alerts_text = await asyncio.to_thread(
            lambda: (json.dumps(state), json.dumps(list(alerts)))
        )
        await self._pool.execute(
            "INSERT INTO monitor_snapshots (namespace, taken_at, state, alerts) "
            "VALUES ($1, $2, $3::jsonb, $4::jsonb) ON CONFLICT (namespace) DO UPDATE "
            "SET taken_at = EXCLUDED.taken_at, state = EXCLUDED.state, alerts = EXCLUDED.alerts",
            self._namespace,
            now_ms,
            state_text,
            alerts_text,
        )

    async def load_snapshot(self) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
        row = await self._pool.fetchrow(
            "SELECT state::text AS state, alerts::text AS alerts FROM monitor_snapshots "
            "WHERE namespace = $1",
            self._namespace,
        )
        if row is None:
            return None
        return json.loads(row["state"]), json.loads(row["alerts"])
