"""Artifacts are confined to their tenant's directory of the artifact root, bounded in size
and read only when they are regular files; each refusal has a stable reason that never
quotes the content or the hash of what was refused.

The first part is pure logic on temporary files (an audit hook records every file Python
opens, so "refused before anything is opened" is checked, not assumed); the integration
part forges ``lepton.models.ready`` events at a running evaluator.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import fsspec
import lightgbm
import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from lightgbm import LGBMRegressor
from sklearn.neighbors import KNeighborsClassifier
from sklearn.preprocessing import FunctionTransformer

from lepton.config import KafkaAccess
from lepton.contract.codec import Codec
from lepton.contract.topics import dead_letter_topic
from lepton.data.artifacts import (
    CHECKSUM_MISMATCH,
    FORMAT,
    MISSING,
    NOT_REGULAR,
    NOT_SEALED,
    OUTSIDE_ROOT,
    OUTSIDE_TENANT,
    SEALED_FORMAT,
    UNKNOWN_FORMAT,
    UNREADABLE,
    WRONG_FORMAT,
    ArtifactError,
    ArtifactStore,
    StoredArtifact,
    artifact_uri,
    dump,
    too_large,
)
from lepton.data.reading import read_dataset
from lepton.data.samples import house_prices
from lepton.data.sealing import NO_KEY, UNSEALABLE
from lepton.runtime.service import Service
from lepton.services.evaluator import store
from lepton.services.evaluator.app import create_app as create_evaluator
from lepton.services.evaluator.inputs import declared_columns_read
from lepton.services.evaluator.model_cache import COLUMNS_UNDECLARED
from lepton.services.evaluator.settings import EvaluatorSettings
from lepton.services.trainer.app import create_app as create_trainer
from lepton.services.trainer.errors import InvalidTask, SensitiveTarget
from lepton.services.trainer.node import NodeSpec
from lepton.services.trainer.pipelines import build_pipeline
from lepton.services.trainer.settings import TrainerSettings
from lepton.services.trainer.training import SearchConfig, train
from tests.integration.ingest_support import request, running_ingest, unique_tenant
from tests.integration.model_support import stored_model
from tests.integration.scheduler_support import Namespaced, assignment, signed_space
from tests.security.conftest import RedTeam

# Paths Python opened while a test's `opened` list was active (sys.audit "open" events,
# raised by os.open and open() alike).
_recording: list[list[str]] = []


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event == "open" and _recording and isinstance(args[0], (str, bytes, os.PathLike)):
        _recording[-1].append(os.fsdecode(args[0]))


sys.addaudithook(_audit)


@pytest.fixture
def opened() -> Iterator[list[str]]:
    paths: list[str] = []
    _recording.append(paths)
    try:
        yield paths
    finally:
        _recording.remove(paths)


def a_model() -> KNeighborsClassifier:
    return KNeighborsClassifier(n_neighbors=1).fit([[0.0], [1.0]], [0, 1])


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "root").mkdir()
    return tmp_path / "root"


@pytest.fixture
def stored(root: Path) -> StoredArtifact:
    return dump(a_model(), artifact_uri(str(root), "acme", "m1"))


def refusal(store: ArtifactStore, uri: str, sha256: str = "0" * 64, tenant: str = "acme") -> str:
    with pytest.raises(ArtifactError) as refused:
        store.load(uri, tenant=tenant, sha256=sha256)
    return str(refused.value)


def test_an_artifact_in_its_tenants_directory_loads(root: Path, stored: StoredArtifact) -> None:
    store = ArtifactStore(str(root))
    model = store.load(stored.uri, tenant="acme", sha256=stored.sha256)
    assert list(model.predict([[0.9]])) == [1]
    # The same file as a file:// URL, and through a path with a harmless "..".
    store.load(f"file://{stored.uri}", tenant="acme", sha256=stored.sha256)
    store.load(f"{root}/acme/../acme/m1.skops", tenant="acme", sha256=stored.sha256)


def test_a_file_outside_the_root_is_refused_before_it_is_opened(
    root: Path, tmp_path: Path, opened: list[str]
) -> None:
    # An attacker's own skops file with its own (correct) checksum.
    evil = tmp_path / "evil" / "acme" / "m1.skops"
    stored = dump(a_model(), str(evil))
    store = ArtifactStore(str(root))
    escaping = [
        stored.uri,
        f"file://{stored.uri}",
        f"{root}/acme/../../evil/acme/m1.skops",
        f"file://elsewhere{stored.uri}",
        "s3://bucket/acme/m1.skops",
    ]
    for uri in escaping:
        assert refusal(store, uri, stored.sha256) == OUTSIDE_ROOT, uri
    assert str(evil) not in opened


def test_a_symbolic_link_out_of_the_root_or_into_another_tenant_is_refused(
    root: Path, tmp_path: Path, stored: StoredArtifact, opened: list[str]
) -> None:
    outside = dump(a_model(), str(tmp_path / "outside.skops"))
    (root / "acme" / "link.skops").symlink_to(outside.uri)
    (root / "acme" / "dir-link").symlink_to(tmp_path)
    store = ArtifactStore(str(root))
    assert refusal(store, f"{root}/acme/link.skops", outside.sha256) == OUTSIDE_ROOT
    assert refusal(store, f"{root}/acme/dir-link/outside.skops", outside.sha256) == OUTSIDE_ROOT
    # Another tenant's model, directly or through a link in one's own directory.
    (root / "mallory").mkdir()
    (root / "mallory" / "stolen.skops").symlink_to(stored.uri)
    assert refusal(store, stored.uri, stored.sha256, tenant="mallory") == OUTSIDE_TENANT
    assert (
        refusal(store, f"{root}/mallory/stolen.skops", stored.sha256, tenant="mallory")
        == OUTSIDE_TENANT
    )
    assert outside.uri not in opened
    assert stored.uri not in opened


def test_dev_zero_is_refused_unopened_even_inside_the_root(opened: list[str]) -> None:
    assert refusal(ArtifactStore("/var/lib/lepton"), "/dev/zero") == OUTSIDE_ROOT
    # A root that contains it (as the tenant "dev"): a device is not a regular file.
    assert refusal(ArtifactStore("/"), "/dev/zero", tenant="dev") == NOT_REGULAR
    assert "/dev/zero" not in opened


def test_a_fifo_or_a_directory_is_not_a_regular_file(root: Path, opened: list[str]) -> None:
    (root / "acme").mkdir()
    fifo = root / "acme" / "pipe.skops"
    os.mkfifo(fifo)
    (root / "acme" / "dir.skops").mkdir()
    store = ArtifactStore(str(root))
    # Opening a FIFO for reading would block until a writer came: it must not happen.
    assert refusal(store, str(fifo)) == NOT_REGULAR
    assert refusal(store, f"{root}/acme/dir.skops") == NOT_REGULAR
    assert str(fifo) not in opened


def test_a_file_over_the_limit_is_refused_unread(
    root: Path, stored: StoredArtifact, opened: list[str]
) -> None:
    store = ArtifactStore(str(root), max_bytes=stored.size - 1)
    reason = refusal(store, stored.uri, stored.sha256)
    assert reason == too_large(stored.size - 1) == f"artifact larger than {stored.size - 1} bytes"
    assert stored.uri not in opened
    # At the limit exactly, it loads.
    ArtifactStore(str(root), max_bytes=stored.size).load(
        stored.uri, tenant="acme", sha256=stored.sha256
    )


def test_a_read_stops_at_the_limit_when_the_size_lies() -> None:
    # /proc files are regular and report size 0 yet have content: only the bounded read
    # itself can stop at the limit (as it would for a file that grows while read).
    status = os.stat("/proc/self/maps")
    assert status.st_size == 0
    assert refusal(ArtifactStore("/", max_bytes=100), "/proc/self/maps", tenant="proc") == (
        too_large(100)
    )


def test_missing_garbage_and_altered_files_say_so_without_a_hash(root: Path, stored: Any) -> None:
    store = ArtifactStore(str(root))
    assert refusal(store, f"{root}/acme/nothing.skops") == MISSING
    garbage = b"not a zip file"
    (root / "acme" / "garbage.skops").write_bytes(garbage)
    assert (
        refusal(store, f"{root}/acme/garbage.skops", hashlib.sha256(garbage).hexdigest())
        == UNREADABLE
    )
    reason = refusal(store, stored.uri, "ab" * 32)
    assert reason == CHECKSUM_MISMATCH
    assert stored.sha256 not in reason
    with pytest.raises(ArtifactError) as refused:
        store.load(stored.uri, tenant="acme", sha256=stored.sha256, format="pickle")
    assert str(refused.value) == UNKNOWN_FORMAT


def a_lightgbm_pipeline(problem: str) -> tuple[Any, pd.DataFrame]:
    """A fitted pipeline of the lightgbm family as the trainer builds it, and its rows."""
    rng = np.random.default_rng(0)
    rows = pd.DataFrame(
        {"area": rng.uniform(40, 250, 150), "district": rng.choice(["A", "B", "C"], 150)}
    ).astype({"district": object})
    price = rows["area"] * 30_000 + rows["district"].map({"A": 9e5, "B": 4e5, "C": 0.0})
    regression = problem == "regression"
    pipeline = build_pipeline(
        "lightgbm",
        problem,
        {} if regression else {"class_weight": "balanced", "subsample": 0.8},
        numeric=["area"],
        categorical=["district"],
        log_scale=regression,
    )
    target = price if regression else np.digitize(price, np.quantile(price, [0.5, 0.9]))
    return pipeline.fit(rows, target), rows


@pytest.mark.parametrize("problem", ["regression", "multiclass"])
def test_a_fitted_lightgbm_pipeline_round_trips(root: Path, problem: str) -> None:
    model, rows = a_lightgbm_pipeline(problem)
    stored = dump(model, artifact_uri(str(root), "acme", f"lightgbm-{problem}"))
    loaded = ArtifactStore(str(root)).load(stored.uri, tenant="acme", sha256=stored.sha256)
    np.testing.assert_array_equal(loaded.predict(rows), model.predict(rows))
    if problem != "regression":
        np.testing.assert_array_equal(loaded.predict_proba(rows), model.predict_proba(rows))


def _squared_error(y_true: Any, y_pred: Any) -> tuple[Any, Any]:
    return y_pred - y_true, np.ones_like(y_pred)


@pytest.mark.parametrize(
    ("model", "untrusted"),
    [
        # A custom objective is a function LightGBM calls at every boosting round.
        (
            LGBMRegressor(objective=_squared_error, n_estimators=2, verbose=-1).fit(
                np.arange(50.0).reshape(-1, 1), np.arange(50.0)
            ),
            f"{__name__}._squared_error",
        ),
        # Trusting LightGBM's estimators trusts none of its functions.
        (FunctionTransformer(func=lightgbm.train), "lightgbm.engine.train"),
    ],
)
def test_nothing_of_lightgbm_beyond_its_fitted_models_is_trusted(
    root: Path, model: Any, untrusted: str
) -> None:
    stored = dump(model, artifact_uri(str(root), "acme", "code"))
    reason = refusal(ArtifactStore(str(root)), stored.uri, stored.sha256)
    assert reason.startswith("artifact needs types that are not trusted: ")
    assert untrusted in reason


@pytest.mark.parametrize("tenant", ["", ".", "..", "../acme", "a/b", "a\\b", "a\x00b"])
def test_a_tenant_or_model_id_that_is_not_one_path_component_is_refused(
    root: Path, tenant: str
) -> None:
    with pytest.raises(ArtifactError, match="tenant cannot name a directory"):
        artifact_uri(str(root), tenant, "m1")
    with pytest.raises(ArtifactError, match="model id cannot name a directory"):
        artifact_uri(str(root), "acme", tenant)
    with pytest.raises(ArtifactError, match="tenant cannot name a directory"):
        ArtifactStore(str(root)).load(f"{root}/acme/m1.skops", tenant=tenant, sha256="0" * 64)


def test_an_fsspec_store_is_confined_by_protocol_bucket_and_tenant_prefix() -> None:
    model = dump(a_model(), "memory://lepton-artifacts/root/acme/m1.skops")
    dump(a_model(), "memory://lepton-artifacts/elsewhere/acme/m1.skops")
    dump(a_model(), "memory://lepton-artifacts/root/acme/sub/m2.skops")
    store = ArtifactStore("memory://lepton-artifacts/root")
    store.load(model.uri, tenant="acme", sha256=model.sha256)
    for uri in [
        "memory://lepton-artifacts/elsewhere/acme/m1.skops",
        "memory://lepton-artifacts/root/acme/../../elsewhere/acme/m1.skops",
        "memory://other-bucket/root/acme/m1.skops",
        "file:///lepton-artifacts/root/acme/m1.skops",
        "simplecache::memory://lepton-artifacts/root/acme/m1.skops",
        "/lepton-artifacts/root/acme/m1.skops",
    ]:
        assert refusal(store, uri, model.sha256) == OUTSIDE_ROOT, uri
    assert refusal(store, model.uri, model.sha256, tenant="mallory") == OUTSIDE_TENANT
    assert refusal(store, "memory://lepton-artifacts/root/acme/none.skops") == MISSING
    assert refusal(store, "memory://lepton-artifacts/root/acme/sub") == NOT_REGULAR
    limited = ArtifactStore("memory://lepton-artifacts/root", max_bytes=10)
    assert refusal(limited, model.uri, model.sha256) == too_large(10)
    fsspec.filesystem("memory").rm("/lepton-artifacts", recursive=True)


def test_the_limit_and_the_root_are_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("LEPTON_ARTIFACT_MAX_BYTES", "1234")
    monkeypatch.setenv("LEPTON_STATE_DIR", str(tmp_path))
    monkeypatch.delenv("LEPTON_ARTIFACT_ROOT", raising=False)
    store = EvaluatorSettings().artifact_store()
    assert store == ArtifactStore(str(tmp_path / "artifacts"), 1234)
    monkeypatch.delenv("LEPTON_ARTIFACT_MAX_BYTES")
    assert EvaluatorSettings().artifact_max_bytes == 512 * 2**20


def mode(path: Path | str) -> int:
    return os.stat(path).st_mode & 0o777


def test_an_artifact_is_written_0600_in_0700_directories(tmp_path: Path) -> None:
    root = tmp_path / "new-root"
    stored = dump(a_model(), artifact_uri(str(root), "acme", "m1"))
    assert (mode(stored.uri), mode(root / "acme"), mode(root)) == (0o600, 0o700, 0o700)
    # A tenant's directory left from before with wider permissions is tightened.
    (root / "older").mkdir(mode=0o755)
    os.chmod(root / "older", 0o755)
    dump(a_model(), artifact_uri(str(root), "older", "m1"))
    assert mode(root / "older") == 0o700
    assert not list(root.rglob("*.partial"))


def test_a_planted_link_is_not_written_through(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep")
    stored = dump(a_model(), artifact_uri(str(tmp_path / "root"), "acme", "m1"))
    Path(stored.uri).unlink()
    Path(stored.uri).symlink_to(victim)
    dump(a_model(), stored.uri)  # replaces the link, never writes into its target
    assert victim.read_bytes() == b"keep"
    assert not Path(stored.uri).is_symlink()
    assert mode(stored.uri) == 0o600


def test_evaluation_plots_are_written_like_artifacts(tmp_path: Path) -> None:
    from lepton.services.evaluator import plots

    location = plots.plots_location(None, f"{tmp_path}/acme/m1.skops", "acme", "m1")
    uris = plots.save({"roc": b"\x89PNG"}, location)
    assert uris == {"roc": f"{tmp_path}/acme/m1.plots/roc.png"}
    assert (mode(uris["roc"]), mode(f"{tmp_path}/acme/m1.plots")) == (0o600, 0o700)
    with pytest.raises(ValueError, match="single path component"):
        plots.plots_location(None, f"{tmp_path}/acme/m1.skops", "acme", "../../m1")
    with pytest.raises(ValueError, match="single path component"):
        plots.plots_location(str(tmp_path), "", "../acme", "m1")


# Sensitive columns: left out of a model unless its job allows them, then sealed.

MASTER = b"m" * 32
MARKER = "NATID-000001"


def people(rows: int = 60) -> pd.DataFrame:
    """A table with a sensitive column of recognisable values (national ids, each shared by
    three rows: a column different on every row would be left out as an identifier)."""
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "x": rng.normal(size=rows),
            "natid": pd.Series([f"NATID-{i % 20:06d}" for i in range(rows)], dtype="string"),
            "y": rng.normal(size=rows),
        }
    )


def knn(allow: bool) -> SearchConfig:
    # k-nearest neighbours keeps its training rows: the worst case for a leak.
    options = {"allow_sensitive_columns": "true" if allow else "false"}
    return SearchConfig.from_task(
        {
            "target_column": "y",
            "algorithm": "knn",
            "trial_budget": 1,
            "cv_folds": 2,
            "options": options,
        }
    )


def test_a_sensitive_column_is_not_a_feature_unless_the_job_allows_it(root: Path) -> None:
    result = train(people(), knn(allow=False), sensitive={"natid"})
    assert result.feature_columns == ["x"]
    assert result.sensitive_columns == []
    stored = dump(result.pipeline, artifact_uri(str(root), "acme", "m1"))
    assert stored.format == FORMAT
    assert MARKER.encode() not in Path(stored.uri).read_bytes()
    allowed = train(people(), knn(allow=True), sensitive={"natid"})
    assert allowed.feature_columns == ["x", "natid"]
    assert allowed.sensitive_columns == ["natid"]
    # The proof that a plain artifact would hold them: the values are in its bytes.
    assert MARKER.encode() in sio.dumps(allowed.pipeline)


def test_a_sensitive_target_needs_the_same_consent_and_the_option_is_checked() -> None:
    frame = people()
    with pytest.raises(SensitiveTarget, match="allow_sensitive_columns"):
        train(frame, knn(allow=False), sensitive={"y"})
    assert train(frame, knn(allow=True), sensitive={"y"}).sensitive_columns == ["y"]
    with pytest.raises(InvalidTask, match="no column besides the target that is not sensitive"):
        train(frame[["natid", "y"]], knn(allow=False), sensitive={"natid"})
    with pytest.raises(InvalidTask, match="must be true or false"):
        SearchConfig.from_task(
            {"target_column": "y", "options": {"allow_sensitive_columns": "yes"}}
        )


def test_a_model_reading_sensitive_columns_is_sealed_for_its_tenant(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    allowed = train(people(), knn(allow=True), sensitive={"natid"})
    uri = artifact_uri(str(root), "acme", "m1")
    stored = dump(allowed.pipeline, uri, sealed_for="acme", master_key=MASTER)
    assert stored.format == SEALED_FORMAT
    data = Path(uri).read_bytes()
    assert MARKER.encode() not in data
    assert mode(uri) == 0o600
    store = ArtifactStore(str(root), master_key=MASTER)
    model = store.load(uri, tenant="acme", sha256=stored.sha256, format=SEALED_FORMAT, sealed=True)
    assert list(model.feature_names_in_) == ["x", "natid"]
    # Announced in another tenant's name (a copy in its directory): its key opens nothing.
    (root / "mallory").mkdir()
    (root / "mallory" / "m1.skops").write_bytes(data)
    with pytest.raises(ArtifactError) as refused:
        store.load(
            f"{root}/mallory/m1.skops", tenant="mallory", sha256=stored.sha256, format=SEALED_FORMAT
        )
    assert str(refused.value) == UNSEALABLE
    monkeypatch.delenv("LEPTON_MASTER_KEY", raising=False)
    with pytest.raises(ArtifactError) as refused:
        ArtifactStore(str(root)).load(
            uri, tenant="acme", sha256=stored.sha256, format=SEALED_FORMAT
        )
    assert str(refused.value) == NO_KEY


def test_a_plain_artifact_is_refused_unread_for_a_model_of_sensitive_columns(
    root: Path, opened: list[str]
) -> None:
    allowed = train(people(), knn(allow=True), sensitive={"natid"})
    plain = dump(allowed.pipeline, artifact_uri(str(root), "acme", "plain"))
    store = ArtifactStore(str(root), master_key=MASTER)
    with pytest.raises(ArtifactError) as refused:
        store.load(plain.uri, tenant="acme", sha256=plain.sha256, format=FORMAT, sealed=True)
    assert str(refused.value) == NOT_SEALED
    assert plain.uri not in opened
    # Nor may a file's declared format lie about it, either way.
    with pytest.raises(ArtifactError) as refused:
        store.load(plain.uri, tenant="acme", sha256=plain.sha256, format=SEALED_FORMAT, sealed=True)
    assert str(refused.value) == WRONG_FORMAT
    sealed = dump(
        allowed.pipeline, artifact_uri(str(root), "acme", "s"), sealed_for="acme", master_key=MASTER
    )
    with pytest.raises(ArtifactError) as refused:
        store.load(sealed.uri, tenant="acme", sha256=sealed.sha256, format=FORMAT)
    assert str(refused.value) == WRONG_FORMAT


def test_a_model_announced_with_fewer_columns_than_it_reads_is_caught() -> None:
    allowed = train(people(), knn(allow=True), sensitive={"natid"})
    assert declared_columns_read(allowed.pipeline, ["x", "natid"])
    # A ModelReady hiding its sensitive feature, to have a plain artifact accepted.
    assert not declared_columns_read(allowed.pipeline, ["x"])


# Against the real broker and database: forged lepton.models.ready events at a running
# evaluator, and a trainer agent training on a dataset with a sensitive column.

PEOPLE_SPEC = json.dumps(
    {
        "columns": {
            "x": {"type": "float"},
            "natid": {"type": "string", "sensitive": True},
            "y": {"type": "float"},
        }
    }
)


@pytest.fixture(scope="module")
async def data(
    kafka: KafkaAccess,
    database_url: str,
    database_for: Callable[[str], str],
    codec: Codec,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Any]:
    """A tenant's house prices and a table of people with a sensitive column, through the
    ingest service; the artifact root both the trainer and the evaluator use."""
    root = tmp_path_factory.mktemp("artifacts-data")
    tenant = unique_tenant()
    house_prices(200).to_csv(root / "houses.csv", index=False)
    people(80).to_csv(root / "people.csv", index=False)
    versions: dict[str, dict[str, str]] = {}
    async with running_ingest(kafka, database_for("ingest"), codec, root) as ingest:
        for name, spec in [("houses", None), ("people", PEOPLE_SPEC)]:
            sources = [{"name": "s", "kind": "csv", "uri": f"{name}.csv"}]
            outcome, ready = await ingest.submit(request(tenant, name, sources, spec=spec))
            assert outcome == "ready", ready
            versions[name] = {"name": name, "version": ready["version"], "owner": tenant}
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        frames = {
            name: await read_dataset(pool, reader_tenant=tenant, name=name)
            for name in ("houses", "people")
        }
    finally:
        await pool.close()
    return {"tenant": tenant, "root": root, "artifacts": root / "artifacts", **versions} | {
        f"{name}_frame": frame for name, frame in frames.items()
    }


@pytest.fixture(scope="module")
async def space(kafka: KafkaAccess, codec: Codec) -> AsyncIterator[Namespaced]:
    # Signed as each record's natural author: the forged models below pass the signature
    # and lease checks (a node's own key, or a trainer gone bad), and meet the artifact's.
    async with signed_space(kafka, codec) as namespaced:
        yield namespaced


@pytest.fixture(scope="module")
async def evaluator(
    space: Namespaced, kafka: KafkaAccess, database_for: Callable[[str], str], data: dict[str, Any]
) -> AsyncIterator[Service]:
    settings = EvaluatorSettings(
        **kafka.settings(),
        database_url=database_for("evaluator"),
        topic_prefix=space.prefix,
        artifact_root=str(data["artifacts"]),
        evaluator_bootstrap_resamples=0,
    )
    async with running(create_evaluator(settings)) as service:
        yield service


@asynccontextmanager
async def running(service: Service) -> AsyncIterator[Service]:
    task = asyncio.create_task(service.run())
    ready = asyncio.create_task(service.ready.wait())
    done, _ = await asyncio.wait({task, ready}, timeout=60, return_when="FIRST_COMPLETED")
    if task in done:
        task.result()
    assert ready in done, "the service did not start"
    try:
        yield service
    finally:
        service.stop_soon()
        await asyncio.wait_for(task, 60)


def house_model(data: dict[str, Any], name: str) -> dict[str, Any]:
    """A valid ModelReady: a ridge model of the house prices, stored as the trainer does."""
    config = SearchConfig(target_column="价格", algorithm="ridge", trial_budget=1, cv_folds=3)
    _, ready = stored_model(
        data["houses_frame"],
        config,
        artifact_root=data["artifacts"],
        tenant=data["tenant"],
        model_id=f"model-{uuid.uuid4().hex[:10]}",
        model_name=name,
        dataset=data["houses"],
    )
    return ready


def forged(ready: dict[str, Any], uri: str, sha256: str) -> dict[str, Any]:
    """``ready`` pointing elsewhere, announced by the tests' trainer (``Namespaced.send``
    gives it that node's lease)."""
    return ready | {
        "model_id": f"forged-{uuid.uuid4().hex[:10]}",
        "artifact_uri": uri,
        "artifact_sha256": sha256,
        "lease": None,
    }


