"""Assembling the comparison report: the checks, each kind's metrics, speed, and the verdict."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from orchestrator.compare import calibration, classification, detection, many, regression, segmentation, stats, text
from orchestrator.compare import gate as gates
from orchestrator.compare.inputs import ModelRun, Truth, aligned_names, check_truth, kind_of

KINDS = {
    "classification": classification,
    "regression": regression,
    "detection": detection,
    "segmentation": segmentation,
}


def compare(
    runs: list[ModelRun],
    truth: Truth | None,
    *,
    iou_threshold: float = 0.5,
    seed: int = 0,
    n_resamples: int = 1000,
    baseline: str | None = None,
    gate: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The comparison report (a JSON-able dict) of several models' predictions over the same inputs.

    Keys: task, kind, inputs, labelled, truth, headline, higher_is_better, bootstrap, iou_threshold,
    models (one dict per run: metrics, their `_ci` intervals, rank and rank_ci, speed; classifiers'
    score metrics; a challenger's `gate`), pairs (with Holm-adjusted p-values), omnibus (three
    models or more), scores (classification), baseline, gate, best (the model the verdict names best,
    None when it names none: `winner`), verdict.
    """
    runs = list(runs)
    kind = kind_of(runs)
    names = aligned_names(runs)
    if truth is not None:
        check_truth(truth, kind, names)
    margins = gates.check(kind, [run.model for run in runs], baseline, gate, truth is not None)
    result = KINDS[kind].evaluate(runs, names, truth, iou_threshold=iou_threshold, seed=seed, n_resamples=n_resamples)
    tasks = sorted({run.task for run in runs})
    headline, higher, _ = text.HEADLINE[kind]
    report: dict[str, Any] = {
        "task": tasks[0] if len(tasks) == 1 else kind,
        "kind": kind,
        "inputs": len(names),
        "labelled": truth is not None,
        "truth": (truth.source or truth.kind) if truth is not None else None,
        "headline": headline if truth is not None else None,
        "higher_is_better": higher if truth is not None else None,
        "bootstrap": {
            "resamples": result.resamples,
            "seed": seed,
            "confidence": stats.CONFIDENCE,
            "unit": result.unit,
            "method": "percentile",
        }
        if truth is not None
        else None,
        "iou_threshold": iou_threshold if kind == "detection" else None,
        "models": [
            {"model": run.model, "task": run.task, **stats.speed(run.stats, len(run.items)), **metrics}
            for run, metrics in zip(runs, result.models, strict=True)
        ],
        "pairs": result.pairs,
        "omnibus": None,
        "baseline": baseline,
    }
    if truth is not None and kind == "classification":
        calibration.add(report, runs, names, truth, seed=seed, n_resamples=n_resamples)
    many.analyse(report, result)
    if margins:
        assert baseline is not None  # gates.check asks for one
        report["gate"] = gates.apply(report, result.distributions, baseline, margins)
    report = json_safe(report)
    report["best"] = winner(report)
    report["verdict"] = verdict(report)
    return report


def find_disagreements(
    runs: Sequence[ModelRun], truth: Truth | None, limit: int = 24, *, iou_threshold: float = 0.5
) -> list[dict[str, Any]]:
    """Up to `limit` inputs the models disagree on, most disagreeing first.

    Each: {"name", "predictions": {model: what it predicted, as shown}, "truth": shown or None,
    "disagreement": a score (higher = more disagreement), and "correct": {model: bool} for
    classification with truth}. Classification: different top-1; regression: different values;
    detection: boxes that do not match; segmentation: masks that differ.
    """
    runs = list(runs)
    kind = kind_of(runs)
    names = aligned_names(runs)
    if truth is not None:
        check_truth(truth, kind, names)
    rows = KINDS[kind].disagreements(runs, names, truth, iou_threshold=iou_threshold)
    rows.sort(key=lambda row: -row["disagreement"])
    return json_safe(rows[: max(0, limit)])


def json_safe(value: Any) -> Any:
    """NumPy numbers as Python numbers, NaN and infinities as None, tuples as lists."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, np.bool_ | bool):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return None if not math.isfinite(float(value)) else float(value)
    return value


def _ranked(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Models with a headline value, best first."""
    metric, higher = report.get("headline"), report.get("higher_is_better")
    if not metric:
        return []
    scored = [m for m in report["models"] if m.get(metric) is not None]
    return sorted(scored, key=lambda m: m[metric], reverse=bool(higher))


