"""``lepton.predict.requested`` on a consumer of its own, so a long evaluation never holds
up a prediction: resolve the model, score the records, publish one
``lepton.predict.results`` answer per request, an error code when none can be made."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from lepton.bus import MessageTooLargeError, Subscriber
from lepton.contract.names import name_problem
from lepton.runtime.resilience import patient
from lepton.services.evaluator import instruments, store
from lepton.services.evaluator.failures import ArtifactInvalid
from lepton.services.evaluator.prediction import (
    CHAMPION,
    NAMES_LISTED,
    PredictionFailure,
    parse_model_ref,
    score_rows,
    unknown_name,
)
from lepton.services.evaluator.records import now_ms

if TYPE_CHECKING:
    from lepton.bus import Event
    from lepton.runtime.service import Context
    from lepton.services.evaluator.model_cache import Loaded, ModelCache
    from lepton.services.evaluator.settings import EvaluatorSettings

__all__ = ["PredictionRequests"]


class PredictionRequests:
    """Answers prediction requests for the service's lifetime."""

    def __init__(self, context: Context, settings: EvaluatorSettings, models: ModelCache) -> None:
        self.context = context
        self.settings = settings
        self.models = models

    async def serve(self) -> None:
        context, settings = self.context, self.settings
        subscriber = Subscriber(
            context.publisher.kafka,  # the evaluator's own access, as the service resolved it
            context.codec,
            context.publisher,
            topics=[context.topic("lepton.predict.requested")],
            group_id=context.topics.group("lepton-evaluator-predict"),
            handler=patient(self._predict),  # a database outage retries, never dead-letters
            client_id=settings.client_id,
            connect_timeout_s=settings.connect_timeout_s,
            authenticator=context.authenticator(),
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
            instruments.PREDICTION_ROWS.inc(len(scored.predictions))
            result |= {
                "predictions": scored.predictions,
                "probabilities": scored.probabilities,
                "warnings": scored.warnings,
            }
        except PredictionFailure as exc:
            result["error"] = {"code": exc.code, "message": exc.message}
        except ArtifactInvalid as exc:
            result["error"] = {"code": "artifact_invalid", "message": str(exc)}
        result["scored_at"] = now_ms()
        instruments.PREDICTION_LATENCY.observe(max(0, now_ms() - request["requested_at"]) / 1000)
        topic = self.context.topic("lepton.predict.results")
        try:
            await self.context.publisher.publish(topic, request["request_id"], result)
        except MessageTooLargeError as exc:
            # Too many rows' answers for one record: the requester hears why, and can ask
            # again in smaller batches, rather than waiting out its timeout.
            result |= {
                "predictions": [],
                "probabilities": [],
                "warnings": [],
                "error": {
                    "code": "answer_too_large",
                    "message": f"the answer, {exc.size:,} bytes, is over the {exc.limit:,}-byte "
                    f"limit of {exc.topic}; send fewer rows per request",
                },
            }
            await self.context.publisher.publish(topic, request["request_id"], result)

    async def _resolve(self, tenant: str, text: str) -> Loaded:
        """The model a request names, as the tenant may see it."""
        ref = parse_model_ref(text)
        problem = name_problem(tenant)
        if problem is not None:
            raise PredictionFailure("invalid_tenant", f"tenant: {problem}")
        pool = self.context.pool
        if ref.version == CHAMPION:
            champion = await store.current_champion(pool, tenant, ref.name)
            if champion is None:
                if not await store.has_model_named(pool, tenant, ref.name):
                    names = await store.model_names(pool, tenant, NAMES_LISTED)
                    raise PredictionFailure("unknown_model", unknown_name(tenant, ref.name, names))
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
