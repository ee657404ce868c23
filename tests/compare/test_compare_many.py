"""Many models, per-class intervals, scores and the champion gate: each number checked against the library itself.

Cochran's Q and Holm's adjustment against statsmodels, Friedman's test against SciPy, calibration
against scikit-learn's `calibration_curve`, ROC AUC and average precision against `roc_auc_score`
and `average_precision_score`, per-class IoU against `jaccard_score`, all on the same predictions.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import friedmanchisquare
from sklearn.calibration import calibration_curve
from sklearn.metrics import (
    average_precision_score,
    f1_score,
    jaccard_score,
    precision_recall_curve,
    roc_auc_score,
)
from sklearn.preprocessing import label_binarize
from statsmodels.stats.contingency_tables import cochrans_q
from statsmodels.stats.multitest import multipletests

from orchestrator import compare
from orchestrator.compare import ModelRun, Truth, calibration
from orchestrator.engine import OperationError

CLASSES = ["bird", "cat", "dog"]


def scored_runs(n: int, strengths: dict[str, float], classes: list[str], seed: int = 0):
    """Models whose softmax scores favour the true class by `strength`; every class's score kept."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, len(classes), n)
    names = [f"{classes[t]}/{i}.jpg" for i, t in enumerate(truth)]
    runs, probabilities = [], {}
    for model, strength in strengths.items():
        logits = rng.normal(0, 1, (n, len(classes)))
        logits[np.arange(n), truth] += strength
        p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        probabilities[model] = p
        items = [
            {
                "name": name,
                "labels": [classes[int(np.argmax(row))]],
                "scores": [float(row.max())],
                "scores_all": {c: float(v) for c, v in zip(classes, row, strict=True)},
            }
            for name, row in zip(names, p, strict=True)
        ]
        runs.append(ModelRun(model, "image-classification", items, {"inputs": n, "seconds": 1.0}, list(classes)))
    return runs, names, truth, probabilities


def folders(names: list[str]) -> Truth:
    return Truth("classes", compare.labels_from_folders(names), source="folders")


@pytest.fixture(scope="module")
def four() -> tuple[dict, np.ndarray, dict[str, np.ndarray]]:
    runs, names, truth, probabilities = scored_runs(400, {"a": 0.8, "b": 1.0, "c": 1.6, "d": 3.0}, CLASSES)
    return compare.compare(runs, folders(names)), truth, probabilities


def test_cochrans_q_and_holm_are_statsmodels(four):
    report, truth, probabilities = four
    correct = np.array([np.argmax(probabilities[m], axis=1) == truth for m in "abcd"]).T
    reference = cochrans_q(correct.astype(int))
    assert report["omnibus"]["test"] == "cochran_q"
    assert report["omnibus"]["statistic"] == pytest.approx(reference.statistic)
    assert report["omnibus"]["p_value"] == pytest.approx(reference.pvalue)
    assert len(report["pairs"]) == 6
    _, adjusted, _, _ = multipletests([p["mcnemar_p"] for p in report["pairs"]], method="holm")
    assert [p["mcnemar_p_adjusted"] for p in report["pairs"]] == pytest.approx(list(adjusted))
    assert all(p["mcnemar_p_adjusted"] >= p["mcnemar_p"] for p in report["pairs"])


def test_the_verdict_speaks_about_the_set_and_ranks_have_intervals(four):
    report, _, _ = four
    assert report["verdict"].startswith("4 models differ (Cochran's Q p < 0.001); d has the best accuracy")
    best = next(m for m in report["models"] if m["model"] == "d")
    assert best["rank"] == 1 and best["rank_ci"] == [1, 1]
    for model in report["models"]:
        low, high = model["rank_ci"]
        assert 1 <= low <= model["rank"] <= high <= 4
        assert 1 <= model["mean_rank"] <= 4
    # a and b are close: their rank intervals overlap
    a, b = (next(m for m in report["models"] if m["model"] == x) for x in "ab")
    assert a["rank_ci"][1] >= b["rank_ci"][0] and b["rank_ci"][1] >= a["rank_ci"][0]


