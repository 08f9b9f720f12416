"""The evaluator service: scores each new model, keeps a champion per model name, and
answers prediction requests.

- ``lepton.models.ready``: load the artifact (checksum and trusted types checked) and the
  dataset version the model was trained on, evaluate it on the rows its trainer held out
  and by cross-validation (:mod:`services.evaluator.evaluation`), judge it against the
  current champion of its tenant's model name (:mod:`services.evaluator.promotion`), draw
  its plots, store evaluation and verdict in one transaction, then publish
  ``lepton.models.evaluated`` and ``lepton.models.promoted``. A redelivered model-ready
  is not evaluated again; if the events of the first attempt were stored but not
  published, they are published now. A model that cannot be evaluated (tampered or
  missing artifact, dataset gone or no longer matching the model) is stored as failed
  and its model-ready dead-lettered with the specific error; nothing is promoted.
- ``lepton.models.promoted``: a ``rolled_back`` verdict (published by someone else, e.g.
  the CLI) restores its model as champion if it is an evaluated model of that tenant and
  name; otherwise it is dead-lettered with the reason.
- ``lepton.predict.requested`` (its own consumer, so a long evaluation never holds up a
  prediction): resolve the model, score the records, publish one
  ``lepton.predict.results`` answer per request, an error code when none can be made.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lepton.bus import Subscriber, TransientError
from lepton.contract import default_codec
from lepton.data import artifacts
from lepton.data.access import DatasetError
from lepton.data.reading import read_dataset
from lepton.runtime import endpoints
from lepton.runtime.service import Context, Service, run
from services.evaluator import plots, store
from services.evaluator.evaluation import (
    Evaluation,
    EvaluationConfig,
    Finding,
    Prepared,
    evaluate,
    prepare,
)
from services.evaluator.inputs import ColumnsMismatch, InputSchema, input_schema
from services.evaluator.prediction import (
    CHAMPION,
    PredictionFailure,
    parse_model_ref,
    score_rows,
)
from services.evaluator.promotion import (
    Comparison,
    Decision,
    Policy,
    PolicyBook,
    PolicyError,
    compare,
    decide,
    parse_policies,
)
from services.evaluator.settings import EvaluatorSettings

if TYPE_CHECKING:
    import pandas as pd

    from lepton.bus import Event, Handler

__all__ = [
    "ArtifactInvalid",
    "DatasetMismatch",
    "DatasetUnavailable",
    "EvaluationFailed",
    "Evaluator",
    "create_app",
    "main",
]

_MIGRATIONS = Path(__file__).parent / "migrations"


class EvaluationFailed(Exception):
    """A model that cannot be evaluated; the subclass names why (the dead letter's
    ``dlq_error_type``)."""


class ArtifactInvalid(EvaluationFailed):
    """The artifact is missing, altered (checksum) or needs an untrusted type."""


class DatasetUnavailable(EvaluationFailed):
    """The dataset version is gone or not readable by the model's tenant."""


class DatasetMismatch(EvaluationFailed):
    """The dataset's columns no longer fit the model."""


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class Loaded:
    """A model ready to score: its pipeline, what it reads and its ModelReady."""

    model_id: str
    pipeline: Any
    schema: InputSchema
    ready: dict[str, Any]


