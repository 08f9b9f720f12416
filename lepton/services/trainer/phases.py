"""A training run's phases as spans: the worker process reports each stage it reaches
(loading, preparing, searching, refitting, storing); each opens a span, child of the run's,
that the next stage, or the run's result, ends. Without a tracer they cost nothing."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lepton.bus import start_span

if TYPE_CHECKING:
    from opentelemetry.trace import Span

__all__ = ["Phases"]


class Phases:
    """The phase a run is in, as an open span."""

    __slots__ = ("_span", "_stage")

    def __init__(self) -> None:
        self._stage: str | None = None
        self._span: Span | None = None

    def reached(self, stage: str | None) -> None:
        """The worker reported ``stage`` (None: it is done): a new stage ends the open
        phase's span and opens its own; the same stage again changes nothing."""
        if stage == self._stage:
            return
        if self._span is not None:
            self._span.end()
        self._stage = stage
        self._span = (
            None if stage is None else start_span(stage, attributes={"lepton.phase": stage})
        )