async def dead_letters_for(
    space: Namespaced, keys: set[str], timeout_s: float = 120
) -> dict[str, dict[str, str]]:
    """The dead letters of ``lepton.models.ready`` for ``keys``, by key (read from the
    topic's start, so the consumer may be opened after they were sent)."""
    consumer = AIOKafkaConsumer(
        dead_letter_topic(space.names.topic("lepton.models.ready").name),
        **space.kafka.aiokafka(),
        auto_offset_reset="earliest",
    )
    await consumer.start()
    found: dict[str, dict[str, str]] = {}
    try:
        async with asyncio.timeout(timeout_s):
            while not keys <= found.keys():
                message = await consumer.getone()
                key = (message.key or b"").decode()
                if key in keys:
                    # (the signature header is binary)
                    found[key] = {n: v.decode("utf-8", "replace") for n, v in message.headers}
    finally:
        await consumer.stop()
    return found


@pytest.mark.integration
async def test_forged_models_ready_are_refused_with_their_reasons_and_the_evaluator_goes_on(
    space: Namespaced,
    evaluator: Service,
    data: dict[str, Any],
    database_url: str,
    tmp_path: Path,
    red_team: RedTeam,
) -> None:
    valid = house_model(data, "confined")
    # An attacker's own skops file, with its own checksum, outside the artifact root.
    evil = dump(a_model(), str(tmp_path / data["tenant"] / "evil.skops"))
    # A link planted in the tenant's own directory, to a file it should never open.
    link = data["artifacts"] / data["tenant"] / "passwd.skops"
    link.symlink_to("/etc/passwd")
    passwd = await asyncio.to_thread(Path("/etc/passwd").read_bytes)
    passwd_sha = hashlib.sha256(passwd).hexdigest()
    attacks = {
        "an attacker's skops file outside the root": (
            forged(valid, evil.uri, evil.sha256),
            OUTSIDE_ROOT,
        ),
        "/dev/zero": (forged(valid, "/dev/zero", "0" * 64), OUTSIDE_ROOT),
        "/etc/passwd, with its checksum": (
            forged(valid, "/etc/passwd", passwd_sha),
            OUTSIDE_ROOT,
        ),
        "a link in the tenant's directory to /etc/passwd": (
            forged(valid, str(link), passwd_sha),
            OUTSIDE_ROOT,
        ),
        "a path climbing out with ..": (
            forged(valid, f"{data['artifacts']}/{data['tenant']}/../../x", "0" * 64),
            OUTSIDE_ROOT,
        ),
    }
    for ready, _ in attacks.values():
        await space.send("lepton.models.ready", ready["model_id"], ready)
    # The evaluator is still serving: a valid model sent after them is evaluated.
    async with space.reader("lepton.models.evaluated") as evaluated:
        await space.send("lepton.models.ready", valid["model_id"], valid)
        record = await evaluated.until(lambda r: r["model_id"] == valid["model_id"], 120)
    assert "r2" in record["metrics"]
    letters = await dead_letters_for(space, {ready["model_id"] for ready, _ in attacks.values()})
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        for what, (ready, reason) in attacks.items():
            headers = letters[ready["model_id"]]
            expected = f"model {ready['model_id']}: {reason}"
            red_team.check(
                f"lepton.models.ready whose artifact_uri is {what}",
                f"ArtifactInvalid: {expected}",
                f"{headers['dlq_error_type']}: {headers['dlq_error_message']}",
            )
            stored = await store.find(pool, ready["model_id"])
            assert stored is not None
            assert (stored.status, stored.error_message) == ("failed", expected), what
            assert passwd_sha not in (stored.error_message or "")
    finally:
        await pool.close()
    # Each refusal is a denial on lepton.audit, naming the model and the reason.
    async with space.reader("lepton.audit") as audit:
        for what, (ready, reason) in attacks.items():
            resource = f"model:{data['tenant']}/{ready['model_id']}"
            denial = await audit.until(lambda r, resource=resource: r["resource"] == resource, 60)
            assert (denial["outcome"], denial["action"], denial["tenant"]) == (
                "denied",
                "read",
                data["tenant"],
            ), what
            assert denial["detail"] == f"model {ready['model_id']}: {reason}"
            assert denial["actor"] == "node:trainer"
    # Each forged message was committed: a restarted evaluator would not read it again.
    refused = {
        TopicPartition(headers["dlq_source_topic"], int(headers["dlq_source_partition"])): int(
            headers["dlq_source_offset"]
        )
        for headers in letters.values()
    }
    await until_committed(space.kafka, space.names.group("lepton-evaluator"), refused)


