"""``lepton tail``: a topic's events as JSON lines, decoded."""

from __future__ import annotations

import contextlib
import json
from datetime import date, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from lepton.cli._app import app, with_client

if TYPE_CHECKING:
    from lepton.sdk.client import LeptonClient


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(type(value).__name__)


@app.command("tail")
def tail(
    topic: Annotated[
        str,
        typer.Argument(
            help="A Lepton topic, e.g. lepton.jobs.events, or its dead letters "
            "(lepton.jobs.events.dlq: why each was set aside, and its value)."
        ),
    ],
    from_beginning: Annotated[
        bool, typer.Option("--from-beginning", help="Start at the oldest message.")
    ] = False,
    count: Annotated[
        int | None, typer.Option("--max", min=1, help="Stop after this many events.")
    ] = None,
    timeout: Annotated[
        float | None, typer.Option(help="Stop after this many seconds without a new event.")
    ] = None,
    key: Annotated[str | None, typer.Option(help="Only events with this key.")] = None,
) -> None:
    """Print a topic's events as JSON lines, decoded; a dead-letter topic's entries with
    the reason they were set aside."""

    async def follow(client: LeptonClient) -> None:
        events = client.tail(topic, from_beginning=from_beginning, key=key, idle_timeout_s=timeout)
        async with contextlib.aclosing(events):
            seen = 0
            async for event in events:
                line: dict[str, Any] = {"topic": event.topic, "key": event.key}
                if event.dead_letter is not None:
                    line |= {"dead_letter": event.dead_letter, "value": event.value}
                if event.error is not None:
                    line |= {"offset": event.offset, "error": event.error}
                else:
                    line |= {"type": event.type, "offset": event.offset, "record": event.record}
                print(json.dumps(line, default=_json_default, ensure_ascii=False), flush=True)
                seen += 1
                if count is not None and seen >= count:
                    return

    with contextlib.suppress(KeyboardInterrupt):
        with_client(follow)
