"""What :meth:`~lepton.sdk.client.LeptonClient.submit` checks in the dataset catalog
before it sends a job: that the job's dataset exists and its tenant may read it, and that
the target column is one of its columns. A refusal is one line with "did you mean"
suggestions and a hint.

The scheduler admits a job whose dataset is not there yet and waits for it (a pipeline may
submit while ingest still runs): that is why the check belongs to the client, and why a
client that cannot reach the catalog submits anyway, with a :class:`DatasetUnchecked`
warning. The contract lets any Kafka producer submit, and in production PostgreSQL is
usually reachable only from inside the cluster: refusing there would leave such a client
unable to submit at all, for a check the scheduler does not need.
"""

from __future__ import annotations

import difflib
import warnings
from typing import TYPE_CHECKING

from lepton.data.access import AccessDenied, DatasetNotFound
from lepton.errors import CatalogMissing, UnavailableError
from lepton.sdk.builders import InvalidRequest

if TYPE_CHECKING:
    from collections.abc import Sequence

    import asyncpg

    from lepton.data.catalog import DatasetInfo, DatasetVersion
    from lepton.sdk._catalog import CatalogTransport
    from lepton.sdk.builders import DatasetRef, JobRequest

__all__ = ["DatasetUnchecked", "check_dataset", "did_you_mean", "missing_column", "no_dataset"]

# Columns named in a refusal's hint at most: a wide table's are not all worth a line.
_COLUMNS_SHOWN = 20


class DatasetUnchecked(UserWarning):
    """A job was submitted without checking its dataset: the catalog could not be reached."""


def did_you_mean(word: str, candidates: Sequence[str]) -> list[str]:
    """The (at most three) candidates closest to ``word``, closest first."""
    return difflib.get_close_matches(word, list(dict.fromkeys(candidates)), n=3, cutoff=0.6)


def _suggested(close: list[str]) -> str:
    return f"; did you mean {' or '.join(close)}?" if close else ""


def no_dataset(tenant: str, ref: DatasetRef, readable: Sequence[DatasetInfo]) -> DatasetNotFound:
    """The refusal of a dataset ``tenant`` cannot find among the ``readable`` ones."""
    owner = ref.owner or tenant
    of = "" if owner == tenant else f" of {owner}"
    labels = {
        info.name if info.owner_tenant == owner else f"{info.name} (owner {info.owner_tenant})": (
            info.name
        )
        for info in readable
    }
    close = did_you_mean(ref.name, list(labels.values()))
    named = [label for label, name in labels.items() if name in close]
    named.sort(key=lambda label: close.index(labels[label]))
    return DatasetNotFound(
        f"tenant {tenant} has no dataset {ref.name!r}{of} it may read{_suggested(named)}",
        f"`lepton data list --tenant {tenant}` lists them; a dataset still to be ingested: "
        "submit with --no-check (SDK: check=False) and the scheduler waits for it",
    )


def no_version(ref: DatasetRef, owner: str, versions: Sequence[DatasetVersion]) -> DatasetNotFound:
    close = did_you_mean(ref.version or "", [v.version for v in versions])
    return DatasetNotFound(
        f"dataset {owner}/{ref.name} has no version {ref.version!r}{_suggested(close)}",
        f"leave the version out for the newest ({versions[0].version}); "
        f"`lepton data show {ref.name} --tenant {owner}` lists them",
    )


def missing_column(target: str, version: DatasetVersion) -> InvalidRequest | None:
    """The refusal of a target column the dataset version does not have, if it does not."""
    columns = [str(column["name"]) for column in version.columns]
    if target in columns:
        return None
    shown = ", ".join(columns[:_COLUMNS_SHOWN])
    more = len(columns) - _COLUMNS_SHOWN
    return InvalidRequest(
        f"task.target_column: dataset {version.owner_tenant}/{version.name} has no column "
        f"{target!r}{_suggested(did_you_mean(target, columns))}",
        f"its columns: {shown}" + (f" and {more} more" if more > 0 else ""),
    )


async def check_dataset(transport: CatalogTransport, job: JobRequest) -> None:
    """Raise :class:`DatasetNotFound`, :class:`AccessDenied` or :class:`InvalidRequest`
    (the target column) if the scheduler could never train ``job`` on its dataset as the
    catalog stands; warn with :class:`DatasetUnchecked` and return if the catalog cannot
    be reached. Reads as the job's tenant, under row-level security: a dataset it may not
    read is refused (and recorded as a denied read, as every refused read is)."""
    ref = job.dataset
    assert ref is not None
    try:
        async with transport.session() as pool:
            version = await _version(pool, job.tenant, ref)
    except CatalogMissing:
        raise no_dataset(job.tenant, ref, []) from None
    except AccessDenied as denied:
        owner = ref.owner or job.tenant
        raise AccessDenied(
            str(denied),
            f"its owner can share it: `lepton data share {ref.name} --with {job.tenant} "
            f"--tenant {owner}`",
        ) from None
    except UnavailableError as exc:
        warnings.warn(
            DatasetUnchecked(
                f"the dataset catalog could not be reached ({exc}); job {job.job_id} is "
                f"submitted without checking dataset {ref.name!r}: if it does not exist, "
                f"the job waits for it (`lepton jobs show {job.job_id}`)"
            ),
            stacklevel=3,
        )
        return
    target = job.task.target_column
    if target is not None and (problem := missing_column(target, version)) is not None:
        raise problem


async def _version(pool: asyncpg.Pool, tenant: str, ref: DatasetRef) -> DatasetVersion:
    """The version the job names, else the newest; a one-line refusal if there is none."""
    from lepton.data import catalog

    owner = ref.owner or tenant

    async def versions(version: str | None) -> list[DatasetVersion]:
        return await catalog.dataset_versions(
            pool, reader_tenant=tenant, name=ref.name, owner=owner, version=version
        )

    try:
        return (await versions(ref.version))[0]
    except DatasetNotFound:
        if ref.version is not None:
            try:
                every = await versions(None)
            except DatasetNotFound:
                every = []
            if every:
                raise no_version(ref, owner, every) from None
        readable = await catalog.list_datasets(pool, reader_tenant=tenant)
        raise no_dataset(tenant, ref, readable) from None
