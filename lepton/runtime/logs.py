"""How every Lepton process logs: JSON lines on stderr."""

from __future__ import annotations

import logging
import sys

import structlog

from lepton.runtime import tracing

__all__ = ["configure_logging"]


def configure_logging(level: str) -> None:
    """JSON lines on stderr, one event per line, easy to ship and to grep: Lepton's own
    events and every other line a service prints — librdkafka's (through the ``logger`` its
    clients are given), other libraries' standard logging, Python's warnings (scikit-learn's
    among them) — rendered the same way, with the logger's name; each with the trace and
    span ids of what is being handled."""
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        tracing.add_trace_ids,
        structlog.processors.format_exc_info,
    ]
    render = structlog.processors.JSONRenderer(ensure_ascii=False)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, render],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.captureWarnings(True)
    structlog.configure(
        processors=[*shared, render],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
    )
