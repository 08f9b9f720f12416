"""Every log line a service writes is one JSON object, with the trace and span ids of
what is being handled: structlog's lines and the standard library's (the bus's,
aiokafka's), with and without OpenTelemetry spans."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

_PROCESS = textwrap.dedent(
    """
    import logging

    import structlog
    from opentelemetry.sdk.trace import TracerProvider

    from lepton.bus import continue_trace, span, trace_with, traceparent_of
    from lepton.runtime.logs import configure_logging

    configure_logging("info")
    log = structlog.get_logger("test")
    log.info("before")
    with continue_trace(b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"):
        log.info("handling")
        logging.getLogger("lepton.bus").warning("retrying %s", "a batch flush")
    trace_with(TracerProvider().get_tracer("test"))
    with span("work") as work:
        log.info("in a span", traceparent=traceparent_of(work).decode())
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("aiokafka").exception("failed")
    """
)


def test_every_line_is_json_with_the_ids_of_what_is_handled() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _PROCESS], capture_output=True, text=True, timeout=60, check=True
    )
    lines = [json.loads(line) for line in done.stderr.splitlines()]
    assert [line["event"] for line in lines] == [
        "before",
        "handling",
        "retrying a batch flush",
        "in a span",
        "failed",
    ]
    before, handling, retrying, in_span, failed = lines
    assert "trace_id" not in before, "nothing is handled: no ids"
    for line in (handling, retrying):
        assert line["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
        assert line["span_id"] == "b7ad6b7169203331"
    assert retrying["logger"] == "lepton.bus"
    assert retrying["level"] == "warning"
    _, trace_id, span_id, _ = in_span["traceparent"].split("-")
    assert (in_span["trace_id"], in_span["span_id"]) == (trace_id, span_id)
    assert (failed["trace_id"], failed["span_id"]) == (trace_id, span_id)
    assert "ValueError: boom" in failed["exception"]
