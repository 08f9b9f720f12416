"""Synthetic records the benchmarks send, built in one place."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from lepton.config import Settings
from lepton.contract.codec import Codec
from lepton.contract.identity import SigningKey
from lepton.runtime.identity import master_key
from lepton.testing import impersonating


def heartbeat(
    index: int,
    *,
    node_id: str,
    sent_at: int,
    agent_started_at: int,
    region: str = "eu-west",
    labels: dict[str, str] | None = None,
    running_job_ids: list[str] | None = None,
) -> dict[str, Any]:
    """A ``lepton.NodeHeartbeat`` of a 32-core node whose usage varies with ``index``."""
    return {
        "node_id": node_id,
        "region": region,
        "labels": labels if labels is not None else {"pool": "cpu"},
        "gpu_type": None,
        "capacity": {
            "cpu_millicores": 32000,
            "memory_mib": 131072,
            "gpus": 0,
            "network_mbps": 10000,
        },
        "usage": {
            "cpu_millicores": 1000 + index % 30000,
            "memory_mib": 4096 + index % 60000,
            "gpus": 0,
            "network_mbps": index % 900,
        },
        "running_job_ids": running_job_ids or [],
        "sent_at": sent_at,
        "sequence": index,
        "agent_started_at": agent_started_at,
        "interval_ms": 1000,
    }


def event_headers(
    event_type: str, count: int, *, first: int = 0, source: bytes = b"bench-load"
) -> list[list[tuple[str, bytes]]]:
    """The CloudEvents headers a Publisher adds, for ``count`` pre-encoded messages,
    built cheaply (one trace for all of them; ids ``<trace>-<first + n>``)."""
    trace = uuid.uuid4().hex.encode()
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()).encode()
    kind = event_type.encode()
    return [
        [
            ("ce_specversion", b"1.0"),
            ("ce_id", b"%s-%d" % (trace, n)),
            ("ce_source", source),
            ("ce_type", kind),
            ("ce_time", when),
            ("content-type", b"application/avro"),
            ("traceparent", b"00-%s-%016x-01" % (trace, n)),
        ]
        for n in range(first, first + count)
    ]


def zigzag(value: int) -> bytes:
    """Avro's encoding of an int or long: zig-zag, then a base-128 varint."""
    n = (value << 1) ^ (value >> 63)
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


class StampedHeartbeats:
    """Single-object bytes of fixed nodes' heartbeats, re-stamped without re-encoding.

    A load generator that encodes every heartbeat spends more CPU than the reader it
    loads (two shared cores): this encodes each node once and splices in a new send time
    and sequence, the two fields that change from one round to the next. A
    ``lepton.NodeHeartbeat`` ends with ``sent_at, sequence, agent_started_at,
    interval_ms``; the split is checked against the codec when built.
    """

    def __init__(self, codec: Codec, records: Sequence[dict[str, Any]]) -> None:
        self.keys = [record["node_id"].encode() for record in records]
        self._heads: list[bytes] = []
        self._tails: list[bytes] = []
        for record in records:
            encoded = codec.encode(_HEARTBEAT, record)
            tail = zigzag(record["agent_started_at"]) + zigzag(record["interval_ms"])
            stamp = zigzag(record["sent_at"]) + zigzag(record["sequence"])
            if not encoded.endswith(stamp + tail):
                raise RuntimeError(f"{_HEARTBEAT} no longer ends with its stamp: update this")
            self._heads.append(encoded[: -len(stamp + tail)])
            self._tails.append(tail)
        if records:
            check = records[0] | {"sent_at": 123_456_789, "sequence": 7}
            if codec.decode(self.value(0, sent_at=123_456_789, sequence=7))[1] != check:
                raise RuntimeError(f"re-stamped {_HEARTBEAT} does not decode to its record")

    def __len__(self) -> int:
        return len(self.keys)

    def value(self, index: int, *, sent_at: int, sequence: int) -> bytes:
        return self.values(range(index, index + 1), sent_at=sent_at, sequence=sequence)[0]

    def values(self, indices: Iterable[int], *, sent_at: int, sequence: int) -> list[bytes]:
        """The heartbeats of these nodes, all stamped alike."""
        stamp = zigzag(sent_at) + zigzag(sequence)
        heads, tails = self._heads, self._tails
        return [heads[i] + stamp + tails[i] for i in indices]


_HEARTBEAT = "lepton.NodeHeartbeat"


class Signer:
    """Signs pre-encoded records as their natural authors would (the node a heartbeat is
    about, the tenant of a request), with the local stack's master key: what a load
    generator must do now that every service refuses unsigned records."""

    def __init__(self) -> None:
        self._author = impersonating(master_key(Settings()))

    def headers(
        self, topic: str, key: bytes, value: bytes, record: dict[str, Any] | None = None
    ) -> list[tuple[str, bytes]]:
        """The two signature headers; a heartbeat needs no ``record`` (its key names it)."""
        signing: SigningKey = self._author(topic, key, record or {})
        return signing.sign(topic, key, value)
