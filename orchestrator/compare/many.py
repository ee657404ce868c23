"""Three models or more on the same inputs: do they differ at all, which pairs differ, and how sure is the ranking.

- The omnibus test: Cochran's Q (statsmodels) on each input's right/wrong per model for
  classification; Friedman's test (SciPy) on each input's loss per model otherwise (squared
  error for regression, 1 − the image's mIoU for segmentation, 1 − the image's AP for detection).
- Every pair's p-value (exact McNemar, or the paired bootstrap) adjusted for the number of pairs
  with Holm's method (statsmodels `multipletests`): keys `mcnemar_p_adjusted` / `p_value_adjusted`.
- Each model's rank by the headline metric with a 95 % interval: the rank on each bootstrap
  resample (the same resamples for every model), its 2.5th and 97.5th percentiles.
- Each model's mean rank over the inputs (as Friedman's test ranks them), which the
  critical-difference diagram places on its axis.
"""

from __future__ import annotations

import gc
import warnings
from typing import Any

import numpy as np
from scipy import stats as scipy_stats

from orchestrator.compare import stats, text

ALPHA = 0.05


def adjusted_key(kind: str) -> tuple[str, str]:
    """The pair key of the raw p-value and of its Holm adjustment."""
    key = "mcnemar_p" if kind == "classification" else "p_value"
    return key, f"{key}_adjusted"


def adjust_pairs(report: dict[str, Any]) -> None:
    """Holm-adjusted p-value of every pair (in place); pairs without a p-value get None."""
    from statsmodels.stats.multitest import multipletests

    key, adjusted = adjusted_key(report["kind"])
    tested = [pair for pair in report["pairs"] if pair.get(key) is not None]
    for pair in report["pairs"]:
        pair[adjusted] = None
    if tested:
        # statsmodels' Holm ends with gc.collect(), a full collection of the process (a quarter of a second in
        # a run's process): what exists before the call is frozen out of it, and unfrozen after.
        gc.freeze()
        try:
            _, corrected, _, _ = multipletests([pair[key] for pair in tested], alpha=ALPHA, method="holm")
        finally:
            gc.unfreeze()
        for pair, value in zip(tested, corrected, strict=True):
            pair[adjusted] = float(value)


def omnibus(kind: str, evaluation: stats.Evaluation) -> dict[str, Any] | None:
    """Cochran's Q (classification) or Friedman's test over the models' per-input results; None if not possible."""
    if kind == "classification" and evaluation.correct is not None:
        from statsmodels.stats.contingency_tables import cochrans_q

        table = np.asarray(evaluation.correct, dtype=int).T  # inputs × models
        result: dict[str, Any] = {"test": "cochran_q", "blocks": int(table.shape[0]), "df": table.shape[1] - 1}
        if not np.any(table.min(axis=1) != table.max(axis=1)):
            # No input is right for one model and wrong for another: Q is 0/0; nothing separates them.
            return {**result, "statistic": 0.0, "p_value": 1.0}
        found = cochrans_q(table)
        return {**result, "statistic": float(found.statistic), "p_value": float(found.pvalue)}
    if evaluation.losses is None:
        return None
    losses = np.asarray(evaluation.losses, dtype=float)
    complete = losses[:, np.all(np.isfinite(losses), axis=0)]  # blocks where every model has a loss
    result = {"test": "friedman", "blocks": int(complete.shape[1]), "df": complete.shape[0] - 1}
    if complete.shape[1] < 2:
        return {**result, "statistic": None, "p_value": None}
    if np.all(complete == complete[:1]):
        return {**result, "statistic": 0.0, "p_value": 1.0}  # every input ties: Friedman's statistic is 0/0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        found = scipy_stats.friedmanchisquare(*complete)
    if not np.isfinite(found.statistic):
        return {**result, "statistic": 0.0, "p_value": 1.0}
    return {**result, "statistic": float(found.statistic), "p_value": float(found.pvalue)}


def mean_ranks(kind: str, evaluation: stats.Evaluation) -> np.ndarray | None:
    """Each model's rank on each input (1 = best, ties averaged), averaged over the inputs."""
    if kind == "classification" and evaluation.correct is not None:
        losses = 1.0 - np.asarray(evaluation.correct, dtype=float)
    elif evaluation.losses is not None:
        losses = np.asarray(evaluation.losses, dtype=float)
    else:
        return None
    losses = losses[:, np.all(np.isfinite(losses), axis=0)]
    if losses.shape[1] == 0:
        return None
    return scipy_stats.rankdata(losses, axis=0).mean(axis=1)


