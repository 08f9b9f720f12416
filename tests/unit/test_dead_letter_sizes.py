"""A dead letter always fits its topic: what is kept whole, what is cut, and what it says."""

from __future__ import annotations

import hashlib

import pytest

from lepton.bus import message_bytes
from lepton.bus._sizes import dead_letter, reason_headers

LIMIT = 10_000
REASON = reason_headers(ValueError("no such schema"), "lepton.jobs.requested", 0, 7)


def test_a_message_that_fits_is_kept_whole_with_the_reason() -> None:
    key, value, headers = dead_letter("t", b"k", b"v" * 100, [("origin", b"x")], REASON, LIMIT)
    assert (key, value) == (b"k", b"v" * 100)
    assert headers == [("origin", b"x"), *REASON]


@pytest.mark.parametrize(
    ("key", "value", "headers", "cut"),
    [
        (b"k", b"v" * LIMIT, [("origin", b"x")], b"value"),
        (b"k" * LIMIT, b"v" * 100, [], b"key"),
        (b"k", b"v" * 100, [("huge", b"h" * LIMIT)], b"headers"),
        (b"k" * LIMIT, b"v" * LIMIT, [("h" * LIMIT, b"")], b"key,headers,value"),
    ],
    ids=["value", "key", "headers", "everything"],
)
def test_a_message_too_large_is_cut_to_fit_and_says_what_was_cut(
    key: bytes, value: bytes, headers: list[tuple[str, bytes]], cut: bytes
) -> None:
    kept_key, kept_value, kept = dead_letter("t", key, value, headers, REASON, LIMIT)
    assert message_bytes(kept_key, kept_value, kept) <= LIMIT
    said = dict(kept)
    assert said["dlq_truncated"] == cut
    assert said["dlq_original_value_bytes"] == str(len(value)).encode()
    assert said["dlq_original_value_sha256"] == hashlib.sha256(value).hexdigest().encode()
    assert key.startswith(kept_key or b"")
    assert value.startswith(kept_value or b"")
    assert all(reason in kept for reason in REASON), "the reason is always kept"


def test_the_reason_text_is_bounded() -> None:
    (message,) = [
        value
        for name, value in reason_headers(ValueError("x" * 100_000), "t")
        if name == "dlq_error_message"
    ]
    assert len(message) == 4096
