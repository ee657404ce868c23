"""What classifiers' scores are worth: calibration, ranking quality (ROC and precision-recall), a threshold.

For each model that gave every class's score for every input (`scores_all` of model_inference,
or top-k lists that hold all the model's classes), against the truth's classes:

- `ece`: expected calibration error over 10 equal-width bins of scikit-learn's
  `calibration_curve` (Σ share of inputs in the bin × |observed rate − mean score|), of the
  positive class's score for two classes, else the mean of each truth class's one-vs-rest ECE;
- `roc_auc` (`roc_auc_score`) with `roc_auc_ci`, a 95 % bootstrap interval (the Mann-Whitney
  form of the AUC on counts: one bincount per resample, no sort; fewer resamples for large
  problems, as `scores.roc_auc_resamples` says), and `average_precision`
  (`average_precision_score`): the positive class's for two classes, else one-vs-rest macro
  averages over the classes in the truth;
- `threshold` (two classes): the score threshold on the positive class that maximises F1,
  from `precision_recall_curve`, with its precision and recall, beside F1 at 0.5;
- `curves`: the reliability diagram's points and the ROC and precision-recall curves (at most
  201 points; macro averages over classes interpolated on a common grid for more than two), for the charts.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.stats import DegenerateDataWarning
from sklearn.calibration import calibration_curve
from sklearn.metrics import average_precision_score, f1_score, precision_recall_curve, roc_auc_score, roc_curve

from orchestrator.compare import stats
from orchestrator.compare.classification import as_class
from orchestrator.compare.inputs import ModelRun, Truth, items_by_name

BINS = 10
#: Names that make a class the positive one of two (else the later of the two in sorted order, as scikit-learn).
POSITIVE = ("1", "true", "yes", "positive", "pos")
#: The AUC bootstrap does inputs × classes × models × resamples work (about 20 ns each): fewer resamples past
#: this, but never fewer than AUC_MIN_RESAMPLES. The count depends only on the data: a comparison stays reproducible.
AUC_BUDGET = 100_000_000
AUC_MIN_RESAMPLES = 200
CURVE_POINTS = 201


def score_matrix(run: ModelRun, names: Sequence[str], classes: Sequence[str]) -> np.ndarray | None:
    """inputs × classes scores of one model (classes case-folded); None unless every input has every score."""
    column = {c: j for j, c in enumerate(classes)}
    matrix = np.zeros((len(names), len(classes)))
    known = {str(label).casefold() for label in run.labels}
    by_name = items_by_name(run)
    for i, name in enumerate(names):
        item = by_name[name]
        given = item.get("scores_all")
        if not isinstance(given, dict):
            labels, scores = item.get("labels") or [], item.get("scores") or []
            # top-k lists that hold every class of the model are a full score vector too
            if not known or len(scores) != len(labels) or {str(lb).casefold() for lb in labels} != known:
                return None
            given = dict(zip(labels, scores, strict=True))
        for label, score in given.items():
            j = column.get(str(label).casefold())
            if j is not None and score is not None:
                matrix[i, j] = float(score)
    return matrix


def _may_have_scores(run: ModelRun) -> bool:
    """Whether the first prediction holds every class's score (score_matrix checks every one)."""
    first = run.items[0] if run.items else {}
    labels = first.get("labels") or []
    return isinstance(first.get("scores_all"), dict) or (bool(run.labels) and len(labels) == len(run.labels))


def positive_class(classes: Sequence[str]) -> int:
    """Which of two (case-folded, sorted) classes is the positive one."""
    named = [j for j, c in enumerate(classes) if c in POSITIVE]
    return named[0] if len(named) == 1 else len(classes) - 1