async def until_committed(
    kafka: KafkaAccess, group: str, offsets: dict[TopicPartition, int], timeout_s: float = 60
) -> None:
    """Wait until ``group`` has committed past each offset (a commit announces nothing)."""
    admin = AIOKafkaAdminClient(**kafka.aiokafka())
    await admin.start()
    try:

        async def past() -> bool:
            committed = await admin.list_consumer_group_offsets(group)
            return all(
                where in committed and committed[where].offset > offset
                for where, offset in offsets.items()
            )

        async with asyncio.timeout(timeout_s):
            while not await past():  # noqa: ASYNC110
                await asyncio.sleep(0.1)
    finally:
        await admin.close()


@asynccontextmanager
async def running_trainer(
    space: Namespaced, kafka: KafkaAccess, database_url: str, artifacts: Path
) -> AsyncIterator[str]:
    node = f"n-{uuid.uuid4().hex[:8]}"
    settings = TrainerSettings(
        **kafka.settings(),
        database_url=database_url,
        topic_prefix=space.prefix,
        artifact_root=str(artifacts),
    )
    async with (
        space.reader("lepton.node.heartbeats") as beats,
        running(create_trainer(NodeSpec(node, cpus=2, memory_mib=4096), settings, 0.2)),
    ):
        # Its first heartbeat: it is subscribed to its assignments from here on.
        await beats.until(lambda r: r["node_id"] == node, 60)
        yield node


