"""Regression (tabular): predicted values against the truth's numbers.

RMSE, MAE and R² from scikit-learn, with bootstrap intervals over the inputs; between two
models a paired bootstrap p-value of their RMSE difference. Without truth, two models'
agreement is the Pearson correlation of their values (SciPy), with their mean absolute difference.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.stats import pearsonr
from sklearn.metrics import mean_absolute_error, r2_score, root_mean_squared_error

from orchestrator.compare import stats
from orchestrator.compare.inputs import ModelRun, Truth, few, items_by_name
from orchestrator.engine import OperationError

METRICS = ("rmse", "mae", "r2")


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def values(runs: Sequence[ModelRun], names: Sequence[str]) -> np.ndarray:
    """Every run's predicted values in the order of `names`: (models, inputs)."""
    table = []
    for run in runs:
        by_name = items_by_name(run)
        row = [_number(by_name[name].get("value")) for name in names]
        bad = [name for name, value in zip(names, row, strict=True) if value is None]
        if bad:
            raise OperationError(
                f"model {run.model!r} has no numeric 'value' for {len(bad)} inputs ({few(bad)}); "
                "regression predictions are {'name', 'value': number}"
            )
        table.append(row)
    return np.array(table, dtype=float)


def truth_values(truth: Truth, names: Sequence[str]) -> np.ndarray:
    row = [_number(truth.values[name]) for name in names]
    bad = [name for name, value in zip(names, row, strict=True) if value is None]
    if bad:
        raise OperationError(
            f"the ground truth ({truth.source or 'values'}) is not a finite number for {len(bad)} inputs: "
            f"{few(bad)} (the first is {truth.values[bad[0]]!r}); regression truth must be numbers"
        )
    return np.array(row, dtype=float)


def resampled_scores(expected: np.ndarray, predicted: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """RMSE, MAE and R² of every model on each resample: rows [rmse_1..M, mae_1..M, r2_1..M], (3M, batch).

    R² follows scikit-learn when the resampled truth is constant: 1 for a perfect fit, else 0.
    """
    truth = expected[idx]
    spread = np.sum((truth - truth.mean(axis=1, keepdims=True)) ** 2, axis=1)
    rmse, mae, r2 = [], [], []
    for row in predicted:
        errors = row[idx] - truth
        squared = np.sum(errors**2, axis=1)
        rmse.append(np.sqrt(squared / idx.shape[1]))
        mae.append(np.mean(np.abs(errors), axis=1))
        with np.errstate(divide="ignore", invalid="ignore"):
            r2.append(np.where(spread > 0, 1 - squared / spread, np.where(squared == 0, 1.0, 0.0)))
    return np.array(rmse + mae + r2)


def evaluate(
    runs: Sequence[ModelRun], names: Sequence[str], truth: Truth | None, *, seed: int, n_resamples: int, **_: Any
) -> stats.Evaluation:
    predicted = values(runs, names)
    models: list[dict[str, Any]] = [{} for _ in runs]
    boot = None
    if truth is not None:
        expected = truth_values(truth, names)
        boot = stats.bootstrap(
            lambda idx: resampled_scores(expected, predicted, idx), len(names), n_resamples=n_resamples, seed=seed
        )
        m = len(runs)
        for i, row in enumerate(predicted):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # R² of one input is undefined: NaN, reported as null
                r2 = float(r2_score(expected, row))
            models[i] = {
                "rmse": float(root_mean_squared_error(expected, row)),
                "rmse_ci": boot.interval(i) if boot else None,
                "mae": float(mean_absolute_error(expected, row)),
                "mae_ci": boot.interval(m + i) if boot else None,
                "r2": r2,
                "r2_ci": boot.interval(2 * m + i) if boot else None,
            }
    pairs = []
    for a, b in itertools.combinations(range(len(runs)), 2):
        first, second = predicted[a], predicted[b]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # constant values: correlation undefined (null)
            correlation = float(pearsonr(first, second).statistic) if len(names) >= 2 else math.nan
        pair: dict[str, Any] = {
            "models": [runs[a].model, runs[b].model],
            "agreement": correlation,
            "mean_abs_difference": float(np.mean(np.abs(first - second))),
            "kappa": None,
            "cohen_kappa": None,
        }
        if truth is not None:
            pair["p_value"] = stats.paired_p(boot.distribution[a], boot.distribution[b]) if boot else None
        pairs.append(pair)
    if truth is None:
        return stats.Evaluation(models, pairs)
    m = len(runs)
    distributions = {metric: boot.distribution[k * m : (k + 1) * m] for k, metric in enumerate(METRICS)} if boot else {}
    return stats.Evaluation(
        models, pairs, n_resamples if boot else None, distributions=distributions, losses=(predicted - expected) ** 2
    )  # squared errors: ranked as RMSE ranks models


def disagreements(runs: Sequence[ModelRun], names: Sequence[str], truth: Truth | None, **_: Any) -> list[dict]:
    """Inputs whose predicted values differ between models, the widest spread first."""
    predicted = values(runs, names)
    expected = truth_values(truth, names) if truth is not None else None
    spread = predicted.max(axis=0) - predicted.min(axis=0)
    scale = max(float(np.abs(predicted).max()), 1e-12)
    rows = []
    for j, name in enumerate(names):
        if spread[j] <= 1e-9 * scale:
            continue
        rows.append(
            {
                "name": name,
                "predictions": {run.model: f"{predicted[i, j]:.4g}" for i, run in enumerate(runs)},
                "truth": f"{expected[j]:.4g}" if expected is not None else None,
                "disagreement": float(spread[j]),
            }
        )
    return rows