def winner(report: dict[str, Any]) -> str | None:
    """The model the verdict names best, or None when it names none: no truth, a tie, a lead that is not
    significant, or (three models or more) a leader the tests cannot tell from another."""
    ranked = _ranked(report)
    if not ranked or not report["labelled"]:
        return None
    best, metric = ranked[0], report["headline"]
    if len(ranked) == 1:
        return best["model"] if len(report["models"]) == 1 else None
    if len(report["models"]) >= 3 and report.get("omnibus"):
        test = report["omnibus"]
        if test.get("p_value") is None or test["p_value"] >= many.ALPHA:
            return None
        _, adjusted = many.adjusted_key(report["kind"])
        leader = min(ranked, key=lambda m: m["rank"])
        others = [_pair(report, leader["model"], m["model"]).get(adjusted) for m in ranked if m is not leader]
        return leader["model"] if all(p is not None and p < many.ALPHA for p in others) else None
    runner = ranked[1]
    key, _ = text.significance_label(report)
    p = _pair(report, best["model"], runner["model"]).get(key)
    if runner[metric] == best[metric] or p is None or p >= 0.05:
        return None
    return best["model"]


def _pair(report: dict[str, Any], a: str, b: str) -> dict[str, Any]:
    return next(p for p in report["pairs"] if set(p["models"]) == {a, b})


def verdict(report: dict[str, Any]) -> str:
    """The best model by the headline metric and whether its lead is significant at 0.05 (about the whole
    set for three models or more), then the gate's outcome when there is one."""
    said = _verdict(report)
    return f"{said} {gates.summary(report)}" if report.get("gate") else said


def _verdict(report: dict[str, Any]) -> str:
    models = report["models"]
    if report["labelled"] and len(models) >= 3 and report.get("omnibus"):
        return many.verdict(report)
    if not report["labelled"]:
        return _agreement_verdict(report)
    metric, _, label = text.HEADLINE[report["kind"]]
    ranked = _ranked(report)
    if not ranked:
        return f"No {label} could be computed: the ground truth has nothing to score in these inputs."
    best = ranked[0]
    head = f"{best['model']} is best ({label} {text.with_interval(best[metric], best.get(metric + '_ci'))})"
    if len(models) == 1:
        return f"{head}; it is the only model, so there is nothing to compare it with."
    runner = ranked[1] if len(ranked) > 1 else None
    if runner is None:
        return f"{head}; no other model has a {label}."
    key, _ = text.significance_label(report)
    p = _pair(report, best["model"], runner["model"]).get(key)
    test = "McNemar p" if key == "mcnemar_p" else "paired bootstrap p"
    shown_p = f"{test} {text.p_value(p)}" if p is not None and p < 0.001 else f"{test} = {text.p_value(p)}"
    if runner[metric] == best[metric]:
        return (
            f"{best['model']} and {runner['model']} tie on {label} ({text.number(best[metric])}, {shown_p}): "
            "more data is needed to tell them apart"
        )
    lead = f"{head}; its lead over {runner['model']} ({text.number(runner[metric])})"
    if p is not None and p < 0.05:
        return f"{lead} is significant ({shown_p})"
    return f"{lead} is not significant ({shown_p}): more data is needed to tell them apart"


def _agreement_verdict(report: dict[str, Any]) -> str:
    models, pairs = report["models"], report["pairs"]
    if len(models) < 2:
        return f"No ground truth and a single model ({models[0]['model']}): nothing to compare but its speed."
    ranked = sorted(pairs, key=lambda p: -math.inf if p.get("agreement") is None else p["agreement"], reverse=True)
    most, least = ranked[0], ranked[-1]
    line = f"No ground truth: agreement only. {most['models'][0]} and {most['models'][1]} "
    if len(pairs) == 1:
        return line + _agrees(report, most) + "."
    return (
        line + "agree most: " + _agrees(report, most, verb=False) + f"; {least['models'][0]} and "
        f"{least['models'][1]} least: " + _agrees(report, least, verb=False) + "."
    )


def _agrees(report: dict[str, Any], pair: dict[str, Any], verb: bool = True) -> str:
    """How far a pair agrees, in words for the kind of comparison."""
    kind, value = report["kind"], pair.get("agreement")
    say = "agree " if verb else ""
    if value is None:
        return say + "cannot be compared (their predictions do not vary)"
    if kind == "classification":
        kappa = f" (kappa {pair['kappa']:.2f})" if pair.get("kappa") is not None else ""
        return f"{say}on {100 * value:.0f}% of inputs{kappa}"
    if kind == "regression":
        return f"{say}with Pearson r {value:.2f} (mean absolute difference {pair['mean_abs_difference']:.3g})"
    if kind == "detection":
        return f"{say}with a mean matched-box F1 of {value:.2f} (same label, IoU ≥ {report['iou_threshold']:g})"
    return f"{say}on {100 * value:.0f}% of pixels (mean over images)"
