"""compare_models given a Failed in place of a model (as the engine hands it when a model did not load or run):
the others are compared, and the JSON, the verdict and the HTML page name the one that failed."""

from __future__ import annotations

import json
import re
from pathlib import Path

from sklearn.metrics import accuracy_score

from orchestrator.assets import ops
from orchestrator.datasets import Predictions
from orchestrator.engine import Failed

NAMES = [f"{cls}/{i}.jpg" for cls in ("Fire", "Normal") for i in range(12)]


def predictions(model: str, wrong_every: int, tmp_path: Path) -> Predictions:
    """A classifier that says the other class on every `wrong_every`-th input."""
    items = []
    for i, name in enumerate(NAMES):
        truth = name.split("/")[0]
        said = truth if i % wrong_every else {"Fire": "Normal", "Normal": "Fire"}[truth]
        items.append({"name": name, "labels": [said], "scores": [0.9]})
    return Predictions(model, items, {"inputs": len(items), "seconds": 1.0}, tmp_path / f"{model}.json")


def broken(model: str, index: int) -> Failed:
    return Failed(
        f"/instructions/2/parameters/results/{index}",
        "model_inference",
        f"not run: it needs model '{model}', which deploy_model at /instructions/1 did not provide: <not> a model",
        {"model": model},
    )


def accuracy(result: Predictions) -> float:
    return accuracy_score([n.split("/")[0] for n in NAMES], [i["labels"][0] for i in result.items])


def test_two_that_ran_are_compared_and_the_failed_one_is_listed(ctx, tmp_path: Path):
    a, c = predictions("model-a", 3, tmp_path), predictions("model-c", 5, tmp_path)
    compared = ops.compare_models(ctx, [a, broken("model-b", 1), c], labels="folders")
    report = compared.report
    assert [m["model"] for m in report["models"]] == ["model-a", "model-c"]
    assert [m["accuracy"] for m in report["models"]] == [accuracy(a), accuracy(c)]
    assert report["failed_models"] == [
        {
            "model": "model-b",
            "path": "/instructions/2/parameters/results/1",
            "operation": "model_inference",
            "error": "not run: it needs model 'model-b', which deploy_model at /instructions/1 did not provide: "
            "<not> a model",
        }
    ]
    assert "'model-b' failed to load or run" in report["verdict"]
    assert (
        json.loads((compared.html.parent / "comparison.json").read_text())["failed_models"] == report["failed_models"]
    )
    page = compared.html.read_text()
    section = re.search(r'<section id="failed-models">(.*?)</section>', page, re.S).group(1)
    assert "model-b" in section and "/instructions/2/parameters/results/1" in section
    assert "&lt;not&gt; a model" in section and "<not>" not in section  # escaped like every user text
    assert "<h1>Comparison of 2 models</h1>" in page
    assert "model-a" not in section and "model-c" not in section  # only the failed model is listed there


def test_one_that_ran_is_reported_alone(ctx, tmp_path: Path):
    a = predictions("model-a", 3, tmp_path)
    report = ops.compare_models(ctx, [broken("model-b", 0), a], labels="folders").report
    [only] = report["models"]
    assert only["model"] == "model-a" and only["accuracy"] == accuracy(a)
    assert report["pairs"] == []
    assert [f["model"] for f in report["failed_models"]] == ["model-b"]
    assert "only model" in report["verdict"] and "'model-b' failed" in report["verdict"]


def test_a_comparison_where_every_model_ran_lists_none(ctx, tmp_path: Path):
    report = ops.compare_models(
        ctx, [predictions("model-a", 3, tmp_path), predictions("model-c", 5, tmp_path)], labels="folders"
    ).report
    assert report["failed_models"] == []
    assert "failed" not in report["verdict"]
    assert 'id="failed-models"' not in (ctx.run_dir / "nodes").joinpath(ctx.node_key, "report.html").read_text()
