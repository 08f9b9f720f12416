"""``lepton data``: ingest, list, show and share datasets."""

from __future__ import annotations

from pathlib import Path  # noqa: TC003  # Typer reads the annotations at run time
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.table import Table

from lepton.cli._app import (
    console,
    data_app,
    fail,
    guarded,
    waiting,
    with_client,
)
from lepton.extras import require
from lepton.sdk.builders import DatasetRequest, InvalidRequest, Source, describe

TenantOption = Annotated[str, typer.Option("--tenant", help="The tenant you act for.")]


@data_app.command("generate")
def data_generate(
    kind: Annotated[
        str, typer.Argument(help="houses, messy-houses (issue 21's dirt), diagnosis or fraud.")
    ],
    out: Annotated[Path, typer.Option("--out", help="CSV file to write.")],
) -> None:
    """Write one of the bundled example datasets (made here, never downloaded) as CSV."""
    guarded(lambda: require("server", "lepton data generate"))
    from lepton.data import samples

    makers = {
        "houses": samples.house_prices,
        "messy-houses": samples.messy_houses,
        "diagnosis": samples.diagnosis,
        "fraud": samples.fraud,
    }
    if kind not in makers:
        fail(f"unknown example {kind!r}", "one of: " + ", ".join(makers))
    frame = makers[kind]()
    try:
        frame.to_csv(out, index=False)
    except OSError as exc:
        fail(f"cannot write {out}: {exc}", "give a file in a directory you can write to")
    console.print(f"{kind}: {len(frame):,} rows written to {out}")


@data_app.command("ingest")
def data_ingest(
    source: Annotated[str, typer.Argument(help="A file path (under LEPTON_INGEST_ROOTS) or URL.")],
    name: Annotated[str, typer.Option("--name", help="The dataset's name.")],
    tenant: TenantOption,
    spec: Annotated[
        Path | None, typer.Option(help="A dataset spec (YAML or JSON); inferred if absent.")
    ] = None,
    kind: Annotated[
        str | None, typer.Option(help="csv, parquet or jsonl (default: from the extension).")
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the result.")] = 300.0,
) -> None:
    """Ask the ingest service to load, clean and store a dataset; wait for its answer."""
    if kind not in (None, "csv", "parquet", "jsonl"):
        fail(f"unknown source kind {kind!r}", "say --kind csv, parquet or jsonl")
    spec_text = None
    if spec is not None:
        try:
            spec_text = spec.read_text(encoding="utf-8")
        except OSError as exc:
            fail(f"cannot read the spec {spec}: {exc}", "give a dataset spec as YAML or JSON")
    try:
        request = DatasetRequest(
            tenant=tenant,
            dataset=name,
            sources=[Source.file(source, kind=kind)],  # type: ignore[arg-type]  # checked above
            spec=spec_text,
        )
    except InvalidRequest as exc:
        fail(str(exc), "say --kind csv, parquet or jsonl")
    except ValidationError as exc:
        fail(f"invalid dataset request: {describe(exc)}", "see `lepton data ingest --help`")
    answer = with_client(
        lambda client: client.ingest(
            request,
            timeout_s=timeout,
            on_sent=lambda sent: waiting(f"the ingest service's answer to {sent}", timeout),
        )
    )
    console.print(
        f"{name}: version {answer['version'][:12]}, {answer['rows']:,} rows"
        + (" (same content as before: reused)" if answer["reused"] else "")
    )


@data_app.command("list")
def data_list(tenant: TenantOption) -> None:
    """Datasets the tenant owns or that are shared with it."""
    found = with_client(lambda client: client.datasets(), tenant=tenant)
    table = Table("owner", "name", "version", "rows", "region", "created")
    for info in found:
        table.add_row(
            info.owner_tenant,
            info.name,
            info.version[:12],
            f"{info.rows:,}",
            info.region or "-",
            info.created_at.isoformat(timespec="seconds"),
        )
    console.print(table)


@data_app.command("show")
def data_show(
    dataset: Annotated[str, typer.Argument(help="The dataset's name.")],
    tenant: TenantOption,
    owner: Annotated[
        str | None, typer.Option(help="Its owner, for a dataset shared with you.")
    ] = None,
    spec_only: Annotated[
        bool,
        typer.Option(
            "--spec",
            help="Print only the latest version's spec (YAML), to edit and give back to "
            "lepton data ingest --spec.",
        ),
    ] = False,
) -> None:
    """A dataset's versions, the latest one's columns, quality summary and spec (the one
    ingest inferred, when none was given: every cleaning rule it applied)."""
    import yaml

    versions = with_client(lambda client: client.dataset(dataset, owner=owner), tenant=tenant)
    latest = versions[0]
    spec_text = yaml.safe_dump(latest.spec, allow_unicode=True, sort_keys=False)
    if spec_only:
        console.print(spec_text, end="", highlight=False, markup=False)
        return
    history = Table("version", "rows", "region", "spec", "created", title=f"{dataset} versions")
    for version in versions:
        history.add_row(
            version.version[:19],
            f"{version.rows:,}",
            version.region or "-",
            "inferred" if version.spec_inferred else "given",
            version.created_at.isoformat(timespec="seconds"),
        )
    columns = Table("column", "type", "nullable", "sensitive", title="columns (latest)")
    for column in latest.columns:
        columns.add_row(
            column["name"],
            column["type"],
            "yes" if column.get("nullable") else "no",
            "yes" if column.get("sensitive") else "",
        )
    quality = latest.quality
    summary = Table("quality (latest)", "count")
    for measure in (
        "rows_read",
        "rows_rejected",
        "duplicates_removed",
        "values_imputed",
        "outliers_flagged",
    ):
        summary.add_row(measure.replace("_", " "), f"{quality.get(measure, 0):,}")
    for rule in quality.get("rules", []):
        where = f" ({rule['column']})" if rule.get("column") else ""
        summary.add_row(f"  {rule['rule']}{where}", f"{rule['count']:,}")
    console.print(f"{latest.owner_tenant}/{dataset}", highlight=False)
    console.print(history, columns, summary)
    origin = "inferred" if latest.spec_inferred else "given"
    console.print(f"spec (latest, {origin}; --spec prints it alone):", highlight=False)
    console.print(spec_text, end="", highlight=False, markup=False)


@data_app.command("share")
def data_share(
    dataset: Annotated[str, typer.Argument(help="Your dataset's name.")],
    with_tenant: Annotated[str, typer.Option("--with", help="The tenant to share it with.")],
    tenant: TenantOption,
    region: Annotated[str | None, typer.Option(help="Only readers in this region.")] = None,
) -> None:
    """Let another tenant read every version of a dataset (audited)."""
    with_client(
        lambda client: client.share(dataset, with_tenant=with_tenant, region=region),
        tenant=tenant,
    )
    console.print(f"{dataset}: shared with {with_tenant}" + (f" in {region}" if region else ""))


@data_app.command("revoke")
def data_revoke(
    dataset: Annotated[str, typer.Argument(help="Your dataset's name.")],
    with_tenant: Annotated[str, typer.Option("--with", help="The tenant to revoke.")],
    tenant: TenantOption,
    region: Annotated[str | None, typer.Option(help="Only this region's share.")] = None,
) -> None:
    """Take back a share (audited)."""
    with_client(
        lambda client: client.revoke(dataset, with_tenant=with_tenant, region=region),
        tenant=tenant,
    )
    console.print(f"{dataset}: no longer shared with {with_tenant}")
