"""``lepton.models.ready``: load the artifact (confined to its tenant's directory of the
artifact root, bounded in size, checksum and trusted types checked; sealed if the model
reads sensitive columns) and the dataset version the model was trained on, evaluate it
on the rows its trainer held out and by cross-validation
(:mod:`lepton.services.evaluator.evaluation`), judge it against the current champion of its
tenant's model name (:mod:`lepton.services.evaluator.promotion`), draw its plots, store
evaluation and verdict in one transaction, then publish ``lepton.models.evaluated`` and
``lepton.models.promoted``.

A redelivered model-ready is not evaluated again; if the events of the first attempt were
stored but not published, they are published now. A model that cannot be evaluated is
stored as failed and its model-ready dead-lettered with the specific error
(:mod:`lepton.services.evaluator.failures`); nothing is promoted. An artifact refused (outside
its tenant's directory, not a regular file, too large, not sealed when it must be...) is
also a denial on ``lepton.audit``.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lepton.bus import TransientError, span
from lepton.data.access import DatasetError
from lepton.data.catalog import dataset_versions
from lepton.data.reading import read_dataset
from lepton.services.evaluator import instruments, plots, store
from lepton.services.evaluator.evaluation import Evaluation, Prepared, evaluate, prepare
from lepton.services.evaluator.failures import (
    ArtifactInvalid,
    DatasetMismatch,
    DatasetUnavailable,
    EvaluationFailed,
    stored_failure,
)
from lepton.services.evaluator.findings import Finding, preparation_findings
from lepton.services.evaluator.inputs import ColumnsMismatch
from lepton.services.evaluator.promotion import (
    Comparison,
    Decision,
    Policy,
    PolicyError,
    compare,
    decide,
)
from lepton.services.evaluator.records import evaluated_record, promoted_record

if TYPE_CHECKING:
    import pandas as pd

    from lepton.contract.events import AuditEvent
    from lepton.runtime.service import Context
    from lepton.services.evaluator.evaluation import EvaluationConfig
    from lepton.services.evaluator.model_cache import Loaded, ModelCache
    from lepton.services.evaluator.promotion import PolicyBook
    from lepton.services.evaluator.settings import EvaluatorSettings

__all__ = ["ModelReadyHandler"]


@dataclass(slots=True)
class _Assessment:
    evaluation: Evaluation
    decision: Decision | None
    policy: Policy | None


class ModelReadyHandler:
    """Evaluates, judges, stores and announces each model that is ready."""

    def __init__(
        self,
        context: Context,
        settings: EvaluatorSettings,
        policies: PolicyBook,
        config: EvaluationConfig,
        models: ModelCache,
    ) -> None:
        self.context = context
        self.settings = settings
        self.policies = policies
        self.config = config
        self.models = models

    async def handle(self, ready: dict[str, Any], author: str = "") -> None:
        """Evaluate ``ready``, written by ``author`` (its ``lepton-principal``)."""
        pool, log = self.context.pool, self.context.log.bind(model=ready["model_id"])
        stored = await store.find(pool, ready["model_id"])
        if stored is not None:
            if stored.status == "failed":
                raise stored_failure(stored.error_type, stored.error_message or "")
            if not stored.published:
                assert stored.evaluated is not None
                await self._publish(stored.evaluated, stored.promoted)
                log.info("published a stored evaluation")
            else:
                log.info("already evaluated")
            return
        traced = {"lepton.model_id": ready["model_id"], "lepton.job_id": ready["job_id"]}
        try:
            with span("evaluate", attributes=traced), instruments.EVALUATION_DURATION.time():
                evaluated, promoted = await self._evaluate(ready)
        except EvaluationFailed as exc:
            await store.record_failure(pool, ready, type(exc).__name__, str(exc))
            log.warning("evaluation failed", error_type=type(exc).__name__, reason=str(exc))
            if isinstance(exc, ArtifactInvalid):
                await self._audit_refusal(ready, author, str(exc))
            raise
        verdict = promoted["verdict"] if promoted else "none"
        with span("promote", attributes={**traced, "lepton.verdict": verdict}):
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

    async def _audit_refusal(self, ready: dict[str, Any], author: str, reason: str) -> None:
        """An artifact the evaluator refused to read is a denial: on ``lepton.audit``."""
        tenant = str(ready["tenant"])
        event: AuditEvent = {
            "actor": author[:200] or "unsigned",
            "tenant": tenant,
            "action": "read",
            "resource": f"model:{tenant}/{ready['model_id']}"[:400],
            "outcome": "denied",
            "detail": reason[:1000],
            "time": time.time_ns() // 1_000_000,
        }
        await self.context.publisher.publish(self.context.topic("lepton.audit"), tenant, event)

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
        try:
            location = plots.plots_location(
                self.settings.evaluator_plots_root,
                ready["artifact_uri"],
                ready["tenant"],
                ready["model_id"],
            )
        except ValueError as exc:
            raise ArtifactInvalid(f"model {ready['model_id']}: {exc}") from None
        # First, side by side, which of the dataset's columns are sensitive and the
        # champion to judge against: a model that reads a sensitive column is loaded only
        # from a sealed artifact, and the rows are decrypted only for a model reading them.
        sensitive, (policy, policy_problem, champion) = await asyncio.gather(
            self._sensitive(ready), self._champion(ready)
        )
        reads_sensitive = bool(_reads(ready, sensitive))
        decrypt = reads_sensitive or (
            champion is not None and bool(_reads(champion.ready, sensitive))
        )
        # The artifact (file store, a thread), the dataset (PostgreSQL) and the champion's
        # artifact load side by side.
        challenger, frame, (rival, rival_note) = await asyncio.gather(
            self.models.load(ready, sealed=reads_sensitive),
            self._dataset(ready, decrypt),
            self._rival(champion),
        )
        evaluation, prepared = await asyncio.to_thread(
            self._evaluate_model, ready, challenger, frame
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
        evaluated = evaluated_record(ready, evaluation, uris)
        promoted = None
        if assessment.decision is not None and assessment.policy is not None:
            promoted = promoted_record(
                ready,
                assessment.policy,
                assessment.decision,
                champion.model_id if champion else None,
            )
        return evaluated, promoted

    async def _champion(
        self, ready: dict[str, Any]
    ) -> tuple[Policy | None, str | None, store.Champion | None]:
        """The policy for the model (or why there is none) and the current champion of
        its name."""
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
        return policy, policy_problem, champion

    async def _rival(self, champion: store.Champion | None) -> tuple[Loaded | None, str]:
        """The champion loaded, or why it could not be."""
        if champion is None:
            return None, ""
        try:
            return await self.models.load(champion.ready), ""
        except ArtifactInvalid as exc:
            return None, f"the champion's artifact could not be loaded: {exc}"

    async def _sensitive(self, ready: dict[str, Any]) -> frozenset[str]:
        """The columns the model's dataset version declares sensitive."""
        dataset = ready["dataset"]
        try:
            described = await dataset_versions(
                self.context.pool,
                reader_tenant=ready["tenant"],
                name=dataset["name"],
                owner=dataset["owner"],
                version=dataset["version"],
            )
        except DatasetError as exc:
            raise DatasetUnavailable(f"model {ready['model_id']}: {exc}") from exc
        return frozenset(c["name"] for c in described[0].columns if c.get("sensitive"))

    async def _dataset(self, ready: dict[str, Any], decrypt: bool) -> pd.DataFrame:
        """The model's dataset version; its sensitive columns only when ``decrypt``."""
        dataset = ready["dataset"]
        try:
            return await read_dataset(
                self.context.pool,
                reader_tenant=ready["tenant"],
                name=dataset["name"],
                owner_tenant=dataset["owner"],
                version=dataset["version"],
                actor="evaluator",
                omit_sensitive=not decrypt,
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
        # What training left out or transformed on its own comes first: it explains the
        # features and scores after it.
        evaluation.findings[:0] = preparation_findings(ready["preparation"])
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


def _reads(ready: dict[str, Any], sensitive: frozenset[str]) -> frozenset[str]:
    """The sensitive columns a model reads: features or target."""
    return sensitive.intersection([*ready["feature_columns"], ready["target_column"]])


def _plot(evaluation: Evaluation, location: str) -> dict[str, str]:
    return plots.save(plots.draw(evaluation), location)
