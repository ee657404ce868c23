"""`best` names a model only when the verdict does (issue 22): not for a tie, a lead that is not significant,
or three models the tests cannot rank; the verdict still says who leads."""

from __future__ import annotations

import numpy as np

from orchestrator import compare
from orchestrator.compare import ModelRun, Truth

LABELS = ["cat", "dog"]
NAMES = [f"{LABELS[i % 2]}/{i}.jpg" for i in range(300)]
TRUTH = [n.split("/")[0] for n in NAMES]


def run(model: str, predicted: list[str]) -> ModelRun:
    items = [{"name": n, "labels": [p], "scores": [0.9]} for n, p in zip(NAMES, predicted, strict=True)]
    return ModelRun(model, "image-classification", items, {"inputs": len(NAMES), "seconds": 1.0}, LABELS)


def folders() -> Truth:
    return Truth("classes", compare.labels_from_folders(NAMES), source="folders")


def guesses(seed: int, right: float) -> list[str]:
    rng = np.random.default_rng(seed)
    return [t if rng.random() < right else ("dog" if t == "cat" else "cat") for t in TRUTH]


def test_a_significant_lead_is_named_best():
    report = compare.compare([run("coin", guesses(1, 0.5)), run("good", guesses(2, 0.95))], folders())
    assert report["best"] == "good" and report["verdict"].startswith("good is best")


def test_a_tie_names_no_best():
    same = guesses(3, 0.7)
    report = compare.compare([run("a", same), run("b", same)], folders())
    assert " tie on accuracy " in report["verdict"] and report["best"] is None


def test_a_lead_that_is_not_significant_names_no_best():
    a = guesses(4, 0.7)
    wrong = [i for i, (p, t) in enumerate(zip(a, TRUTH, strict=True)) if p != t][:3]
    b = [TRUTH[i] if i in wrong else p for i, p in enumerate(a)]  # right on 3 more of 300
    report = compare.compare([run("a", a), run("b", b)], folders())
    assert "is not significant" in report["verdict"] and report["best"] is None


def test_three_models_the_tests_cannot_rank_name_no_best():
    report = compare.compare([run(m, guesses(seed, 0.5)) for m, seed in (("a", 6), ("b", 7), ("c", 8))], folders())
    assert "do not differ significantly" in report["verdict"] and report["best"] is None
    clear = compare.compare(
        [run("a", guesses(6, 0.5)), run("b", guesses(7, 0.5)), run("good", guesses(9, 0.97))], folders()
    )
    assert "significantly better than every other model" in clear["verdict"] and clear["best"] == "good"


def test_without_truth_nothing_is_best():
    report = compare.compare([run("a", guesses(1, 0.5)), run("b", guesses(2, 0.9))], None)
    assert report["verdict"].startswith("No ground truth") and report["best"] is None
