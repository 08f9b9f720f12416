"""The evaluator service: scores each new model, keeps a champion per model name, and
answers prediction requests.

- ``lepton.models.ready``: evaluate the model, judge it against the current champion of
  its tenant's model name, store both and publish ``lepton.models.evaluated`` and
  ``lepton.models.promoted`` (:mod:`lepton.services.evaluator.model_ready`); a model that cannot
  be evaluated is stored as failed and dead-lettered with the specific error.
- ``lepton.models.promoted``: a ``rolled_back`` verdict (published by someone else, e.g.
  the CLI) restores its model as champion if it is an evaluated model of that tenant and
  name; otherwise it is dead-lettered with the reason.
- ``lepton.predict.requested`` (its own consumer, so a long evaluation never holds up a
  prediction): one ``lepton.predict.results`` answer per request
  (:mod:`lepton.services.evaluator.prediction_requests`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from lepton.contract.identity import PRINCIPAL_HEADER
from lepton.runtime.service import Context, Service, run
from lepton.services.evaluator import store
from lepton.services.evaluator.evaluation import EvaluationConfig
from lepton.services.evaluator.model_cache import ModelCache
from lepton.services.evaluator.model_ready import ModelReadyHandler
from lepton.services.evaluator.prediction_requests import PredictionRequests
from lepton.services.evaluator.promotion import PolicyBook, parse_policies
from lepton.services.evaluator.settings import EvaluatorSettings

if TYPE_CHECKING:
    from lepton.bus import Event, Handler

__all__ = ["Evaluator", "create_app", "main"]

_MIGRATIONS = Path(__file__).parent / "migrations"


class Evaluator:
    """The service's behaviour; :func:`create_app` wraps it in a Service."""

    def __init__(self, settings: EvaluatorSettings) -> None:
        self.settings = settings
        # A broken policy file stops the service at start, not at its first verdict.
        path = settings.evaluator_policy_file
        self.policies = parse_policies(path.read_text("utf-8")) if path else PolicyBook()
        self.config = EvaluationConfig(
            cv_folds=settings.evaluator_cv_folds,
            max_cv_rows=settings.evaluator_cv_max_rows,
            max_importance_rows=settings.evaluator_importance_max_rows,
            importance_repeats=settings.evaluator_importance_repeats,
        )
        self.models = ModelCache(settings.evaluator_model_cache, settings.artifact_store())

    async def handler(self, context: Context) -> Handler:
        ready = ModelReadyHandler(context, self.settings, self.policies, self.config, self.models)

        async def handle(event: Event) -> None:
            if event.type == "lepton.ModelReady":
                author = event.headers.get(PRINCIPAL_HEADER, b"")
                await ready.handle(event.record, author.decode("utf-8", "replace"))
            elif event.type == "lepton.ModelPromoted":
                await _on_verdict(context, event.record)

        return handle

    async def serve_predictions(self, context: Context) -> None:
        """A consumer of its own for prediction requests, for the service's lifetime."""
        await PredictionRequests(context, self.settings, self.models).serve()


async def _on_verdict(context: Context, verdict: dict[str, Any]) -> None:
    # Our own verdicts are stored before they are published; only a rollback, which
    # someone else decides, changes anything here.
    if verdict["verdict"] != "rolled_back":
        return
    applied = await store.apply_rollback(context.pool, verdict)
    context.log.info(
        "rollback" if applied else "rollback already applied",
        tenant=verdict["tenant"],
        model_name=verdict["model_name"],
        model=verdict["model_id"],
        by=verdict.get("decided_by"),
    )


def create_app(settings: EvaluatorSettings | None = None) -> Service:
    evaluator = Evaluator(settings or EvaluatorSettings())
    return Service(
        name="evaluator",
        actor="evaluator",
        consumes=["lepton.models.ready", "lepton.models.promoted"],
        settings=evaluator.settings,
        migrations=_MIGRATIONS,
        handler_factory=evaluator.handler,
        background=[evaluator.serve_predictions],
    )


def main() -> None:
    run(create_app)
