"""Uncertainty: bootstrap confidence intervals, paired bootstrap p-values, exact McNemar, speed.

Every bootstrap here resamples *indices* of the inputs (or images) with SciPy's
`scipy.stats.bootstrap` (percentile method, fixed seed), and a statistic computes every model's
metrics on the same resample at once. So the intervals of all models and the paired test of
any two of them come from one set of resamples, and a comparison is reproducible for a seed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats as scipy_stats

CONFIDENCE = 0.95
#: Detection and segmentation resample images, whose statistic is costlier: at most this many.
IMAGE_RESAMPLES = 200
#: Index resamples held in memory at once (resamples × inputs).
_BATCH_ELEMENTS = 2_000_000


@dataclass
class Bootstrap:
    """The bootstrap of k statistics: 95 % intervals and the distribution (k × resamples)."""

    low: np.ndarray
    high: np.ndarray
    distribution: np.ndarray

    def interval(self, row: int) -> list[float] | None:
        low, high = float(self.low[row]), float(self.high[row])
        return None if math.isnan(low) or math.isnan(high) else [low, high]


def bootstrap(
    statistic: Callable[[np.ndarray], np.ndarray], n: int, *, n_resamples: int, seed: int
) -> Bootstrap | None:
    """Percentile bootstrap of `statistic` over n inputs; None when there are fewer than two.

    `statistic(idx)` gets index arrays of shape (batch, n) (each row one resample of the inputs)
    and returns an array (k, batch): k statistics per resample.
    """
    if n < 2 or n_resamples < 1:
        return None

    def over_indices(idx: np.ndarray, axis: int = -1) -> np.ndarray:
        idx = np.moveaxis(np.asarray(idx), axis, -1)
        flat = idx.reshape(-1, idx.shape[-1])
        values = np.asarray(statistic(flat), dtype=float)
        return values.reshape(values.shape[:1] + idx.shape[:-1])

    with np.errstate(divide="ignore", invalid="ignore"):
        result = scipy_stats.bootstrap(
            (np.arange(n),),
            over_indices,
            n_resamples=n_resamples,
            batch=max(1, min(n_resamples, _BATCH_ELEMENTS // n)),
            vectorized=True,
            confidence_level=CONFIDENCE,
            method="percentile",
            rng=np.random.default_rng(seed),
        )
    ci = result.confidence_interval
    return Bootstrap(np.atleast_1d(ci.low), np.atleast_1d(ci.high), np.atleast_2d(result.bootstrap_distribution))


def cells_of(columns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct columns of a (rows, n) integer array and, per input, the index of its column: (cells, codes).

    Statistics that depend only on how many inputs fall in each cell (a contingency table of truth and
    every model's answer) can be bootstrapped on cell counts instead of on n resampled indices.
    """
    cells, codes = np.unique(np.asarray(columns), axis=1, return_inverse=True)
    return cells, codes.ravel()


