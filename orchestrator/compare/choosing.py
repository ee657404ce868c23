"""What the report page shows for choosing a model: the ranking, the gate, the scores, per-class results with
their drill-down, and the earlier comparisons of the same data (templates/choosing.html.j2 shows it)."""

from __future__ import annotations

import datetime
from typing import Any
from urllib.parse import quote

from orchestrator.compare import gate as gates
from orchestrator.compare import many, plots_many, text


def caption(name: str) -> str | None:
    """The caption of a chart drawn by plots_many, or None for another chart."""
    return plots_many.CAPTIONS.get(name)


def context(report: dict[str, Any], drill: dict[str, Any] | None) -> dict[str, Any]:
    """Everything choosing.html.j2 reads (each part None when it does not apply)."""
    return {
        "ranking": _ranking(report),
        "gate": _gate(report),
        "scores": _scores(report),
        "drill": _drill(report, drill) if drill else None,
        "thumbnails": (drill or {}).get("thumbnails") or [],
        "fingerprint": report.get("dataset_fingerprint"),
        "fingerprint_of": report.get("fingerprint_of"),
        "earlier": [_earlier(entry) for entry in report.get("earlier") or []],
    }


def _ranking(report: dict[str, Any]) -> dict[str, Any] | None:
    models = [m for m in report["models"] if m.get("rank") is not None]
    if not report["labelled"] or len(models) < 2:
        return None
    metric, higher, label = text.HEADLINE[report["kind"]]
    head = [
        "rank",
        "model",
        f"{label} ({'higher' if higher else 'lower'} is better)",
        "rank in 95 % of resamples",
        "mean rank over inputs",
    ]
    rows = []
    for m in sorted(models, key=lambda m: m["rank"]):
        interval = m.get("rank_ci")
        rows.append(
            [
                str(m["rank"]),
                m["model"],
                text.with_interval(m.get(metric), m.get(f"{metric}_ci")),
                "–"
                if not interval
                else (str(interval[0]) if interval[0] == interval[1] else f"{interval[0]}–{interval[1]}"),
                text.number(m.get("mean_rank")),
            ]
        )
    test = report.get("omnibus")
    said = None
    if test:
        name = {"cochran_q": "Cochran's Q", "friedman": "Friedman's χ²"}[test["test"]]
        if test.get("p_value") is None:
            said = f"{name}: too few inputs to test ({test.get('blocks', 0)} usable)."
        else:
            unit = "inputs" if report["kind"] in ("classification", "regression") else "images"
            differ = "the models differ" if test["p_value"] < many.ALPHA else "no significant difference"
            said = (
                f"{name} = {text.number(test['statistic'])} (df {test['df']}, {test['blocks']} {unit}), "
                f"p {_p(test['p_value'])}: {differ}; the pairs' p-values are Holm-adjusted for the "
                f"{len(report['pairs'])} pairs."
            )
    return {"head": head, "rows": rows, "omnibus": said}


def _p(p: float) -> str:
    shown = text.p_value(p)
    return shown if shown.startswith("<") else f"= {shown}"


def _gate(report: dict[str, Any]) -> dict[str, Any] | None:
    gate = report.get("gate")
    if not gate:
        return None
    rows = []
    for m in report["models"]:
        entry = m.get("gate")
        for check in (entry or {}).get("checks", []):
            interval = check["delta_ci"]
            rows.append(
                {
                    "cells": [
                        m["model"],
                        check["metric"],
                        _signed(check["delta"]),
                        "–" if not interval else f"[{_signed(interval[0])}, {_signed(interval[1])}]",
                        f"≥ {check['min_delta']:+g}",
                        "passes" if check["passed"] else "fails",
                    ],
                    "passed": check["passed"],
                }
            )
    return {
        "baseline": gate["baseline"],
        "summary": gates.summary(report),
        "rows": rows,
        "head": ["challenger", "metric", "Δ vs baseline", "95 % interval of Δ", "needs (lower end)", ""],
    }


def _signed(value: float | None) -> str:
    return "–" if value is None else f"{value:+.3f}"