def test_no_difference_at_all_says_so():
    runs, names, _, _ = scored_runs(60, {"a": 1.0, "b": 1.0, "c": 1.0}, CLASSES, seed=4)
    for run in runs[1:]:
        run.items = [dict(item) for item in runs[0].items]  # three identical models
    report = compare.compare(runs, folders(names))
    assert report["omnibus"] == {"test": "cochran_q", "blocks": 60, "df": 2, "statistic": 0.0, "p_value": 1.0}
    assert "3 models do not differ significantly (Cochran's Q p = 1.00)" in report["verdict"]


def test_friedman_and_holm_for_regression():
    rng = np.random.default_rng(5)
    truth = rng.normal(10, 3, 80)
    names = [f"row-{i}" for i in range(80)]
    noise = {"linear": 2.0, "forest": 1.0, "boosted": 0.9}
    runs, errors = [], []
    for model, scale in noise.items():
        values = truth + rng.normal(0, scale, 80)
        errors.append((values - truth) ** 2)
        runs.append(
            ModelRun(
                model,
                "tabular-regression",
                [{"name": n, "value": float(v)} for n, v in zip(names, values, strict=True)],
                {},
            )
        )
    report = compare.compare(runs, Truth("values", dict(zip(names, truth, strict=True))))
    reference = friedmanchisquare(*errors)
    assert report["omnibus"]["test"] == "friedman" and report["omnibus"]["blocks"] == 80
    assert report["omnibus"]["statistic"] == pytest.approx(reference.statistic)
    assert report["omnibus"]["p_value"] == pytest.approx(reference.pvalue)
    _, adjusted, _, _ = multipletests([p["p_value"] for p in report["pairs"]], method="holm")
    assert [p["p_value_adjusted"] for p in report["pairs"]] == pytest.approx(list(adjusted))
    # lower RMSE is better: the least noisy model ranks first
    ranked = sorted(report["models"], key=lambda m: m["rank"])
    assert ranked[-1]["model"] == "linear" and ranked[-1]["rank"] == 3


def test_two_models_get_adjusted_p_values_equal_to_the_raw_ones_and_no_omnibus():
    runs, names, _, _ = scored_runs(50, {"a": 1.0, "b": 2.0}, CLASSES)
    report = compare.compare(runs, folders(names))
    [pair] = report["pairs"]
    assert pair["mcnemar_p_adjusted"] == pair["mcnemar_p"] and report["omnibus"] is None


def test_per_class_iou_is_jaccard_and_intervals_hold_the_values(four):
    report, truth, probabilities = four
    for model in report["models"]:
        predicted = np.argmax(probabilities[model["model"]], axis=1)
        iou = jaccard_score(truth, predicted, average=None)
        for c, name in enumerate(CLASSES):
            entry = model["per_class"][name]
            assert entry["iou"] == pytest.approx(iou[c])
            for metric in ("precision", "recall", "f1", "iou"):
                low, high = entry[f"{metric}_ci"]
                assert low <= entry[metric] <= high


def test_multiclass_scores_are_scikit_learns_one_vs_rest_macro(four):
    report, truth, probabilities = four
    onehot = label_binarize(truth, classes=[0, 1, 2])
    assert report["scores"]["averaging"] == "one-vs-rest macro" and report["scores"]["without_scores"] == []
    for model in report["models"]:
        p = probabilities[model["model"]]
        assert model["roc_auc"] == pytest.approx(roc_auc_score(truth, p, multi_class="ovr", average="macro"))
        assert model["average_precision"] == pytest.approx(average_precision_score(onehot, p, average="macro"))
        eces = []
        for c in range(3):
            observed, predicted = calibration_curve(onehot[:, c], p[:, c], n_bins=10)
            counts = np.histogram(p[:, c], bins=np.linspace(0, 1, 11))[0]
            eces.append(np.sum(counts[counts > 0] / len(truth) * np.abs(observed - predicted)))
        assert model["ece"] == pytest.approx(np.mean(eces))
        low, high = model["roc_auc_ci"]
        assert low <= model["roc_auc"] <= high
        assert model["threshold"] is None