def bootstrap_counts(
    statistic: Callable[[np.ndarray], np.ndarray], codes: np.ndarray, cells: int, *, n_resamples: int, seed: int
) -> Bootstrap | None:
    """Percentile bootstrap of a statistic of cell counts; None when there are fewer than two inputs.

    A resample of the n inputs (with replacement) puts Multinomial(n, count/n) inputs in each cell: when
    there are few cells the counts are drawn so (numpy's `multinomial`), in O(cells) per resample instead of
    O(n); else each resample's indices are drawn and counted (`bincount`). `statistic(counts)` gets counts
    (batch, cells) and returns (k, batch); the interval is the 2.5th-97.5th percentiles, as
    `scipy.stats.bootstrap(method="percentile")` gives them.
    """
    n = codes.size
    if n < 2 or n_resamples < 1:
        return None
    rng = np.random.default_rng(seed)
    parts = []
    if cells * 8 <= n:
        share = np.bincount(codes, minlength=cells) / n
        for start in range(0, n_resamples, max(1, _BATCH_ELEMENTS // max(cells, 1))):
            size = min(n_resamples - start, max(1, _BATCH_ELEMENTS // max(cells, 1)))
            parts.append(np.asarray(statistic(rng.multinomial(n, share, size=size)), dtype=float))
    else:
        batch = max(1, min(n_resamples, _BATCH_ELEMENTS // n))
        for start in range(0, n_resamples, batch):
            size = min(n_resamples - start, batch)
            picked = codes[rng.integers(0, n, (size, n))] + (np.arange(size) * cells)[:, None]
            counts = np.bincount(picked.ravel(), minlength=size * cells).reshape(size, cells)
            parts.append(np.asarray(statistic(counts), dtype=float))
    distribution = np.concatenate(parts, axis=1)
    alpha = 100 * (1 - CONFIDENCE) / 2
    low, high = np.percentile(distribution, [alpha, 100 - alpha], axis=1)
    return Bootstrap(low, high, distribution)


def paired_p(first: np.ndarray, second: np.ndarray) -> float | None:
    """Two-sided paired bootstrap p-value that two metrics differ, from the same resamples.

    The share of resamples where the difference is on the other side of zero, doubled, with the
    usual +1 correction (so never exactly 0 for a finite number of resamples), at most 1.
    """
    diff = np.asarray(first, dtype=float) - np.asarray(second, dtype=float)
    diff = diff[~np.isnan(diff)]
    if diff.size == 0:
        return None
    below, above = int(np.sum(diff <= 0)), int(np.sum(diff >= 0))
    return min(1.0, 2 * (min(below, above) + 1) / (diff.size + 1))


def mcnemar(first_correct: np.ndarray, second_correct: np.ndarray) -> tuple[float, int, int]:
    """Exact McNemar test of two classifiers on the same inputs: (p, b, c).

    b = inputs only the first got right, c = only the second; p = binomtest(b, b + c, 0.5),
    and 1.0 when they never differ.
    """
    first_correct, second_correct = np.asarray(first_correct, bool), np.asarray(second_correct, bool)
    b = int(np.sum(first_correct & ~second_correct))
    c = int(np.sum(~first_correct & second_correct))
    if b + c == 0:
        return 1.0, b, c
    return float(scipy_stats.binomtest(b, b + c, 0.5).pvalue), b, c


def resample_weights(idx: np.ndarray, n: int) -> np.ndarray:
    """How many times each of n inputs occurs in each resample: (batch, n) from (batch, n) indices."""
    batch = idx.shape[0]
    offsets = (np.arange(batch) * n)[:, None]
    return np.bincount((idx + offsets).ravel(), minlength=batch * n).reshape(batch, n).astype(float)


def speed(stats: dict[str, Any], predicted: int) -> dict[str, Any]:
    """Throughput and per-request latency (median and 95th percentile of the batches' times)."""
    inputs = int(stats.get("inputs", stats.get("images", predicted)) or 0)
    seconds = float(stats.get("seconds", 0.0) or 0.0)
    batches = np.asarray(stats.get("batch_seconds") or [], dtype=float)
    return {
        "inputs": inputs,
        "seconds": seconds,
        "throughput_per_s": inputs / seconds if seconds > 0 else None,
        "latency_p50_ms": float(1000 * np.percentile(batches, 50)) if batches.size else None,
        "latency_p95_ms": float(1000 * np.percentile(batches, 95)) if batches.size else None,
        "latency_ms_per_input": 1000 * seconds / inputs if inputs and seconds > 0 else None,
    }


@dataclass
class Evaluation:
    """What one kind of comparison computed: per-model metrics and per-pair statistics."""

    models: list[dict[str, Any]]
    pairs: list[dict[str, Any]]
    resamples: int | None = None
    unit: str = "inputs"
    #: Each bootstrapped metric on every resample, per model (metric -> models × resamples; the same
    #: resamples for every model): the rank intervals and the gate's paired deltas come from them.
    distributions: dict[str, np.ndarray] = field(default_factory=dict)
    #: Per model and input (or image), a loss (lower is better) for Friedman's test and mean ranks.
    losses: np.ndarray | None = None
    #: Classification: whether each model got each input right (models × inputs), for Cochran's Q.
    correct: np.ndarray | None = None
