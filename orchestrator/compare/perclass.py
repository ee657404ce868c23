"""Per-class precision, recall, F1 and IoU of classifiers, each with a 95 % bootstrap interval.

The point values are scikit-learn's (`precision_recall_fscore_support`, `jaccard_score`); the
intervals come from the resamples of accuracy and macro-F1 (classification.resampled_scores),
whose counts per class and resample (true positives, true and predicted inputs) give:
precision = tp / predicted, recall = tp / true, F1 = 2·tp / (true + predicted),
IoU = tp / (true + predicted − tp). A class a resample leaves undefined (nothing predicted, say)
is left out of that class's interval rather than counted as 0.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import jaccard_score

from orchestrator.compare import stats

METRICS = ("precision", "recall", "f1", "iou")
#: Past this many classes the per-class intervals are left out (the resamples would hold models × 4 × classes rows).
MAX_CLASSES = 100


def rows(true: np.ndarray, hits: list[np.ndarray], guesses: list[np.ndarray]) -> np.ndarray:
    """Per-class metrics on each resample from its counts (each (batch, k)): rows [model][metric][class], flattened."""
    found = []
    with np.errstate(divide="ignore", invalid="ignore"):
        for tp, guessed in zip(hits, guesses, strict=True):
            tp, guessed = tp.astype(float), guessed.astype(float)
            found += [tp / guessed, tp / true, 2 * tp / (true + guessed), tp / (true + guessed - tp)]
    return np.concatenate([r.T for r in found])  # each (k, batch)


def add(
    models: list[dict[str, Any]],
    expected: np.ndarray,
    predicted: np.ndarray,
    k: int,
    display: list[str],
    distribution: np.ndarray | None,
) -> None:
    """Give every model's `per_class` entries `iou` and the `_ci` of precision, recall, F1 and IoU (in place).

    `distribution`: the resampled rows of `rows` (models·4·k, resamples), or None (no intervals).
    """
    for i, codes in enumerate(predicted):
        entries = models[i].get("per_class") or {}
        present = np.union1d(expected, codes)
        iou = jaccard_score(expected, codes, labels=present, average=None, zero_division=0)
        for c, value in zip(present, iou, strict=True):
            entry = entries.get(display[c])
            if entry is None:
                continue
            entry["iou"] = float(value)
            for j, metric in enumerate(METRICS):
                row = (i * len(METRICS) + j) * k + int(c)
                entry[f"{metric}_ci"] = finite_interval(distribution[row]) if distribution is not None else None


def finite_interval(values: np.ndarray) -> list[float] | None:
    """The percentile interval over the resamples where the class's metric is defined."""
    values = values[np.isfinite(values)]
    if values.size < 2:
        return None
    alpha = 100 * (1 - stats.CONFIDENCE) / 2
    return [float(np.percentile(values, alpha)), float(np.percentile(values, 100 - alpha))]
