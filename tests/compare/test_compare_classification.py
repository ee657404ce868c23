"""Classification comparison: every number checked against scikit-learn / SciPy on the same data."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest
from sklearn.metrics import (
    accuracy_score,
    cohen_kappa_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)

from orchestrator import compare
from orchestrator.compare import ModelRun, Truth
from orchestrator.compare.classification import resampled_scores
from orchestrator.engine import OperationError

TRUTH = ["Fire", "Fire", "Normal", "Smoke", "Smoke", "Normal", "Fire", "Smoke"]
A = ["fire", "normal", "normal", "smoke", "fire", "normal", "fire", "smoke"]
B = ["fire", "fire", "normal", "normal", "smoke", "smoke", "smoke", "smoke"]
NAMES = [f"{label}/{i}.jpg" for i, label in enumerate(TRUTH)]


def run(model: str, predicted: list[str], names: list[str] = NAMES, seconds: float = 2.0) -> ModelRun:
    items = [{"name": n, "labels": [p, "other"], "scores": [0.9, 0.1]} for n, p in zip(names, predicted, strict=True)]
    stats = {
        "inputs": len(names),
        "seconds": seconds,
        "batches": 2,
        "batch_seconds": [seconds / 4, 3 * seconds / 4],
        "batch_sizes": [len(names) // 2, len(names) - len(names) // 2],
    }
    return ModelRun(model, "image-classification", items, stats, ["Fire", "Normal", "Smoke"])


def folders(names: list[str] = NAMES) -> Truth:
    return Truth("classes", compare.labels_from_folders(names), source="folders")


def test_per_model_metrics_are_scikit_learns():
    report = compare.compare([run("a", A), run("b", B)], folders())
    truth = [t.lower() for t in TRUTH]
    assert report["labelled"] and report["truth"] == "folders" and report["inputs"] == len(NAMES)
    for entry, predicted in zip(report["models"], [A, B], strict=True):
        assert entry["accuracy"] == pytest.approx(accuracy_score(truth, predicted))
        assert entry["macro_f1"] == pytest.approx(f1_score(truth, predicted, average="macro", zero_division=0))
        labels = sorted(set(truth) | set(predicted))
        precision, recall, f1, support = precision_recall_fscore_support(
            truth, predicted, labels=labels, zero_division=0
        )
        # classes are shown as the model names them (its labels), matched without regard to case
        assert list(entry["per_class"]) == ["Fire", "Normal", "Smoke"]
        for i, shown in enumerate(entry["per_class"].values()):
            assert {k: shown[k] for k in ("precision", "recall", "f1", "support")} == pytest.approx(
                {"precision": precision[i], "recall": recall[i], "f1": f1[i], "support": support[i]}
            )
        assert entry["confusion"] == {
            "labels": ["Fire", "Normal", "Smoke"],
            "matrix": confusion_matrix(truth, predicted, labels=labels).tolist(),
        }


def test_pairs_agreement_kappa_and_exact_mcnemar():
    [pair] = compare.compare([run("a", A), run("b", B)], folders())["pairs"]
    assert pair["models"] == ["a", "b"]
    assert pair["agreement"] == pytest.approx(np.mean(np.array(A) == np.array(B)))
    assert pair["kappa"] == pytest.approx(cohen_kappa_score(A, B)) and pair["cohen_kappa"] == pair["kappa"]
    truth = np.array([t.lower() for t in TRUTH])
    only_a = int(np.sum((np.array(A) == truth) & (np.array(B) != truth)))
    only_b = int(np.sum((np.array(A) != truth) & (np.array(B) == truth)))
    assert (pair["only_first_correct"], pair["only_second_correct"]) == (only_a, only_b)
    assert pair["mcnemar_p"] == pytest.approx(binomtest(only_a, only_a + only_b, 0.5).pvalue)
    same = compare.compare([run("a", A), run("c", A)], folders())["pairs"][0]
    assert same["mcnemar_p"] == 1.0 and same["agreement"] == 1.0


def test_vectorised_resampled_statistic_equals_scikit_learn():
    rng = np.random.default_rng(3)
    expected = rng.integers(0, 6, 300)
    predicted = np.stack([np.where(rng.random(300) < q, expected, rng.integers(0, 7, 300)) for q in (0.4, 0.8)])
    idx = np.vstack([np.arange(300), rng.integers(0, 300, 300), rng.integers(0, 20, 300)])  # the last: few classes
    scores = resampled_scores(expected, predicted, 7, idx)
    for r, row in enumerate(idx):
        for m in range(2):
            assert scores[m, r] == pytest.approx(accuracy_score(expected[row], predicted[m][row]))
            assert scores[2 + m, r] == pytest.approx(
                f1_score(expected[row], predicted[m][row], average="macro", zero_division=0)
            )


def test_a_resample_drawn_as_cell_counts_scores_as_scikit_learn_on_the_inputs_it_stands_for():
    """The bootstrap draws how many inputs each cell (truth, each model's answer) holds: scored from those counts,
    a resample gives what scikit-learn gives on the inputs it stands for, and the intervals are those of resampling
    the inputs themselves (scipy.stats.bootstrap on the same statistic), within the bootstrap's own noise."""
    from scipy.stats import bootstrap

    from orchestrator.compare import stats
    from orchestrator.compare.classification import Contingency

    rng = np.random.default_rng(5)
    expected = rng.integers(0, 4, 3000)
    predicted = np.stack([np.where(rng.random(3000) < q, expected, rng.integers(0, 4, 3000)) for q in (0.5, 0.7)])
    table = Contingency(expected, predicted, 4)
    assert table.size <= 4**3 and table.size * 8 <= 3000  # few cells: counts drawn, not indices
    representative = np.array([np.flatnonzero(table.codes == c)[0] for c in range(table.size)])
    counts = rng.multinomial(3000, np.bincount(table.codes) / 3000, size=3)
    scores = table.scores(counts)
    for r, row in enumerate(counts):
        inputs = np.repeat(representative, row)
        for m in range(2):
            assert scores[m, r] == pytest.approx(accuracy_score(expected[inputs], predicted[m][inputs]))
            assert scores[2 + m, r] == pytest.approx(
                f1_score(expected[inputs], predicted[m][inputs], average="macro", zero_division=0)
            )
    drawn = stats.bootstrap_counts(table.scores, table.codes, table.size, n_resamples=2000, seed=1)
    assert drawn is not None and drawn.distribution.shape == (4, 2000)
    right = (predicted[1] == expected).astype(float)
    direct = bootstrap((right,), np.mean, n_resamples=2000, method="percentile", rng=np.random.default_rng(1))
    assert drawn.low[1] == pytest.approx(direct.confidence_interval.low, abs=0.004)
    assert drawn.high[1] == pytest.approx(direct.confidence_interval.high, abs=0.004)
    again = stats.bootstrap_counts(table.scores, table.codes, table.size, n_resamples=2000, seed=1)
    np.testing.assert_array_equal(again.distribution, drawn.distribution)


def test_intervals_contain_the_estimate_and_repeat_for_a_seed():
    rng = np.random.default_rng(0)
    names = [f"{c}/{i}.jpg" for i, c in enumerate(rng.choice(["cat", "dog", "bird"], 200))]
    guesses = [n.split("/")[0] if rng.random() < 0.7 else "cat" for n in names]
    runs = [run("m", guesses, names), run("n", list(reversed(guesses)), names)]
    first = compare.compare(runs, folders(names), seed=7)
    again = compare.compare(runs, folders(names), seed=7)
    other = compare.compare(runs, folders(names), seed=8)
    for entry in first["models"]:
        for metric in ("accuracy", "macro_f1"):
            low, high = entry[f"{metric}_ci"]
            assert low <= entry[metric] <= high and high - low > 0.02
    assert first == again
    assert first["models"][0]["accuracy_ci"] != other["models"][0]["accuracy_ci"]
    assert first["bootstrap"] == {
        "resamples": 1000,
        "seed": 7,
        "confidence": 0.95,
        "unit": "inputs",
        "method": "percentile",
    }


def test_verdict_is_significant_only_for_a_real_lead():
    rng = np.random.default_rng(1)
    labels = ["cat", "dog"]
    names = [f"{labels[i % 2]}/{i}.jpg" for i in range(300)]
    truth = [n.split("/")[0] for n in names]
    good = [t if rng.random() < 0.9 else "cat" for t in truth]
    coin = [labels[int(rng.integers(0, 2))] for _ in truth]
    coin2 = [labels[int(rng.integers(0, 2))] for _ in truth]
    clear = compare.compare([run("coin-flip", coin, names), run("good-model", good, names)], folders(names))
    assert clear["best"] == "good-model"
    assert clear["verdict"].startswith("good-model is best (accuracy ")
    assert "its lead over coin-flip" in clear["verdict"] and "is significant (McNemar p < 0.001)" in clear["verdict"]
    close = compare.compare([run("coin-a", coin, names), run("coin-b", coin2, names)], folders(names))
    assert "is not significant (McNemar p = " in close["verdict"]
    assert close["verdict"].endswith("more data is needed to tell them apart")


def test_without_truth_only_agreement():
    report = compare.compare([run("a", A), run("b", B), run("c", A)], None)
    assert report["labelled"] is False and report["truth"] is None and report["headline"] is None
    assert not any(key in m for m in report["models"] for key in ("accuracy", "macro_f1", "confusion"))
    assert report["verdict"].startswith("No ground truth: agreement only. a and c agree most: on 100% of inputs")
    two = compare.compare([run("a", A), run("b", B)], None)
    agree, kappa = 100 * np.mean(np.array(A) == np.array(B)), cohen_kappa_score(A, B)
    assert two["verdict"] == (
        f"No ground truth: agreement only. a and b agree on {agree:.0f}% of inputs (kappa {kappa:.2f})."
    )


def test_speed_from_the_stats():
    [a] = compare.compare([run("a", A, seconds=4.0)], folders())["models"]
    assert a["throughput_per_s"] == pytest.approx(2.0) and a["inputs"] == 8 and a["seconds"] == 4.0
    assert a["latency_p50_ms"] == pytest.approx(2000.0)
    assert a["latency_p95_ms"] == pytest.approx(1000 * np.percentile([1.0, 3.0], 95))


def test_labels_come_from_folders_only_when_every_input_has_one():
    assert compare.labels_from_folders(["Fire/a.jpg", "Smoke/b.jpg"]) == {"Fire/a.jpg": "Fire", "Smoke/b.jpg": "Smoke"}
    assert compare.labels_from_folders(["Fire/a.jpg", "b.jpg"]) is None


def test_models_must_have_seen_the_same_inputs():
    other = run("b", B)
    other.items.append({"name": "extra.jpg", "labels": ["Fire"], "scores": [1.0]})
    with pytest.raises(OperationError, match=r"'b' and 'a' did not see the same inputs.*'extra.jpg'"):
        compare.compare([run("a", A), other], None)
    fewer = run("b", B)
    fewer.items.pop(0)
    with pytest.raises(OperationError, match=r"lacks 1 of them \('Fire/0.jpg'\)"):
        compare.compare([run("a", A), fewer], None)


def test_truth_missing_inputs_are_named():
    truth = folders()
    for name in NAMES[:3]:
        del truth.values[name]
    named = r"no entry for 3 of the 8 inputs: 'Fire/0.jpg', 'Fire/1.jpg', 'Normal/2.jpg'"
    with pytest.raises(OperationError, match=named):
        compare.compare([run("a", A), run("b", B)], truth)


def test_duplicate_inputs_and_models_are_refused():
    twice = run("a", A)
    twice.items.append(dict(twice.items[0]))
    with pytest.raises(OperationError, match=r"model 'a' has more than one prediction for the inputs 'Fire/0.jpg'"):
        compare.compare([twice, run("b", B)], None)
    with pytest.raises(OperationError, match="appears more than once"):
        compare.compare([run("a", A), run("a", B)], None)


def test_wrong_truth_kind_mixed_tasks_and_bad_items():
    with pytest.raises(OperationError, match="need ground truth of kind 'classes'"):
        compare.compare([run("a", A)], Truth("values", {n: 1.0 for n in NAMES}))
    detector = ModelRun("detr", "object-detection", [{"name": n, "detections": []} for n in NAMES])
    with pytest.raises(OperationError, match="different kinds of task"):
        compare.compare([run("a", A), detector], None)
    broken = run("b", B)
    del broken.items[2]["labels"]
    with pytest.raises(OperationError, match="model 'b': the prediction for 'Normal/2.jpg' has no 'labels' list"):
        compare.compare([run("a", A), broken], None)
    with pytest.raises(OperationError, match="nothing to compare"):
        compare.compare([], None)


def test_ten_thousand_predictions_of_three_models_name_the_best_one():
    """10,000 inputs, three models: the best is found and said significantly better (its speed is measured by
    bench/comparison.py beside a plain script, not timed here)."""
    rng = np.random.default_rng(2)
    classes = [f"class-{i}" for i in range(10)]
    truth_codes = rng.integers(0, 10, 10_000)
    names = [f"{classes[c]}/{i}.jpg" for i, c in enumerate(truth_codes)]
    runs = []
    for m, quality in enumerate((0.6, 0.7, 0.8)):
        predicted = np.where(rng.random(10_000) < quality, truth_codes, rng.integers(0, 10, 10_000))
        runs.append(run(f"model-{m}", [classes[c] for c in predicted], names))
    report = compare.compare(runs, folders(names))
    assert report["best"] == "model-2" and "significantly better than every other model" in report["verdict"]


def test_numeric_truth_classes_and_a_single_model():
    names = ["0", "1", "2", "3"]
    predicted = ["1", "0", "1", "1"]
    rows = ModelRun(
        "tree",
        "tabular-classification",
        [{"name": n, "labels": [p], "scores": []} for n, p in zip(names, predicted, strict=True)],
    )
    report = compare.compare([rows], Truth("classes", {"0": 1.0, "1": 0, "2": 1, "3": 0.0}, source="column 'y'"))
    [m] = report["models"]
    assert m["accuracy"] == 0.75 and list(m["per_class"]) == ["0", "1"]
    assert report["pairs"] == [] and report["verdict"].endswith(
        "it is the only model, so there is nothing to compare it with."
    )
