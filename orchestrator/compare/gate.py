"""The champion gate: does a challenger beat the model in use by at least a margin, with 95 % confidence?

`gate = {"accuracy": {"min_delta": 0.01}, ...}` against `baseline`: for each challenger and each
metric named, delta = challenger − baseline (baseline − challenger when lower is better, so a
positive delta is always an improvement), with the 95 % percentile interval of that difference
over the same bootstrap resamples (a paired bootstrap: both models scored on each resample). A
challenger passes when the lower end of the interval is at least `min_delta` for every metric.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from orchestrator.compare import stats
from orchestrator.engine import OperationError

#: Per kind: the metrics a gate can name (those with bootstrap resamples) and whether higher is better.
METRICS = {
    "classification": {"accuracy": True, "macro_f1": True},
    "regression": {"rmse": False, "mae": False, "r2": True},
    "detection": {"map": True},
    "segmentation": {"miou": True, "pixel_accuracy": True},
}


def check(
    kind: str, models: Sequence[str], baseline: str | None, gate: Mapping[str, Any] | None, labelled: bool
) -> dict[str, float]:
    """The gate's margins by metric, after checking baseline and metrics; {} when there is no gate."""
    if baseline is not None and baseline not in models:
        raise OperationError(f"baseline {baseline!r} is not one of the compared models: {', '.join(map(repr, models))}")
    if not gate:
        return {}
    if baseline is None:
        raise OperationError("a gate compares challengers with a baseline: name the model in use with `baseline`")
    if not labelled:
        raise OperationError("a gate needs ground truth: give `truth` (or class folders) to compare_models")
    known = METRICS[kind]
    margins = {}
    for metric, rule in gate.items():
        if metric not in known:
            raise OperationError(f"gate metric {metric!r} is not one of {kind}'s: {', '.join(known)}")
        margin = rule.get("min_delta", 0.0) if isinstance(rule, Mapping) else None
        if not isinstance(margin, int | float) or isinstance(margin, bool) or not np.isfinite(margin):
            raise OperationError(f'gate metric {metric!r}: give {{"min_delta": a number}}, got {rule!r}')
        margins[metric] = float(margin)
    return margins


def apply(
    report: dict[str, Any], distributions: Mapping[str, np.ndarray], baseline: str, margins: Mapping[str, float]
) -> dict[str, Any]:
    """Each challenger's `gate` entry (in place, in `report["models"]`) and the gate's summary."""
    names = [m["model"] for m in report["models"]]
    base = names.index(baseline)
    passed = []
    for i, model in enumerate(report["models"]):
        if i == base:
            continue
        checks = [
            _check(report, distributions.get(metric), metric, i, base, margin) for metric, margin in margins.items()
        ]
        verdict = all(c["passed"] for c in checks)
        model["gate"] = {
            "passed": verdict,
            "metric": checks[0]["metric"],
            "delta": checks[0]["delta"],
            "delta_ci": checks[0]["delta_ci"],
            "min_delta": checks[0]["min_delta"],
            "checks": checks,
        }
        if verdict:
            passed.append(model["model"])
    return {
        "baseline": baseline,
        "criteria": {m: {"min_delta": v} for m, v in margins.items()},
        "passed": passed,
        "any_passed": bool(passed),
    }


def _check(
    report: dict[str, Any], distribution: np.ndarray | None, metric: str, i: int, base: int, margin: float
) -> dict[str, Any]:
    higher = METRICS[report["kind"]][metric]
    sign = 1.0 if higher else -1.0
    mine, theirs = report["models"][i].get(metric), report["models"][base].get(metric)
    delta = None if mine is None or theirs is None else sign * (mine - theirs)
    interval = None
    if distribution is not None and distribution.size:
        differences = sign * (np.asarray(distribution[i], float) - np.asarray(distribution[base], float))
        differences = differences[np.isfinite(differences)]
        if differences.size:
            alpha = 100 * (1 - stats.CONFIDENCE) / 2
            interval = [float(np.percentile(differences, alpha)), float(np.percentile(differences, 100 - alpha))]
    return {
        "metric": metric,
        "delta": delta,
        "delta_ci": interval,
        "min_delta": margin,
        "passed": interval is not None and interval[0] >= margin,
    }


def summary(report: dict[str, Any]) -> str:
    """The gate in words: who passes, and each challenger's delta with its interval against the margin."""
    gate = report["gate"]
    parts = []
    for model in report["models"]:
        entry = model.get("gate")
        if entry:
            shown = ", ".join(
                f"{c['metric']} {_signed(c['delta'])} {_interval(c['delta_ci'])}" for c in entry["checks"]
            )
            parts.append(f"{model['model']} {shown}")
    needs = ", ".join(f"{metric} ≥ {rule['min_delta']:+g}" for metric, rule in gate["criteria"].items())
    outcome = f"passed by {', '.join(gate['passed'])}" if gate["any_passed"] else "no challenger passes"
    return (
        f"Gate against {gate['baseline']} (lower end of the 95 % interval of {needs}): {outcome} ({'; '.join(parts)})."
    )


def _interval(interval: list[float] | None) -> str:
    return "[–]" if not interval else f"[{_signed(interval[0])}, {_signed(interval[1])}]"


def _signed(value: float | None) -> str:
    return "–" if value is None else f"{value:+.3f}"
