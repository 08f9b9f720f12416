"""``lepton models``, ``models rollback`` and ``predict``."""

from __future__ import annotations

import csv
import json
from pathlib import Path  # noqa: TC003  # Typer reads the annotations at run time
from typing import Annotated, Any

import typer
from rich.table import Column, Table

from lepton.cli._app import (
    app,
    console,
    errors,
    fail,
    models_app,
    with_client,
)


@models_app.callback(invoke_without_command=True)
def models(
    ctx: typer.Context,
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's models.")] = None,
) -> None:
    """Models per name: each evaluated version's score, and the champion (from the monitor)."""
    if ctx.invoked_subcommand is not None:
        return
    board = with_client(lambda client: client.models(tenant=tenant))
    model_id = Column("model id", overflow="fold")
    table = Table("tenant", "name", model_id, "algorithm", "score", "champion")
    for entry in board:
        metric = entry["primary_metric"]
        if not entry["models"]:
            table.add_row(entry["tenant"], entry["model_name"], "-", "-", "not evaluated", "-")
        for version in entry["models"]:
            score = version["metrics"].get(metric) if metric else None
            table.add_row(
                entry["tenant"],
                entry["model_name"],
                version["model_id"],
                version["algorithm"],
                f"{metric} {score:.4g}" if score is not None else "-",
                "[green]★[/green]" if version["champion"] else "",
            )
    console.print(table)


@models_app.command("rollback")
def models_rollback(
    name: Annotated[str, typer.Argument(help="The model name.")],
    to: Annotated[str, typer.Option("--to", help="The model id to make champion again.")],
    tenant: Annotated[str, typer.Option(help="The tenant that owns the model.")],
) -> None:
    """Make an earlier version the champion again (the evaluator applies it)."""
    with_client(lambda client: client.rollback(name, to), tenant=tenant)
    console.print(f"{name}: rollback to {to} requested")


_INPUT_KINDS = (".csv", ".json", ".jsonl")


def _csv_value(text: str | None) -> int | float | str | None:
    """A CSV cell as the value it spells: empty is null, numbers are numbers, the rest text
    (the CLI reads CSV without pandas, which only the [server] extra installs)."""
    if text is None or not text.strip():
        return None
    for kind in (int, float):
        try:
            value = kind(text)
        except ValueError:
            continue
        return None if value != value else value  # NaN, as pandas reads it: missing
    return text


def _read_rows(path: Path) -> list[dict[str, Any]]:
    """Records from a CSV (header row), a JSON array of objects or JSON Lines file."""
    suffix = path.suffix.lower()
    if suffix not in _INPUT_KINDS:
        fail(f"cannot tell the format of {path}", "give a .csv, .json or .jsonl file")
    try:
        if suffix == ".csv":
            with path.open(encoding="utf-8", newline="") as file:
                rows: Any = [
                    {column: _csv_value(text) for column, text in row.items()}
                    for row in csv.DictReader(file)
                ]
        else:
            text = path.read_text(encoding="utf-8")
            rows = (
                json.loads(text)
                if suffix == ".json"
                else [json.loads(line) for line in text.splitlines() if line.strip()]
            )
    except (OSError, ValueError) as exc:
        fail(f"cannot read {path}: {exc}", "give records as CSV, a JSON array or JSON Lines")
    if isinstance(rows, dict):
        rows = [rows]
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        fail(f"{path} does not hold records", "each record is an object: column -> value")
    for number, row in enumerate(rows, 1):
        for column, value in row.items():
            if not isinstance(value, bool | int | float | str | None):
                fail(
                    f"{path}: record {number}, {column}: {type(value).__name__} is not a value",
                    "values are numbers, text, true/false or null",
                )
    if not rows:
        fail(f"{path} holds no records", "give at least one record to score")
    return rows


@app.command("predict")
def predict(
    model: Annotated[
        str, typer.Option(help="NAME (its champion), NAME@champion or NAME@<model id>.")
    ],
    input_file: Annotated[
        Path, typer.Option("--input", help="Records to score: .csv, .json or .jsonl.")
    ],
    tenant: Annotated[str, typer.Option(help="The tenant that owns the model.")],
    output: Annotated[
        Path | None, typer.Option(help="Write the records with predictions here (JSON Lines).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines.")] = False,
    timeout: Annotated[float, typer.Option(min=1, help="Seconds to wait for the answers.")] = 60.0,
) -> None:
    """Score records with a model, through the evaluator (Kafka request and reply)."""
    rows = _read_rows(input_file)
    result = with_client(
        lambda client: client.predict(model, rows, timeout_s=timeout), tenant=tenant
    )
    scored = []
    for i, row in enumerate(rows):
        line = row | {"prediction": result.predictions[i]}
        if result.probabilities:
            line["probabilities"] = result.probabilities[i]
        scored.append(line)
    for warning in result.warnings:
        errors.print(f"[yellow]warning:[/yellow] {warning}", highlight=False)
    if output is not None:
        with output.open("w", encoding="utf-8") as out:
            for line in scored:
                out.write(json.dumps(line, ensure_ascii=False) + "\n")
        console.print(f"{len(scored):,} predictions by {result.model_id} written to {output}")
    elif as_json:
        for line in scored:
            print(json.dumps(line, ensure_ascii=False))
    else:
        table = Table(*rows[0], "prediction", title=f"{result.model_name} ({result.model_id})")
        for line in scored:
            table.add_row(
                *(_cell(line.get(column)) for column in rows[0]), _cell(line["prediction"])
            )
        console.print(table)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "-" if value is None else str(value)
