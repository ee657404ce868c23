"""Regression comparison: RMSE, MAE, R² checked against scikit-learn; agreement against SciPy."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import pearsonr
from sklearn.metrics import mean_absolute_error, r2_score, root_mean_squared_error

from orchestrator import compare
from orchestrator.compare import ModelRun, Truth
from orchestrator.compare.regression import resampled_scores
from orchestrator.engine import OperationError

RNG = np.random.default_rng(5)
NAMES = [f"row-{i}" for i in range(80)]
Y = RNG.normal(10, 3, 80)
GOOD = Y + RNG.normal(0, 0.5, 80)
BAD = Y + RNG.normal(0, 3, 80)


def run(model: str, values, names=NAMES) -> ModelRun:
    items = [{"name": n, "value": float(v)} for n, v in zip(names, values, strict=True)]
    return ModelRun(model, "tabular-regression", items, {"inputs": len(names), "seconds": 0.5, "batch_seconds": [0.5]})


def truth(values=Y, names=NAMES) -> Truth:
    return Truth("values", {n: float(v) for n, v in zip(names, values, strict=True)}, source="table column 'y'")


def test_metrics_are_scikit_learns_with_intervals_around_them():
    report = compare.compare([run("good", GOOD), run("bad", BAD)], truth())
    assert report["kind"] == "regression" and report["headline"] == "rmse" and report["higher_is_better"] is False
    for entry, predicted in zip(report["models"], [GOOD, BAD], strict=True):
        assert entry["rmse"] == pytest.approx(root_mean_squared_error(Y, predicted))
        assert entry["mae"] == pytest.approx(mean_absolute_error(Y, predicted))
        assert entry["r2"] == pytest.approx(r2_score(Y, predicted))
        for metric in ("rmse", "mae", "r2"):
            low, high = entry[f"{metric}_ci"]
            assert low <= entry[metric] <= high
    assert report == compare.compare([run("good", GOOD), run("bad", BAD)], truth())


def test_vectorised_resampled_statistic_equals_scikit_learn():
    predicted = np.stack([GOOD, BAD])
    idx = np.vstack([np.arange(80), RNG.integers(0, 80, 80), np.zeros(80, dtype=int)])  # the last: constant truth
    scores = resampled_scores(Y, predicted, idx)
    for r, row in enumerate(idx):
        for m in range(2):
            assert scores[m, r] == pytest.approx(root_mean_squared_error(Y[row], predicted[m][row]))
            assert scores[2 + m, r] == pytest.approx(mean_absolute_error(Y[row], predicted[m][row]))
            assert scores[4 + m, r] == pytest.approx(r2_score(Y[row], predicted[m][row]))


def test_paired_bootstrap_decides_the_verdict():
    clear = compare.compare([run("bad", BAD), run("good", GOOD)], truth())
    assert clear["best"] == "good"
    assert clear["verdict"].startswith("good is best (RMSE ")
    assert "its lead over bad" in clear["verdict"] and "is significant (paired bootstrap p" in clear["verdict"]
    assert clear["pairs"][0]["p_value"] < 0.05
    twin = GOOD + RNG.normal(0, 0.05, 80)
    close = compare.compare([run("good", GOOD), run("twin", twin)], truth())
    assert close["pairs"][0]["p_value"] > 0.05
    assert "is not significant" in close["verdict"] and close["verdict"].endswith("to tell them apart")


def test_agreement_is_the_correlation_of_the_values():
    report = compare.compare([run("good", GOOD), run("bad", BAD)], None)
    [pair] = report["pairs"]
    assert pair["agreement"] == pytest.approx(pearsonr(GOOD, BAD).statistic)
    assert pair["mean_abs_difference"] == pytest.approx(np.mean(np.abs(GOOD - BAD)))
    assert pair["kappa"] is None and "p_value" not in pair
    assert report["verdict"].startswith("No ground truth: agreement only. good and bad agree with Pearson r ")


def test_values_must_be_numbers():
    broken = run("bad", BAD)
    broken.items[3]["value"] = "n/a"
    with pytest.raises(OperationError, match=r"model 'bad' has no numeric 'value' for 1 inputs \('row-3'\)"):
        compare.compare([run("good", GOOD), broken], truth())
    wrong = truth()
    wrong.values["row-7"] = "seven"
    with pytest.raises(OperationError, match=r"not a finite number for 1 inputs: 'row-7' \(the first is 'seven'\)"):
        compare.compare([run("good", GOOD)], wrong)


def test_disagreements_widest_spread_first():
    rows = compare.find_disagreements([run("good", GOOD), run("bad", BAD)], truth(), limit=3)
    spreads = np.abs(GOOD - BAD)
    assert [r["name"] for r in rows] == [NAMES[i] for i in np.argsort(-spreads)[:3]]
    assert rows[0]["predictions"]["good"] == f"{GOOD[np.argmax(spreads)]:.4g}"
    assert rows[0]["truth"] == f"{Y[np.argmax(spreads)]:.4g}"
    assert compare.find_disagreements([run("a", GOOD), run("b", GOOD)], None) == []