def test_binary_scores_calibration_and_threshold():
    runs, names, truth, probabilities = scored_runs(300, {"weak": 0.7, "strong": 2.0}, ["no", "yes"], seed=9)
    report = compare.compare(runs, folders(names))
    assert report["scores"]["averaging"] == "binary" and report["scores"]["positive_class"] == "yes"
    for model in report["models"]:
        p = probabilities[model["model"]][:, 1]
        assert model["roc_auc"] == pytest.approx(roc_auc_score(truth, p))
        assert model["average_precision"] == pytest.approx(average_precision_score(truth, p))
        observed, predicted = calibration_curve(truth, p, n_bins=10)
        reliability = model["curves"]["reliability"]
        assert reliability["observed"] == pytest.approx(list(observed))
        assert reliability["predicted"] == pytest.approx(list(predicted))
        counts = np.histogram(p, bins=np.linspace(0, 1, 11))[0]
        assert model["ece"] == pytest.approx(np.sum(counts[counts > 0] / 300 * np.abs(observed - predicted)))
        precision, recall, thresholds = precision_recall_curve(truth, p)
        f1 = 2 * precision[:-1] * recall[:-1] / np.maximum(precision[:-1] + recall[:-1], 1e-12)
        best = int(np.argmax(f1))
        assert model["threshold"]["threshold"] == pytest.approx(thresholds[best])
        assert model["threshold"]["f1"] == pytest.approx(f1[best])
        assert model["threshold"]["f1_at_0_5"] == pytest.approx(f1_score(truth, p >= 0.5))
        assert model["threshold"]["f1"] >= model["threshold"]["f1_at_0_5"]


def test_the_bootstrap_auc_of_a_resample_is_roc_auc_score_of_that_resample():
    rng = np.random.default_rng(1)
    truth = rng.integers(0, 2, 200)
    scores = np.round(rng.random(200) * 0.5 + truth * 0.3, 2)  # rounded: many ties
    idx = rng.integers(0, 200, (5, 200))
    found = calibration._Auc(truth, scores)(idx)
    assert found == pytest.approx([roc_auc_score(truth[row], scores[row]) for row in idx])


def test_models_with_top_k_only_are_named_without_score_metrics():
    runs, names, _, _ = scored_runs(40, {"a": 1.0, "b": 2.0}, CLASSES)
    for item in runs[1].items:
        del item["scores_all"]
    report = compare.compare(runs, folders(names))
    assert report["scores"]["without_scores"] == ["b"] and "roc_auc" not in report["models"][1]
    assert report["models"][0]["roc_auc"] is not None


def test_a_gate_that_passes_and_one_that_fails():
    runs, names, truth, probabilities = scored_runs(400, {"champion": 1.0, "close": 1.05, "better": 2.5}, CLASSES)
    report = compare.compare(runs, folders(names), baseline="champion", gate={"accuracy": {"min_delta": 0.01}})
    by_model = {m["model"]: m for m in report["models"]}
    assert "gate" not in by_model["champion"]
    better, close = by_model["better"]["gate"], by_model["close"]["gate"]
    accuracy = {m: np.mean(np.argmax(p, axis=1) == truth) for m, p in probabilities.items()}
    assert better["metric"] == "accuracy"
    assert better["delta"] == pytest.approx(accuracy["better"] - accuracy["champion"])
    assert better["passed"] and better["delta_ci"][0] >= 0.01
    assert not close["passed"] and close["delta_ci"][0] < 0.01 <= better["delta_ci"][0]
    assert report["gate"] == {
        "baseline": "champion",
        "criteria": {"accuracy": {"min_delta": 0.01}},
        "passed": ["better"],
        "any_passed": True,
    }
    assert "Gate against champion" in report["verdict"] and "passed by better" in report["verdict"]
    # a margin no challenger can reach: nobody passes
    strict = compare.compare(
        runs, folders(names), baseline="champion", gate={"accuracy": {"min_delta": 0.5}, "macro_f1": {"min_delta": 0.0}}
    )
    assert strict["gate"]["any_passed"] is False and "no challenger passes" in strict["verdict"]
    assert [c["metric"] for c in next(m for m in strict["models"] if m["model"] == "better")["gate"]["checks"]] == [
        "accuracy",
        "macro_f1",
    ]


