"""The charts of choosing among models: the critical-difference diagram, reliability diagram, ROC and PR curves.

Drawn with matplotlib on the Agg canvas (plots.py's figures); the critical-difference diagram by
scikit-posthocs (`critical_difference_diagram`), from each model's mean rank over the inputs and
the Holm-adjusted p-values of the pairs: models joined by a bar are not significantly different.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.compare import many, plots, text

CAPTIONS = {
    "critical_difference": "critical-difference diagram: each model's mean rank over the inputs (1 = best); a bar "
    "joins models whose difference is not significant (Holm-adjusted p ≥ 0.05)",
    "reliability": "reliability diagram: observed frequency against mean score in 10 bins (the diagonal is "
    "perfect calibration)",
    "roc": "ROC curves (true against false positive rate), with each model's AUC",
    "pr": "precision-recall curves, with each model's average precision",
}


def charts(report: dict[str, Any], folder: Path) -> dict[str, Path]:
    """Draw the charts that apply into `folder`: {name: PNG path}."""
    drawn: dict[str, Path] = {}
    ranked = [m for m in report["models"] if m.get("mean_rank") is not None]
    if report.get("omnibus") and len(ranked) >= 3:
        drawn["critical_difference"] = plots._save(
            _critical_difference(report, ranked), folder / "critical-difference.png"
        )
    scored = [m for m in report["models"] if m.get("curves")]
    if scored:
        binary = (report.get("scores") or {}).get("averaging") == "binary"
        drawn["reliability"] = plots._save(_reliability(scored, binary), folder / "reliability.png")
        drawn["roc"] = plots._save(_roc(scored, binary), folder / "roc.png")
        drawn["pr"] = plots._save(_pr(scored, binary), folder / "pr.png")
    return drawn


def _critical_difference(report: dict[str, Any], ranked: list[dict[str, Any]]) -> Any:
    import pandas as pd
    import scikit_posthocs

    names = [m["model"] for m in ranked]
    _, adjusted = many.adjusted_key(report["kind"])
    matrix = pd.DataFrame(np.ones((len(names), len(names))), index=names, columns=names)
    for pair in report["pairs"]:
        a, b = pair["models"]
        if a in names and b in names and pair.get(adjusted) is not None:
            matrix.loc[a, b] = matrix.loc[b, a] = pair[adjusted]
    figure = plots._figure(9, 1.6 + 0.45 * len(names))
    axes = figure.add_subplot()
    scikit_posthocs.critical_difference_diagram(
        {m["model"]: m["mean_rank"] for m in ranked},
        matrix,
        alpha=many.ALPHA,
        ax=axes,
        label_fmt_left="{label} ({rank:.2f})",
        label_fmt_right="({rank:.2f}) {label}",
    )
    test = report["omnibus"]
    name = {"cochran_q": "Cochran's Q", "friedman": "Friedman"}.get(test.get("test"), "omnibus")
    axes.set_title(f"Mean rank over {test.get('blocks')} inputs (1 = best); {name} p {_p(test.get('p_value'))}")
    return figure


def _p(p: float | None) -> str:
    shown = text.p_value(p)
    return shown if shown.startswith("<") else f"= {shown}"


def _legend(axes: Any) -> None:
    axes.legend(loc="best", fontsize=8, frameon=False)


def _reliability(models: list[dict[str, Any]], binary: bool) -> Any:
    figure = plots._figure(6.5, 5.2)
    axes = figure.add_subplot()
    axes.plot([0, 1], [0, 1], linestyle="--", color="#888888", linewidth=1, label="perfect calibration")
    for m in models:
        points = m["curves"]["reliability"]
        ece = f" (ECE {m['ece']:.3f})" if m.get("ece") is not None else ""
        axes.plot(points["predicted"], points["observed"], marker="o", label=plots.wrap(m["model"], 40) + ece)
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    what = "the positive class's score" if binary else "each class's score (one-vs-rest, pooled)"
    axes.set_xlabel(f"mean predicted probability ({what})")
    axes.set_ylabel("observed frequency")
    axes.set_title("Reliability diagram")
    axes.grid(alpha=0.3)
    _legend(axes)
    return figure


def _roc(models: list[dict[str, Any]], binary: bool) -> Any:
    figure = plots._figure(6.5, 5.2)
    axes = figure.add_subplot()
    axes.plot([0, 1], [0, 1], linestyle="--", color="#888888", linewidth=1, label="chance")
    for m in models:
        curve = m["curves"]["roc"]
        auc = text.with_interval(m.get("roc_auc"), m.get("roc_auc_ci"))
        axes.plot(curve["fpr"], curve["tpr"], label=f"{plots.wrap(m['model'], 40)} (AUC {auc})")
    axes.set_xlabel("false positive rate")
    axes.set_ylabel("true positive rate")
    axes.set_title("ROC" + ("" if binary else " (macro average of one-vs-rest curves)"))
    axes.grid(alpha=0.3)
    _legend(axes)
    return figure


def _pr(models: list[dict[str, Any]], binary: bool) -> Any:
    figure = plots._figure(6.5, 5.2)
    axes = figure.add_subplot()
    for m in models:
        curve = m["curves"]["pr"]
        axes.plot(
            curve["recall"],
            curve["precision"],
            label=f"{plots.wrap(m['model'], 40)} (AP {text.number(m.get('average_precision'))})",
        )
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.02)
    axes.set_xlabel("recall")
    axes.set_ylabel("precision")
    axes.set_title("Precision-recall" + ("" if binary else " (macro average of one-vs-rest curves)"))
    axes.grid(alpha=0.3)
    _legend(axes)
    return figure
