"""Charts of a comparison report, as PNG files (matplotlib, Agg canvas; imported only when drawing).

Model and class names are never cut: long ones wrap onto several lines, and every figure is
saved with a tight bounding box so tick labels stay inside the image.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.compare import text

#: Confusion matrices with more classes keep the most frequent ones and sum the rest into "(other)".
MAX_CONFUSION_CLASSES = 30
#: Per-class bar charts with more classes show the lowest and highest half of this many.
MAX_BARS = 80
PER_CLASS = {"detection": ("per_class_ap", "AP@[.5:.95]"), "segmentation": ("per_class_iou", "IoU")}


def charts(report: dict[str, Any], folder: Path | str) -> dict[str, Path]:
    """Draw the report's charts into `folder`: {name: PNG path}.

    metric: the headline metric per model with its 95 % interval (with truth); speed: throughput;
    agreement: a model × model heat map (two models or more); confusion/<model>: a heat map
    per model (classification with truth); per_class/<model>: AP or IoU per class (detection,
    segmentation with truth).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    models = report["models"]
    drawn: dict[str, Path] = {}
    if report["labelled"] and any(m.get(report["headline"]) is not None for m in models):
        drawn["metric"] = _save(_headline(report), folder / "metric.png")
    if any(m.get("throughput_per_s") for m in models):
        drawn["speed"] = _save(_speed(report), folder / "speed.png")
    if len(models) >= 2:
        drawn["agreement"] = _save(_agreement(report), folder / "agreement.png")
    from orchestrator.compare import plots_many  # it draws on this module's figures

    drawn.update(plots_many.charts(report, folder))  # critical difference, reliability, ROC, precision-recall
    for i, m in enumerate(models, start=1):
        if report["labelled"] and m.get("confusion") and m["confusion"]["labels"]:
            drawn[f"confusion/{m['model']}"] = _save(_confusion(m), folder / f"confusion-{i}.png")
        key, label = PER_CLASS.get(report["kind"], ("", ""))
        if report["labelled"] and m.get(key):
            drawn[f"per_class/{m['model']}"] = _save(_per_class(m, m[key], label), folder / f"per-class-{i}.png")
    return drawn


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Any, path: Path) -> Path:
    figure.savefig(path, format="png", bbox_inches="tight", pad_inches=0.2)
    return path


def wrap(name: str, width: int = 36) -> str:
    """A name on several lines of at most `width` characters, broken after / - _ or spaces (nothing dropped)."""
    lines, line = [], ""
    for piece in re.findall(r"[^/\-_ ]*[/\-_ ]?", str(name)):
        while len(piece) > width:
            if line:
                lines.append(line)
                line = ""
            lines.append(piece[:width])
            piece = piece[width:]
        if len(line) + len(piece) > width:
            lines.append(line)
            line = ""
        line += piece
    lines.append(line)
    return "\n".join(part.strip() for part in lines if part.strip()) or " "


def _bars(
    figure: Any,
    names: list[str],
    values: list[float],
    errors: np.ndarray | None,
    xlabel: str,
    title: str,
    labels: list[str],
) -> Any:
    axes = figure.add_subplot()
    positions = np.arange(len(names))
    axes.barh(positions, values, xerr=errors, color="#4C72B0", ecolor="#222222", capsize=4, height=0.6)
    axes.set_yticks(positions, [wrap(n) for n in names])
    axes.invert_yaxis()
    axes.set_xlabel(xlabel)
    axes.set_title(title)
    axes.grid(axis="x", alpha=0.3)
    right = max([v + (errors[1][i] if errors is not None else 0) for i, v in enumerate(values)] + [0])
    for y, (value, label) in enumerate(zip(values, labels, strict=True)):
        axes.annotate(
            label,
            (value, y),
            xytext=(4, -10 if errors is not None else 0),
            textcoords="offset points",
            va="center",
            fontsize=8,
        )
    room = 1.1 + 0.022 * max([len(label) for label in labels] + [0])  # the value labels right of the bars
    axes.set_xlim(min(0.0, min(values + [0.0])), right * room if right > 0 else 1.0)
    return axes


def _headline(report: dict[str, Any]) -> Any:
    metric, higher, label = text.HEADLINE[report["kind"]]
    shown = [m for m in report["models"] if m.get(metric) is not None]
    values = [float(m[metric]) for m in shown]
    intervals = [m.get(f"{metric}_ci") or [m[metric], m[metric]] for m in shown]
    errors = np.array([[max(0.0, v - lo), max(0.0, hi - v)] for v, (lo, hi) in zip(values, intervals, strict=True)]).T
    figure = _figure(8, 1.4 + 0.55 * len(shown))
    better = "higher is better" if higher else "lower is better"
    _bars(
        figure,
        [m["model"] for m in shown],
        values,
        errors,
        f"{label} ({better})",
        f"{label} per model, with 95 % bootstrap intervals",
        [text.number(v) for v in values],
    )
    return figure