def test_a_gate_on_a_lower_is_better_metric_counts_an_improvement_as_positive():
    names = [f"row-{i}" for i in range(100)]
    rng = np.random.default_rng(2)
    truth = rng.normal(0, 1, 100)
    runs = [
        ModelRun(
            m,
            "tabular-regression",
            [{"name": n, "value": float(v)} for n, v in zip(names, truth + rng.normal(0, s, 100), strict=True)],
            {},
        )
        for m, s in (("old", 1.0), ("new", 0.3))
    ]
    report = compare.compare(
        runs, Truth("values", dict(zip(names, truth, strict=True))), baseline="old", gate={"rmse": {"min_delta": 0.2}}
    )
    new = report["models"][1]
    assert new["gate"]["delta"] == pytest.approx(report["models"][0]["rmse"] - new["rmse"]) and new["gate"]["passed"]


@pytest.mark.parametrize(
    "baseline, gate, message",
    [
        ("nobody", None, "baseline 'nobody' is not one of the compared models: 'a', 'b'"),
        (None, {"accuracy": {"min_delta": 0.01}}, "name the model in use with `baseline`"),
        ("a", {"rmse": {"min_delta": 0.01}}, "gate metric 'rmse' is not one of classification's: accuracy, macro_f1"),
        ("a", {"accuracy": {"min_delta": "big"}}, "gate metric 'accuracy': give {\"min_delta\": a number}"),
    ],
)
def test_gate_mistakes_are_named(baseline, gate, message):
    runs, names, _, _ = scored_runs(20, {"a": 1.0, "b": 2.0}, CLASSES)
    with pytest.raises(OperationError, match=message.replace("(", r"\(").replace(")", r"\)").replace("{", r"\{")):
        compare.compare(runs, folders(names), baseline=baseline, gate=gate)


def test_a_gate_without_truth_is_refused():
    runs, names, _, _ = scored_runs(20, {"a": 1.0, "b": 2.0}, CLASSES)
    with pytest.raises(OperationError, match="a gate needs ground truth"):
        compare.compare(runs, None, baseline="a", gate={"accuracy": {"min_delta": 0.0}})


def test_segmentation_friedman_on_each_images_miou_and_per_class_iou_intervals(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(7)
    labels = ["background", "road", "car"]

    def save(name: str, mask: np.ndarray) -> str:
        path = tmp_path / name
        Image.fromarray(mask.astype(np.uint8)).save(path)
        return str(path)

    truths = {f"{i}.png": rng.integers(0, 3, (6, 6)) for i in range(8)}
    runs, per_image = [], []
    for model, noise in (("a", 0.2), ("b", 0.4), ("c", 0.6)):
        items, losses = [], []
        for name, true in truths.items():
            predicted = np.where(rng.random(true.shape) < noise, rng.integers(0, 3, true.shape), true)
            items.append({"name": name, "mask": save(f"{model}-{name}", predicted)})
            present = np.union1d(true, predicted)
            losses.append(1 - jaccard_score(true.ravel(), predicted.ravel(), labels=present, average="macro"))
        runs.append(ModelRun(model, "image-segmentation", items, {}, labels))
        per_image.append(losses)
    report = compare.compare(runs, Truth("masks", {n: save(f"truth-{n}", m) for n, m in truths.items()}))
    reference = friedmanchisquare(*per_image)
    assert report["omnibus"]["test"] == "friedman" and report["omnibus"]["blocks"] == 8
    assert report["omnibus"]["statistic"] == pytest.approx(reference.statistic)
    assert report["omnibus"]["p_value"] == pytest.approx(reference.pvalue)
    for model in report["models"]:
        assert set(model["per_class_iou_ci"]) == set(model["per_class_iou"])
        for name, (low, high) in model["per_class_iou_ci"].items():
            assert low <= model["per_class_iou"][name] <= high