def rank_intervals(
    values: list[float | None], distribution: np.ndarray | None, higher: bool
) -> tuple[list[int | None], list[list[int] | None]]:
    """Each model's rank by the metric (1 = best) and its 95 % interval over the bootstrap resamples."""
    point = np.array([np.nan if v is None else v for v in values], dtype=float)
    ranks = _ranks(point[:, None], higher)[:, 0]
    shown: list[int | None] = [None if np.isnan(v) else int(r) for v, r in zip(point, ranks, strict=True)]
    if distribution is None or distribution.size == 0:
        return shown, [None] * len(values)
    resampled = _ranks(np.asarray(distribution, dtype=float), higher)
    low = np.percentile(resampled, 100 * (1 - stats.CONFIDENCE) / 2, axis=1, method="lower")
    high = np.percentile(resampled, 100 * (1 + stats.CONFIDENCE) / 2, axis=1, method="higher")
    intervals = [None if r is None else [int(lo), int(hi)] for r, lo, hi in zip(shown, low, high, strict=True)]
    return shown, intervals


def _ranks(values: np.ndarray, higher: bool) -> np.ndarray:
    """Competition ranks (1 = best) down each column of models × samples; a missing value ranks last."""
    worst = -np.inf if higher else np.inf
    filled = np.where(np.isnan(values), worst, values)
    return scipy_stats.rankdata(-filled if higher else filled, axis=0, method="min")


def analyse(report: dict[str, Any], evaluation: stats.Evaluation) -> None:
    """Add the adjusted pair p-values, ranks with intervals, mean ranks and (3 models or more) the omnibus test."""
    if not report["labelled"] or len(report["models"]) < 2:
        return
    adjust_pairs(report)
    metric, higher = report["headline"], bool(report["higher_is_better"])
    values = [m.get(metric) for m in report["models"]]
    ranks, intervals = rank_intervals(values, evaluation.distributions.get(metric), higher)
    averaged = mean_ranks(report["kind"], evaluation)
    for i, model in enumerate(report["models"]):
        model["rank"], model["rank_ci"] = ranks[i], intervals[i]
        model["mean_rank"] = None if averaged is None else float(averaged[i])
    if len(report["models"]) >= 3:
        report["omnibus"] = omnibus(report["kind"], evaluation)


def verdict(report: dict[str, Any]) -> str:
    """One line about the whole set: does the omnibus test find a difference, who leads, whom it beats."""
    metric, _, label = text.HEADLINE[report["kind"]]
    models = report["models"]
    ranked = sorted((m for m in models if m.get(metric) is not None), key=lambda m: m["rank"])
    test = report.get("omnibus") or {}
    name = {"cochran_q": "Cochran's Q", "friedman": "Friedman's test"}.get(str(test.get("test")), "the omnibus test")
    if not ranked:
        return f"No {label} could be computed: the ground truth has nothing to score in these inputs."
    best = ranked[0]
    lead = (
        f"{best['model']} has the best {label} "
        f"({text.with_interval(best[metric], best.get(metric + '_ci'))}{_rank_words(best)})"
    )
    if test.get("p_value") is None:
        return (
            f"{len(models)} models: {lead}; there were too few inputs to test whether they differ "
            f"({test.get('blocks', 0)} usable)."
        )
    shown = (
        f"{name} p {text.p_value(test['p_value'])}"
        if test["p_value"] < 0.001
        else f"{name} p = {text.p_value(test['p_value'])}"
    )
    if test["p_value"] >= ALPHA:
        return (
            f"{len(models)} models do not differ significantly ({shown}): {lead}, but more data is needed to rank them."
        )
    _, adjusted = adjusted_key(report["kind"])
    beaten: list[str] = []
    level: list[str] = []
    for other in ranked[1:]:
        pair = next(p for p in report["pairs"] if set(p["models"]) == {best["model"], other["model"]})
        (beaten if pair.get(adjusted) is not None and pair[adjusted] < ALPHA else level).append(other["model"])
    line = f"{len(models)} models differ ({shown}); {lead}"
    if beaten and not level:
        return line + f", significantly better than every other model (Holm-adjusted p < {ALPHA:g})."
    if beaten:
        return (
            line + f", significantly better than {_names(beaten)} (Holm-adjusted p < {ALPHA:g}) but not "
            f"distinguishable from {_names(level)}."
        )
    return line + f", but after Holm's adjustment it is not distinguishable from {_names(level)}."


def _rank_words(model: dict[str, Any]) -> str:
    interval = model.get("rank_ci")
    if not interval:
        return ""
    low, high = interval
    return "; rank 1 in every resample" if low == high == 1 else f"; rank {low}–{high} in 95 % of resamples"


def _names(models: list[str]) -> str:
    return models[0] if len(models) == 1 else ", ".join(models[:-1]) + " and " + models[-1]