def _scores(report: dict[str, Any]) -> dict[str, Any] | None:
    scores = report.get("scores")
    if not scores:
        return None
    binary = scores["averaging"] == "binary"
    head = ["model", "ROC AUC", "average precision", "ECE"]
    if binary:
        head += ["F1-optimal threshold", "F1 there (precision, recall)", "F1 at 0.5"]
    rows = []
    for m in report["models"]:
        if m.get("roc_auc") is None:
            continue
        row = [
            m["model"],
            text.with_interval(m.get("roc_auc"), m.get("roc_auc_ci")),
            text.number(m.get("average_precision")),
            text.number(m.get("ece")),
        ]
        if binary:
            best = m.get("threshold") or {}
            row += [
                text.number(best.get("threshold")),
                f"{text.number(best.get('f1'))} ({text.number(best.get('precision'))}, "
                f"{text.number(best.get('recall'))})",
                text.number(best.get("f1_at_0_5")),
            ]
        rows.append(row)
    if not rows:
        without = ", ".join(scores.get("without_scores") or [])
        return (
            {
                "head": head,
                "rows": [],
                "note": f"No ROC, precision-recall or calibration: {without} gave only "
                "their top-k scores, not every class's.",
            }
            if without
            else None
        )
    what = (
        f"positive class {scores['positive_class']!r}"
        if binary
        else f"one-vs-rest macro averages over {scores['classes']} classes"
    )
    note = f"From every class's score: {what}; ECE over {scores['calibration_bins']} equal-width bins."
    if scores.get("without_scores"):
        note += f" Without every class's score (top-k only): {', '.join(scores['without_scores'])}."
    return {"head": head, "rows": rows, "note": note}


def _drill(report: dict[str, Any], drill: dict[str, Any]) -> list[dict[str, Any]]:
    """Per model: the confusion matrix with each count a link, the per-class table with each class a link."""
    shown = []
    by_model = {m["model"]: m for m in report["models"]}
    for model in drill["models"]:
        entry = by_model.get(model["model"]) or {}
        confusion = entry.get("confusion") or {"labels": [], "matrix": []}
        cells = {(c["true"], c["predicted"]): c for c in model["cells"]}
        matrix = [
            [
                {
                    "count": count,
                    "href": f"#{cells[(true, guessed)]['id']}" if count and (true, guessed) in cells else None,
                    "diagonal": true == guessed,
                }
                for guessed, count in zip(confusion["labels"], row, strict=True)
            ]
            for true, row in zip(confusion["labels"], confusion["matrix"], strict=True)
        ]
        classes = {c["label"]: c for c in model["classes"]}
        per_class = []
        for label, values in (entry.get("per_class") or {}).items():
            target = classes.get(label)
            per_class.append(
                {
                    "label": label,
                    "href": f"#{target['id']}" if target else None,
                    "cells": [str(values.get("support", "–"))]
                    + [
                        text.with_interval(values.get(k), values.get(f"{k}_ci"))
                        for k in ("precision", "recall", "f1", "iou")
                    ],
                }
            )
        shown.append(
            {
                "model": model["model"],
                "index": model["index"],
                "labels": confusion["labels"],
                "matrix": list(zip(confusion["labels"], matrix, strict=True)),
                "per_class": per_class,
                "lists": model["cells"] + model["classes"],
            }
        )
    return shown


def _earlier(entry: dict[str, Any]) -> dict[str, Any]:
    when = datetime.datetime.fromtimestamp(float(entry.get("timestamp") or 0), datetime.UTC)
    metric = entry.get("metric")
    models = ", ".join(
        f"{m.get('model')} {text.with_interval(m.get('value'), m.get('ci'))}" for m in entry.get("models") or []
    )
    path = entry.get("path") or ""
    # Relative to this page (/runs/<id>/report): the other run's report from the same gateway.
    href = f"../{quote(str(entry.get('run_id', '')))}/report" + (f"?path={quote(path)}" if path else "")
    return {
        "when": when.strftime("%Y-%m-%d %H:%M UTC"),
        "run_id": entry.get("run_id"),
        "href": href,
        "models": f"{metric}: {models}" if metric else models,
        "verdict": entry.get("verdict"),
    }
