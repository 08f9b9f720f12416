"""A service's standard error is JSON lines only: librdkafka's lines (a consumer that cannot
reach its broker), other libraries' logging and Python's warnings come out as the service's
own events do, never as raw ``%3|…|FAIL|`` text or a warning's two-line report."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

PROGRAM = textwrap.dedent(
    """
    import asyncio, logging, socket, warnings

    import structlog

    from lepton.bus._reader import Reader
    from lepton.config import KafkaAccess
    from lepton.runtime.logs import configure_logging

    configure_logging("info")
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there: librdkafka logs its refused connections

    async def main():
        reader = Reader(KafkaAccess(bootstrap=f"127.0.0.1:{port}"), group_id="g", client_id="c")
        await reader.subscribe(["t"])
        for _ in range(3):
            await reader.fetch(10, None)
        await reader.close()

    asyncio.run(main())
    warnings.warn("a library's warning")
    logging.getLogger("some.library").warning("a line\\nover two lines")
    structlog.get_logger().info("lepton's own", n=1)
    """
)


def test_every_line_on_standard_error_is_json() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM], capture_output=True, text=True, timeout=60, check=True
    )
    lines = done.stderr.splitlines()
    events = [json.loads(line) for line in lines]  # fails on any line that is not JSON
    loggers = {event.get("logger") for event in events}
    assert "lepton.bus._reader" in loggers, "librdkafka's lines reach the log"
    assert any("Connection refused" in event["event"] for event in events)
    assert "py.warnings" in loggers
    assert {"some.library"} <= loggers
    assert any(event["event"] == "lepton's own" and event["n"] == 1 for event in events)
    assert all("timestamp" in event and "level" in event for event in events)