class ModelCache:
    """Loaded models by id, least recently used out first. An artifact is immutable under
    its checksum, so a cached model never goes stale."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._models: OrderedDict[str, Loaded] = OrderedDict()

    async def load(self, ready: dict[str, Any]) -> Loaded:
        model_id = ready["model_id"]
        cached = self._models.get(model_id)
        if cached is not None:
            self._models.move_to_end(model_id)
            return cached
        try:
            pipeline = await asyncio.to_thread(
                artifacts.load, ready["artifact_uri"], ready["artifact_sha256"]
            )
        except (artifacts.ArtifactError, OSError) as exc:
            raise ArtifactInvalid(f"model {model_id}: {exc}") from exc
        loaded = Loaded(
            model_id, pipeline, input_schema(pipeline, list(ready["feature_columns"])), ready
        )
        self._models[model_id] = loaded
        if len(self._models) > self._size:
            self._models.popitem(last=False)
        return loaded


@dataclass(slots=True)
class _Assessment:
    evaluation: Evaluation
    decision: Decision | None
    policy: Policy | None


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
        self.models = ModelCache(settings.evaluator_model_cache)
        self._context: Context | None = None

    @property
    def context(self) -> Context:
        assert self._context is not None, "the evaluator's service has not started"
        return self._context

    async def handler(self, context: Context) -> Handler:
        self._context = context
        return self._handle

    async def _handle(self, event: Event) -> None:
        if event.type == "lepton.ModelReady":
            await self._on_ready(event.record)
        elif event.type == "lepton.ModelPromoted":
            await self._on_verdict(event.record)

    # -- evaluation ------------------------------------------------------------------

    async def _on_ready(self, ready: dict[str, Any]) -> None:
        pool, log = self.context.pool, self.context.log.bind(model=ready["model_id"])
        stored = await store.find(pool, ready["model_id"])
        if stored is not None:
            if stored.status == "failed":
                raise _failure(stored.error_type, stored.error_message or "")
            if not stored.published:
                assert stored.evaluated is not None
                await self._publish(stored.evaluated, stored.promoted)
                log.info("published a stored evaluation")
            else:
                log.info("already evaluated")
            return
        try:
            evaluated, promoted = await self._evaluate(ready)
        except EvaluationFailed as exc:
            await store.record_failure(pool, ready, type(exc).__name__, str(exc))
            log.warning("evaluation failed", error_type=type(exc).__name__, reason=str(exc))
            raise
        try:
            await store.record_evaluation(pool, ready, evaluated, promoted)
        except store.ChampionChanged as exc:
            # Another evaluator changed the champion meanwhile: judge again against it.
            raise TransientError(str(exc)) from exc
        await self._publish(evaluated, promoted)
        log.info(
            "evaluated",
            verdict=promoted["verdict"] if promoted else None,
            metrics=evaluated["metrics"],
        )

    async def _publish(self, evaluated: dict[str, Any], promoted: dict[str, Any] | None) -> None:
        context = self.context
        await context.publisher.publish(
            context.topic("lepton.models.evaluated"), evaluated["model_id"], evaluated
        )
        if promoted is not None:
            key = f"{promoted['tenant']}/{promoted['model_name']}"
            await context.publisher.publish(context.topic("lepton.models.promoted"), key, promoted)
        await store.mark_published(context.pool, evaluated["model_id"])

    async def _evaluate(
        self, ready: dict[str, Any]
    ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        # The artifact (file store, a thread), the dataset (PostgreSQL) and the champion
        # to judge against (its row, then its artifact) load side by side.
        (
            challenger,
            frame,
            (policy, policy_problem, champion, rival, rival_note),
        ) = await asyncio.gather(self.models.load(ready), self._dataset(ready), self._rival(ready))
        evaluation, prepared = await asyncio.to_thread(
            self._evaluate_model, ready, challenger, frame
        )
        location = plots.plots_location(
            self.settings.evaluator_plots_root,
            ready["artifact_uri"],
            ready["tenant"],
            ready["model_id"],
        )
        # The plots (drawn from curves and matrix only) and the comparison with the
        # champion need nothing from each other: they run side by side.
        uris, assessment = await asyncio.gather(
            asyncio.to_thread(_plot, evaluation, location),
            asyncio.to_thread(
                self._judge, evaluation, prepared, policy, champion, rival, rival_note
            ),
        )
        if policy_problem is not None:
            evaluation.findings.append(
                Finding("error", "promotion_policy", f"not judged for promotion: {policy_problem}")
            )
        evaluated = _evaluated_record(ready, evaluation, uris)
        promoted = None
        if assessment.decision is not None and assessment.policy is not None:
            promoted = _promoted_record(
                ready,
                assessment.policy,
                assessment.decision,
                champion.model_id if champion else None,
            )
        return evaluated, promoted

    async def _rival(
        self, ready: dict[str, Any]
    ) -> tuple[Policy | None, str | None, store.Champion | None, Loaded | None, str]:
        """The policy for the model (or why there is none), the current champion of its
        name, that champion loaded (or why it could not be)."""
        policy: Policy | None = None
        policy_problem: str | None = None
        try:
            policy = self.policies.policy_for(
                ready["tenant"], ready["model_name"], ready["problem_type"]
            )
        except PolicyError as exc:
            policy_problem = str(exc)
        champion = (
            await store.current_champion(self.context.pool, ready["tenant"], ready["model_name"])
            if policy is not None
            else None
        )
        rival: Loaded | None = None
        rival_note = ""
        if champion is not None:
            try:
                rival = await self.models.load(champion.ready)
            except ArtifactInvalid as exc:
                rival_note = f"the champion's artifact could not be loaded: {exc}"
        return policy, policy_problem, champion, rival, rival_note

    async def _dataset(self, ready: dict[str, Any]) -> pd.DataFrame:
        dataset = ready["dataset"]
        try:
            return await read_dataset(
                self.context.pool,
                reader_tenant=ready["tenant"],
                name=dataset["name"],
                owner_tenant=dataset["owner"],
                version=dataset["version"],
                actor="evaluator",
            )
        except DatasetError as exc:
            raise DatasetUnavailable(f"model {ready['model_id']}: {exc}") from exc

    def _evaluate_model(
        self, ready: dict[str, Any], challenger: Loaded, frame: pd.DataFrame
    ) -> tuple[Evaluation, Prepared]:
        """The CPU-bound evaluation, in a worker thread."""
        features = list(ready["feature_columns"])
        if ready["problem_type"] not in ("regression", "binary", "multiclass"):
            raise EvaluationFailed(f"model {ready['model_id']}: unknown problem type")
        try:
            prepared = prepare(
                frame,
                target=ready["target_column"],
                features=features,
                problem=ready["problem_type"],
                holdout_fraction=ready["holdout_fraction"],
                seed=ready["split_seed"],
                config=self.config,
            )
            evaluation = evaluate(challenger.pipeline, prepared, features, self.config)
        except ColumnsMismatch as exc:
            raise DatasetMismatch(f"model {ready['model_id']}: {exc}") from exc
        return evaluation, prepared

    def _judge(
        self,
        evaluation: Evaluation,
        prepared: Prepared,
        policy: Policy | None,
        champion: store.Champion | None,
        rival: Loaded | None,
        rival_note: str,
    ) -> _Assessment:
        """Comparison with the champion and verdict, in a worker thread."""
        if policy is None:
            return _Assessment(evaluation, None, None)
        comparison: Comparison | None = None
        if champion is not None:
            if rival is not None and champion.ready["problem_type"] == prepared.problem:
                try:
                    comparison = compare(
                        policy,
                        prepared,
                        evaluation,
                        rival.pipeline,
                        rival.ready["feature_columns"],
                        resamples=self.settings.evaluator_bootstrap_resamples,
                        max_rows=self.settings.evaluator_bootstrap_max_rows,
                    )
                except ColumnsMismatch as exc:
                    rival_note = f"the champion cannot read this dataset: {exc}"
            elif not rival_note:
                rival_note = f"the champion is a {champion.ready['problem_type']} model"
            if comparison is None:
                comparison = Comparison(
                    evaluation.metrics, champion.metrics, paired=False, note=rival_note
                )
        try:
            decision = decide(policy, evaluation.metrics, comparison)
        except PolicyError as exc:
            evaluation.findings.append(
                Finding("error", "promotion_policy", f"not judged for promotion: {exc}")
            )
            return _Assessment(evaluation, None, None)
        return _Assessment(evaluation, decision, policy)

    # -- rollbacks -------------------------------------------------------------------

    async def _on_verdict(self, verdict: dict[str, Any]) -> None:
        # Our own verdicts are stored before they are published; only a rollback, which
        # someone else decides, changes anything here.
        if verdict["verdict"] != "rolled_back":
            return
        applied = await store.apply_rollback(self.context.pool, verdict)
        self.context.log.info(
            "rollback" if applied else "rollback already applied",
            tenant=verdict["tenant"],
            model_name=verdict["model_name"],
            model=verdict["model_id"],
            by=verdict.get("decided_by"),
        )

    # -- prediction ------------------------------------------------------------------

    async def serve_predictions(self, context: Context) -> None:
        """A consumer of its own for prediction requests, for the service's lifetime."""
        settings = self.settings
        subscriber = Subscriber(
            endpoints.resolve(settings).kafka_bootstrap,
            default_codec(),
            context.publisher,
            topics=[context.topic("lepton.predict.requested")],
            group_id=context.topics.group("lepton-evaluator-predict"),
            handler=self._predict,
            client_id=settings.client_id,
            connect_timeout_s=settings.connect_timeout_s,
        )
        await subscriber.start()
        try:
            await subscriber.run()
        finally:
            await subscriber.close()

    async def _predict(self, event: Event) -> None:
        request = event.record
        name = request["model"].partition("@")[0]
        result: dict[str, Any] = {
            "request_id": request["request_id"],
            "tenant": request["tenant"],
            "model_name": name,
            "model_id": None,
            "problem_type": "unknown",
            "predictions": [],
            "probabilities": [],
            "error": None,
            "warnings": [],
        }
        try:
            model = await self._resolve(request["tenant"], request["model"])
            result["model_id"] = model.model_id
            result["problem_type"] = model.ready["problem_type"]
            scored = await asyncio.to_thread(
                score_rows,
                model.pipeline,
                model.schema,
                request["rows"],
                self.settings.evaluator_predict_max_rows,
            )
            result |= {
                "predictions": scored.predictions,
                "probabilities": scored.probabilities,
                "warnings": scored.warnings,
            }
        except PredictionFailure as exc:
            result["error"] = {"code": exc.code, "message": exc.message}
        except ArtifactInvalid as exc:
            result["error"] = {"code": "artifact_invalid", "message": str(exc)}
        result["scored_at"] = _now_ms()
        await self.context.publisher.publish(
            self.context.topic("lepton.predict.results"), request["request_id"], result
        )

    async def _resolve(self, tenant: str, text: str) -> Loaded:
        """The model a request names, as the tenant may see it."""
        ref = parse_model_ref(text)
        pool = self.context.pool
        if ref.version == CHAMPION:
            champion = await store.current_champion(pool, tenant, ref.name)
            if champion is None:
                raise PredictionFailure(
                    "no_champion",
                    f"{tenant} has no champion for {ref.name!r} (no model of that name has "
                    "been promoted); name a version as <name>@<model id>",
                )
            return await self.models.load(champion.ready)
        stored = await store.model_for(pool, tenant, ref.name, ref.version)
        if stored is None:
            raise PredictionFailure(
                "unknown_model", f"{tenant} has no evaluated model {ref.version!r} of {ref.name!r}"
            )
        if stored.status != "evaluated":
            code = "artifact_invalid" if stored.error_type == "ArtifactInvalid" else "model_failed"
            raise PredictionFailure(
                code, f"model {ref.version} failed evaluation: {stored.error_message}"
            )
        return await self.models.load(stored.ready)