async def trained(
    space: Namespaced, node: str, data: dict[str, Any], **task: Any
) -> dict[str, Any]:
    """The ModelReady of a k-nearest-neighbours job on the people table (target y)."""
    job = f"j-{uuid.uuid4().hex[:8]}"
    async with (
        space.reader("lepton.models.ready") as models,
        space.reader("lepton.jobs.events") as events,
    ):
        await space.send(
            "lepton.jobs.assigned",
            node,
            assignment(
                job,
                node,
                data["tenant"],
                data["people"],
                target_column="y",
                algorithm="knn",
                **task,
            ),
        )
        outcome = await events.until(
            lambda r: r["job_id"] == job and r["kind"] in ("succeeded", "failed"), 180
        )
        assert outcome["kind"] == "succeeded", outcome
        return await models.until(lambda r: r["job_id"] == job, 30)


@pytest.mark.integration
async def test_a_sensitive_column_is_left_out_unless_allowed_then_sealed_and_evaluated(
    space: Namespaced,
    evaluator: Service,
    data: dict[str, Any],
    kafka: KafkaAccess,
    database_for: Callable[[str], str],
    red_team: RedTeam,
) -> None:
    trainer_login = database_for("trainer")
    async with running_trainer(space, kafka, trainer_login, data["artifacts"]) as node:
        plain = await trained(space, node, data)
        sealed = await trained(space, node, data, options={"allow_sensitive_columns": "true"})
    assert plain["feature_columns"] == ["x"]
    assert plain["artifact_format"] == FORMAT
    assert sealed["feature_columns"] == ["x", "natid"]
    assert sealed["artifact_format"] == SEALED_FORMAT
    for ready in (plain, sealed):
        path = Path(ready["artifact_uri"])
        assert (mode(path), mode(path.parent)) == (0o600, 0o700)
        assert MARKER.encode() not in await asyncio.to_thread(path.read_bytes)

    # The evaluator (reading the trainer's models.ready) opens the sealed model with the
    # tenant's key and evaluates it.
    async with space.reader("lepton.models.evaluated") as evaluated:
        record = await evaluated.until(lambda r: r["model_id"] == sealed["model_id"], 120)
    assert set(record["feature_importance"]) == {"x", "natid"}

    # The same model stored plain, announced as it is or hiding its sensitive feature:
    # both refused, the first before its file is read.
    model = train(data["people_frame"], knn(allow=True), sensitive={"natid"}).pipeline
    uri = artifact_uri(str(data["artifacts"]), data["tenant"], f"plain-{uuid.uuid4().hex[:8]}")
    stored = dump(model, uri)
    unsealed = forged(sealed, stored.uri, stored.sha256) | {"artifact_format": FORMAT}
    hiding = forged(unsealed, stored.uri, stored.sha256) | {"feature_columns": ["x"]}
    for ready in (unsealed, hiding):
        await space.send("lepton.models.ready", ready["model_id"], ready)
    letters = await dead_letters_for(space, {unsealed["model_id"], hiding["model_id"]})
    for what, ready, reason in [
        ("an unencrypted artifact of a model reading a sensitive column", unsealed, NOT_SEALED),
        ("that artifact announced without its sensitive feature", hiding, COLUMNS_UNDECLARED),
    ]:
        red_team.check(
            f"lepton.models.ready with {what}",
            f"model {ready['model_id']}: {reason}",
            letters[ready["model_id"]]["dlq_error_message"],
        )
