"""The agent's pure decisions and the artifact store."""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import skops.io as sio
from sklearn.neighbors import KNeighborsClassifier
from sklearn.preprocessing import FunctionTransformer

from lepton.data.artifacts import ArtifactError, ArtifactStore, artifact_uri, dump
from lepton.services.trainer.runs import (
    Verdict,
    cpu_count_for,
    judge_run,
    memory_limit_mib,
    model_id_for,
    pick_cpus,
)


def test_a_new_lease_starts_a_redelivery_is_a_duplicate_an_older_lease_is_stale() -> None:
    known = [("job", 5, 0), ("other", 9, 0)]
    assert judge_run(("job", 6, 0), known) is Verdict.START
    assert judge_run(("job", 5, 0), known) is Verdict.DUPLICATE
    assert judge_run(("job", 4, 0), known) is Verdict.STALE
    assert judge_run(("job", 5, 1), known) is Verdict.START  # another worker of the gang
    assert judge_run(("new", 1, 0), known) is Verdict.START


def test_cores_and_memory_come_from_the_grant() -> None:
    assert cpu_count_for(500, 8) == 1
    assert cpu_count_for(1500, 8) == 2
    assert cpu_count_for(64_000, 4) == 4
    assert pick_cpus([0, 1, 2, 3], Counter({0: 1, 1: 2}), 2) == [2, 3]
    assert pick_cpus([0, 1, 2, 3], Counter({0: 1, 1: 1, 2: 1, 3: 1}), 1) == [0]
    assert memory_limit_mib(512, 768) == 768
    assert memory_limit_mib(4096, 768) == 4096


def test_model_ids_are_stable_per_job_and_lease() -> None:
    assert model_id_for("j", 3) == model_id_for("j", 3)
    assert model_id_for("j", 3) != model_id_for("j", 4)


def test_an_artifact_loads_only_with_its_checksum(tmp_path: Path) -> None:
    model = KNeighborsClassifier(n_neighbors=1).fit(np.array([[0.0], [1.0]]), [0, 1])
    stored = dump(model, artifact_uri(str(tmp_path), "acme", "m1"))
    assert stored.uri == f"{tmp_path}/acme/m1.skops"
    store = ArtifactStore(str(tmp_path))
    loaded = store.load(stored.uri, tenant="acme", sha256=stored.sha256)
    assert list(loaded.predict(np.array([[0.9]]))) == [1]
    with pytest.raises(ArtifactError, match="does not match"):
        store.load(stored.uri, tenant="acme", sha256="0" * 64)
    assert not list(tmp_path.rglob("*.partial"))


def test_an_artifact_needing_an_untrusted_type_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "acme" / "evil.skops"
    path.parent.mkdir()
    data = sio.dumps(FunctionTransformer(func=print))
    path.write_bytes(data)
    with pytest.raises(ArtifactError, match="not trusted"):
        ArtifactStore(str(tmp_path)).load(
            str(path), tenant="acme", sha256=hashlib.sha256(data).hexdigest()
        )
