"""Our murmur2 is Kafka's: the same partition for every key as aiokafka (and Java) pick."""

from __future__ import annotations

from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from hypothesis import given
from hypothesis import strategies as st

from lepton.bus import murmur2, partition_for


@given(st.binary(max_size=64))
def test_murmur2_matches_aiokafka(key: bytes) -> None:
    assert murmur2(key) == aiokafka_murmur2(key)


@given(st.binary(min_size=1, max_size=64), st.integers(min_value=1, max_value=64))
def test_partition_for_is_the_default_partitioners_choice(key: bytes, count: int) -> None:
    assert partition_for(key, count) == (aiokafka_murmur2(key) & 0x7FFFFFFF) % count


def test_known_kafka_partitions() -> None:
    # From Kafka's own DefaultPartitionerTest / Utils.murmur2 (Java, signed int results).
    assert murmur2(b"21") & 0xFFFFFFFF == (-973932308) & 0xFFFFFFFF
    assert murmur2(b"foobar") & 0xFFFFFFFF == (-790332482) & 0xFFFFFFFF
    assert murmur2(b"a-little-bit-long-string") & 0xFFFFFFFF == (-985981536) & 0xFFFFFFFF