def expected_calibration_error(truth: np.ndarray, scores: np.ndarray) -> tuple[float, dict[str, list[float]]]:
    """ECE of binary outcomes and their scores, and the reliability diagram's points (non-empty bins)."""
    observed, predicted = calibration_curve(truth, scores, n_bins=BINS, strategy="uniform")
    # the bins calibration_curve uses (its own rule), to weigh each bin by its share of the inputs
    edges = np.linspace(0.0, 1.0, BINS + 1)
    counts = np.bincount(np.searchsorted(edges[1:-1], scores), minlength=BINS)
    counts = counts[counts > 0]
    ece = float(np.sum(counts / scores.size * np.abs(observed - predicted)))
    return ece, {"predicted": predicted.tolist(), "observed": observed.tolist(), "count": counts.tolist()}


def _thin(*arrays: np.ndarray) -> list[list[float]]:
    size = arrays[0].size
    keep = np.unique(np.linspace(0, size - 1, min(size, CURVE_POINTS)).round().astype(int))
    return [a[keep].tolist() for a in arrays]


def _threshold(truth: np.ndarray, scores: np.ndarray) -> dict[str, float] | None:
    precision, recall, thresholds = precision_recall_curve(truth, scores)
    if thresholds.size == 0:
        return None
    p, r = precision[:-1], recall[:-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = np.where(p + r > 0, 2 * p * r / (p + r), 0.0)
    best = int(np.argmax(f1))
    return {
        "threshold": float(thresholds[best]),
        "f1": float(f1[best]),
        "precision": float(p[best]),
        "recall": float(r[best]),
        "f1_at_0_5": float(f1_score(truth, scores >= 0.5, zero_division=0)),
    }


class _Auc:
    """The AUC of one binary problem on a resample of the inputs, by its Mann-Whitney form on counts.

    Each input has a code: its score's rank among the distinct scores, plus their number if positive.
    One `bincount` of the resampled codes gives, per distinct score, how many negatives and positives
    the resample holds; AUC = Σ positives × (negatives below + half the tied) / (P × N), ties as
    `roc_auc_score` counts them (in integers: 2 × below + tied, halved at the end).
    """

    def __init__(self, truth: np.ndarray, scores: np.ndarray):
        levels, rank = np.unique(scores, return_inverse=True)
        self.levels = levels.size
        self.codes = (rank.ravel() + self.levels * (np.asarray(truth) > 0)).astype(np.int64)

    def __call__(self, idx: np.ndarray) -> np.ndarray:
        batch, size = idx.shape[0], 2 * self.levels
        offsets = (np.arange(batch, dtype=np.int64) * size)[:, None]
        counts = np.bincount((self.codes[idx] + offsets).ravel(), minlength=batch * size).reshape(batch, 2, -1)
        neg, pos = counts[:, 0, :], counts[:, 1, :]
        twice_below = np.cumsum(neg, axis=1)
        twice_below *= 2
        twice_below -= neg  # 2 × (negatives strictly below) + negatives tied
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.einsum("bl,bl->b", pos, twice_below) / (2.0 * pos.sum(axis=1) * neg.sum(axis=1))


def add(
    report: dict[str, Any], runs: Sequence[ModelRun], names: Sequence[str], truth: Truth, *, seed: int, n_resamples: int
) -> None:
    """Score metrics in each model's entry (in place) and `report["scores"]`: what was averaged, and how."""
    if not any(_may_have_scores(run) for run in runs):  # top-k only everywhere: nothing to read
        report["scores"] = {
            "averaging": None,
            "positive_class": None,
            "classes": None,
            "calibration_bins": BINS,
            "roc_auc_resamples": None,
            "without_scores": [run.model for run in runs],
        }
        return
    observed = [as_class(truth.values[n]).casefold() for n in names]
    present = sorted(set(observed))
    named = {str(lb).casefold() for run in runs for lb in run.labels}
    scored_classes = {str(lb).casefold() for run in runs for item in run.items for lb in item.get("scores_all") or {}}
    classes = sorted({*present, *named, *scored_classes})
    column = {c: j for j, c in enumerate(classes)}
    binary = len(present) == 2
    problems = [present[positive_class(present)]] if binary else present  # each a one-vs-rest problem
    targets = [np.array([o == c for o in observed], dtype=int) for c in problems]
    without, scored = [], []
    for i, run in enumerate(runs):
        matrix = score_matrix(run, names, classes)
        if matrix is None or len(present) < 2:
            without.append(run.model)
            continue
        scored.append(i)
        columns = [matrix[:, column[c]] for c in problems]
        entry = report["models"][i]
        eces, curves = [], []
        for y, p in zip(targets, columns, strict=True):
            ece, points = expected_calibration_error(y, np.clip(p, 0.0, 1.0))
            eces.append(ece)
            curves.append(points)
        entry["ece"] = float(np.mean(eces))
        entry["roc_auc"] = float(np.mean([roc_auc_score(y, p) for y, p in zip(targets, columns, strict=True)]))
        entry["average_precision"] = float(
            np.mean([average_precision_score(y, p) for y, p in zip(targets, columns, strict=True)])
        )
        entry["threshold"] = _threshold(targets[0], columns[0]) if binary else None
        entry["curves"] = _curves(targets, columns, curves, binary)
        entry["_aucs"] = [_Auc(y, p) for y, p in zip(targets, columns, strict=True)]
    resamples = _auc_intervals(report, scored, len(names), len(problems), seed, n_resamples)
    report["scores"] = {
        "averaging": "binary" if binary else "one-vs-rest macro",
        "positive_class": _shown(report, problems[0]) if binary else None,
        "classes": len(present),
        "calibration_bins": BINS,
        "roc_auc_resamples": resamples,
        "without_scores": without,
    }


def _shown(report: dict[str, Any], folded: str) -> str:
    """A class as the report shows it (a model's spelling) from its case-folded name."""
    for model in report["models"]:
        for label in model.get("per_class") or {}:
            if label.casefold() == folded:
                return label
    return folded


def _auc_intervals(
    report: dict[str, Any], scored: list[int], n: int, problems: int, seed: int, n_resamples: int
) -> int | None:
    if not scored:
        return None
    resamples = min(n_resamples, max(AUC_MIN_RESAMPLES, AUC_BUDGET // max(1, n * problems * len(scored))))
    aucs = [report["models"][i].pop("_aucs") for i in scored]

    def statistic(idx: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a resample where no class is defined: NaN
            return np.array([np.nanmean(np.array([auc(idx) for auc in per_model]), axis=0) for per_model in aucs])

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DegenerateDataWarning)  # a resample without one of the classes: NaN
        boot = stats.bootstrap(statistic, n, n_resamples=resamples, seed=seed)
    for row, i in enumerate(scored):
        report["models"][i]["roc_auc_ci"] = boot.interval(row) if boot else None
    return resamples if boot else None


def _curves(
    targets: list[np.ndarray], columns: list[np.ndarray], reliability: list[dict[str, list[float]]], binary: bool
) -> dict[str, Any]:
    if binary:
        fpr, tpr, _ = roc_curve(targets[0], columns[0])
        precision, recall, _ = precision_recall_curve(targets[0], columns[0])
        (fpr_l, tpr_l), (recall_l, precision_l) = _thin(fpr, tpr), _thin(recall[::-1], precision[::-1])
        return {
            "reliability": reliability[0],
            "roc": {"fpr": fpr_l, "tpr": tpr_l},
            "pr": {"recall": recall_l, "precision": precision_l},
        }
    grid = np.linspace(0.0, 1.0, 101)
    tprs, precisions = [], []
    for y, p in zip(targets, columns, strict=True):
        fpr, tpr, _ = roc_curve(y, p)
        tprs.append(np.interp(grid, fpr, tpr))
        precision, recall, _ = precision_recall_curve(y, p)
        precisions.append(np.interp(grid, recall[::-1], precision[::-1]))
    pooled = calibration_curve(np.concatenate(targets), np.clip(np.concatenate(columns), 0, 1), n_bins=BINS)
    return {
        "reliability": {"predicted": pooled[1].tolist(), "observed": pooled[0].tolist()},
        "roc": {"fpr": grid.tolist(), "tpr": np.mean(tprs, axis=0).tolist()},
        "pr": {"recall": grid.tolist(), "precision": np.mean(precisions, axis=0).tolist()},
    }