def _plot(evaluation: Evaluation, location: str) -> dict[str, str]:
    return plots.save(plots.draw(evaluation), location)


def _failure(error_type: str | None, message: str) -> EvaluationFailed:
    """The stored failure as the exception it was, so a redelivery dead-letters alike."""
    kinds: dict[str | None, type[EvaluationFailed]] = {
        cls.__name__: cls for cls in (ArtifactInvalid, DatasetUnavailable, DatasetMismatch)
    }
    return kinds.get(error_type, EvaluationFailed)(message)


def _evaluated_record(
    ready: dict[str, Any], evaluation: Evaluation, plot_uris: dict[str, str]
) -> dict[str, Any]:
    return {
        "model_id": ready["model_id"],
        "tenant": ready["tenant"],
        "model_name": ready["model_name"],
        "dataset": ready["dataset"],
        "problem_type": ready["problem_type"],
        "holdout_rows": evaluation.holdout_rows,
        "cv_folds": evaluation.cv_folds,
        "seed": evaluation.seed,
        "metrics": evaluation.metrics,
        "cv_metrics": evaluation.cv_metrics,
        "train_metrics": evaluation.train_metrics,
        "findings": [finding.record() for finding in evaluation.findings],
        "feature_importance": evaluation.feature_importance,
        "class_labels": evaluation.class_labels,
        "confusion_matrix": evaluation.confusion_matrix,
        "curves": [curve.record() for curve in evaluation.curves],
        "plots": plot_uris,
        "evaluated_at": _now_ms(),
    }


def _promoted_record(
    ready: dict[str, Any], policy: Policy, decision: Decision, previous: str | None
) -> dict[str, Any]:
    return {
        "tenant": ready["tenant"],
        "model_name": ready["model_name"],
        "model_id": ready["model_id"],
        "verdict": decision.verdict,
        "previous_champion_id": previous,
        "policy": policy.text(),
        "primary_metric": policy.primary,
        "challenger_score": decision.challenger_score,
        "champion_score": decision.champion_score,
        "guards": decision.guards,
        "evidence": decision.evidence,
        "reason": decision.reason,
        "decided_by": None,
        "decided_at": _now_ms(),
    }


def create_app(settings: EvaluatorSettings | None = None) -> Service:
    evaluator = Evaluator(settings or EvaluatorSettings())
    return Service(
        name="evaluator",
        consumes=["lepton.models.ready", "lepton.models.promoted"],
        settings=evaluator.settings,
        migrations=_MIGRATIONS,
        handler_factory=evaluator.handler,
        background=[evaluator.serve_predictions],
    )


def main() -> None:
    run(create_app)