def _speed(report: dict[str, Any]) -> Any:
    shown = [m for m in report["models"] if m.get("throughput_per_s")]
    values = [float(m["throughput_per_s"]) for m in shown]
    figure = _figure(8, 1.4 + 0.55 * len(shown))
    labels = [
        f"{v:.1f}/s" + (f", p50 {m['latency_p50_ms']:.0f} ms/request" if m.get("latency_p50_ms") else "")
        for v, m in zip(values, shown, strict=True)
    ]
    _bars(
        figure,
        [m["model"] for m in shown],
        values,
        None,
        "inputs per second (higher is faster)",
        "Throughput per model",
        labels,
    )
    return figure


def readable_on(colour: Any) -> str:
    """The text colour, black or white, with the higher WCAG 2.1 contrast ratio on `colour` (an RGB(A) in 0-1).

    The better of the two is always at least 4.58:1 (WCAG AA for text), whatever the colour.
    """
    from coloraide import Color

    cell = Color("srgb", [float(c) for c in colour[:3]])
    return "white" if cell.contrast("white", method="wcag21") >= cell.contrast("black", method="wcag21") else "black"


def _heatmap(
    figure: Any,
    matrix: np.ndarray,
    rows: list[str],
    columns: list[str],
    fmt: Any,
    title: str,
    xlabel: str,
    ylabel: str,
    vmin: float | None = None,
    vmax: float | None = None,
    counts: bool = False,
) -> None:
    from matplotlib.ticker import MaxNLocator

    axes = figure.add_subplot()
    image = axes.imshow(matrix, cmap="Blues", vmin=vmin, vmax=vmax, aspect="auto")
    # Counts have no halves: the colour bar's ticks are whole numbers (else it may show 2.5, 3.5).
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, ticks=MaxNLocator(integer=True) if counts else None)
    axes.set_xticks(
        np.arange(len(columns)), [wrap(c, 24) for c in columns], rotation=45, ha="right", rotation_mode="anchor"
    )
    axes.set_yticks(np.arange(len(rows)), [wrap(r, 24) for r in rows])
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    for (r, c), value in np.ndenumerate(matrix):
        if np.isfinite(value):  # each number in the colour that reads best on its own cell's colour
            axes.text(
                c, r, fmt(value), ha="center", va="center", fontsize=8, color=readable_on(image.cmap(image.norm(value)))
            )


def _agreement(report: dict[str, Any]) -> Any:
    names = [m["model"] for m in report["models"]]
    index = {name: i for i, name in enumerate(names)}
    matrix = np.eye(len(names))
    for pair in report["pairs"]:
        a, b = (index[n] for n in pair["models"])
        value = pair.get("agreement")
        matrix[a, b] = matrix[b, a] = np.nan if value is None else value
    size = 3 + 0.9 * len(names)
    figure = _figure(size + 1.5, size)
    low = -1.0 if report["kind"] == "regression" else 0.0
    _heatmap(
        figure,
        matrix,
        names,
        names,
        lambda v: f"{v:.2f}",
        f"{text.AGREEMENT[report['kind']]} between models",
        "model",
        "model",
        vmin=low,
        vmax=1.0,
    )
    return figure


def _confusion(model: dict[str, Any]) -> Any:
    labels = list(model["confusion"]["labels"])
    matrix = np.array(model["confusion"]["matrix"], dtype=float)
    if len(labels) > MAX_CONFUSION_CLASSES:
        frequency = matrix.sum(axis=0) + matrix.sum(axis=1)
        keep = np.sort(np.argsort(-frequency, kind="stable")[: MAX_CONFUSION_CLASSES - 1])
        rest = np.setdiff1d(np.arange(len(labels)), keep)
        blocks = [[int(k)] for k in keep] + [list(rest)]
        matrix = np.array([[matrix[np.ix_(rows, cols)].sum() for cols in blocks] for rows in blocks])
        labels = [labels[k] for k in keep] + [f"(other {len(rest)} classes)"]
    size = 3 + 0.45 * len(labels)
    figure = _figure(size + 1.5, size)
    _heatmap(
        figure,
        matrix,
        labels,
        labels,
        lambda v: f"{v:.0f}",
        f"{wrap(model['model'], 60)}\nconfusion matrix (counts)",
        "predicted",
        "true",
        counts=True,
    )
    return figure


def _per_class(model: dict[str, Any], values: dict[str, float], label: str) -> Any:
    ordered = sorted(values.items(), key=lambda kv: kv[1])
    title = f"{wrap(model['model'], 60)}\n{label} per class"
    if len(ordered) > MAX_BARS:
        half = MAX_BARS // 2
        ordered = ordered[:half] + ordered[-half:]
        title += f" (the {half} lowest and {half} highest of {len(values)} classes)"
    figure = _figure(8, 1.4 + 0.28 * len(ordered))
    _bars(
        figure, [k for k, _ in ordered], [v for _, v in ordered], None, label, title, [f"{v:.2f}" for _, v in ordered]
    )
    return figure
