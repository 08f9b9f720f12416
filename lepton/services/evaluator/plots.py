"""The dashboard's pictures of an evaluation: PNG images drawn from its curves and matrix.

Drawn with matplotlib's Agg backend (no display) from the evaluation itself, so the
pictures show exactly what the ``lepton.models.evaluated`` event carries; written
locally or through fsspec, so they can live wherever the artifacts live.
"""

from __future__ import annotations

import io
import warnings
from typing import TYPE_CHECKING

import matplotlib as mpl

mpl.use("Agg")

from matplotlib.figure import Figure

from lepton.data.files import path_component, write_private

if TYPE_CHECKING:
    from collections.abc import Iterable

    from matplotlib.axes import Axes

    from lepton.services.evaluator.evaluation import Curve, Evaluation

__all__ = ["draw", "plots_location", "save"]

_DPI = 80


def plots_location(root: str | None, artifact_uri: str, tenant: str, model_id: str) -> str:
    """Where a model's plots go: ``<root>/<tenant>/<model id>`` or, without a root, a
    ``<model id>.plots`` directory next to the model's artifact.

    Raises ValueError for a tenant or model id (from the event) that is not one path
    component: it would put the plots outside their directory."""
    model = path_component(model_id)
    if root:
        return f"{root.rstrip('/')}/{path_component(tenant)}/{model}"
    return f"{artifact_uri.rsplit('/', 1)[0]}/{model}.plots"


def _lines(axes: Axes, curves: Iterable[Curve]) -> None:
    for curve in curves:
        axes.plot(curve.x, curve.y, label=curve.label or "model", linewidth=1.2)


def _figure() -> tuple[Figure, Axes]:
    # Fixed margins rather than layout="constrained": its solver was half the time of
    # drawing a figure, for plots whose labels are always the same few words.
    figure = Figure(figsize=(4, 3.4), dpi=_DPI)
    figure.subplots_adjust(left=0.22, bottom=0.15, right=0.96, top=0.9)
    return figure, figure.add_subplot()


def draw(evaluation: Evaluation) -> dict[str, bytes]:
    """PNG bytes by kind: roc, precision_recall, confusion (classification) or residuals
    (regression), for the parts the evaluation has."""
    by_kind: dict[str, list[Curve]] = {}
    for curve in evaluation.curves:
        by_kind.setdefault(curve.kind, []).append(curve)
    figures: dict[str, Figure] = {}
    if "roc" in by_kind:
        figure, axes = _figure()
        _lines(axes, by_kind["roc"])
        axes.plot([0, 1], [0, 1], linestyle=":", color="grey")
        axes.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC")
        figures["roc"] = figure
    if "precision_recall" in by_kind:
        figure, axes = _figure()
        _lines(axes, by_kind["precision_recall"])
        axes.set(xlabel="recall", ylabel="precision", title="precision-recall")
        figures["precision_recall"] = figure
    if evaluation.confusion_matrix:
        figure, axes = _figure()
        axes.imshow(evaluation.confusion_matrix, cmap="Blues")
        for row, counts in enumerate(evaluation.confusion_matrix):
            for column, count in enumerate(counts):
                axes.text(column, row, str(count), ha="center", va="center", fontsize=8)
        ticks = range(len(evaluation.class_labels))
        axes.set_xticks(ticks, evaluation.class_labels, fontsize=7)
        axes.set_yticks(ticks, evaluation.class_labels, fontsize=7)
        axes.set(xlabel="predicted", ylabel="true", title="confusion matrix")
        figures["confusion"] = figure
    if "residuals" in by_kind:
        figure, axes = _figure()
        for curve in by_kind["residuals"]:
            axes.scatter(curve.x, curve.y, s=4, alpha=0.5)
        axes.axhline(0, color="grey", linestyle=":")
        axes.set(xlabel="predicted", ylabel="residual (true - predicted)", title="residuals")
        figures["residuals"] = figure
    images = {}
    for kind, figure in figures.items():
        if len(by_kind.get(kind, ())) > 1:
            figure.axes[0].legend(fontsize=7)
        buffer = io.BytesIO()
        with warnings.catch_warnings():
            # Class labels in scripts the default font lacks (e.g. 良性) draw as boxes: a
            # cosmetic loss, not worth a warning per glyph in the service log.
            warnings.simplefilter("ignore", UserWarning)
            figure.savefig(buffer, format="png")
        images[kind] = buffer.getvalue()
    return images


def save(images: dict[str, bytes], location: str) -> dict[str, str]:
    """Write each image as ``<location>/<kind>.png`` (drawn from a tenant's data, so
    written like its model: 0600 in a 0700 directory when local); returns the URIs by
    kind."""
    uris = {}
    for kind, data in images.items():
        uris[kind] = f"{location}/{kind}.png"
        write_private(uris[kind], data)
    return uris
