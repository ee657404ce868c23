"""compare_models' numbers, checked against a hand computation."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from orchestrator.data import compare
from orchestrator.engine import OperationError

TRUTH = ["Fire", "Fire", "Normal", "Smoke", "Smoke", "Normal"]
A = ["Fire", "Normal", "Normal", "Smoke", "Fire", "Normal"]
B = ["Fire", "Fire", "Normal", "Normal", "Smoke", "Smoke"]
NAMES = [f"{label}/{i}.jpg" for i, label in enumerate(TRUTH)]


def run(model: str, predicted: list[str], seconds: float = 2.0) -> dict:
    return {"model": model, "top1": dict(zip(NAMES, predicted, strict=True)),
            "stats": {"images": 6, "seconds": seconds, "batch_seconds": [seconds / 2, seconds / 2]}}


def test_per_model_metrics_match_the_hand_computation():
    report = compare.compare([run("a", A), run("b", B, seconds=3.0)], compare.labels_from_folders(NAMES))
    a, b = report["models"]
    assert a["accuracy"] == pytest.approx(4 / 6) and b["accuracy"] == pytest.approx(4 / 6)
    # a: F1(fire) = .5, F1(normal) = .8, F1(smoke) = 2/3
    assert a["macro_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert a["confusion"] == {"labels": ["fire", "normal", "smoke"], "matrix": [[1, 1, 0], [0, 2, 0], [1, 0, 1]]}
    assert a["throughput_per_s"] == pytest.approx(3.0) and b["latency_ms_per_image"] == pytest.approx(500.0)
    assert b["median_batch_ms"] == pytest.approx(1500.0)


def test_agreement_and_kappa_between_models():
    [pair] = compare.compare([run("a", A), run("b", B)], None)["pairs"]
    assert pair["models"] == ["a", "b"]
    assert pair["agreement"] == pytest.approx(2 / 6)
    # chance agreement: (2·2 + 3·2 + 1·2) / 36 = 1/3, the same as observed: kappa 0
    assert pair["cohen_kappa"] == pytest.approx(0.0)
    assert compare.cohen_kappa(A, A) == 1.0


def test_models_must_have_seen_the_same_inputs():
    other = run("b", B)
    other["top1"]["extra.jpg"] = "Fire"
    with pytest.raises(OperationError, match="did not see the same inputs"):
        compare.compare([run("a", A), other], None)


def test_labels_come_from_folders_only_when_every_input_has_one():
    assert compare.labels_from_folders(["Fire/a.jpg", "Smoke/b.jpg"]) == {"Fire/a.jpg": "Fire", "Smoke/b.jpg": "Smoke"}
    assert compare.labels_from_folders(["Fire/a.jpg", "b.jpg"]) is None


def test_markdown_and_chart(tmp_path: Path):
    report = compare.compare([run("a", A), run("b", B)], compare.labels_from_folders(NAMES))
    text = compare.markdown(report)
    assert "| a | 0.667 | 0.656 | 3.0 | 333.3 |" in text
    assert "| a vs b | 0.333 | 0.000 |" in text
    chart = compare.chart(report, tmp_path / "chart.png")
    with Image.open(chart) as image:
        assert image.format == "PNG" and image.width > 300
