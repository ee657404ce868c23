"""Comparing several models' predictions on the same inputs: the reason this product exists.

Per model: accuracy, macro-F1 and a confusion matrix where the data has labels, and latency
and throughput; between models: agreement and Cohen's kappa of their top-1 labels.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from orchestrator.engine import OperationError


def labels_from_folders(names: Sequence[str]) -> dict[str, str] | None:
    """Ground truth from each input's folder (`Fire/img1.jpg` → `Fire`), if every input has one."""
    truth = {name: name.split("/", 1)[0] for name in names if "/" in name}
    return truth if len(truth) == len(names) and names else None


def accuracy(truth: Sequence[str], predicted: Sequence[str]) -> float:
    return sum(t == p for t, p in zip(truth, predicted, strict=True)) / len(truth)


def macro_f1(truth: Sequence[str], predicted: Sequence[str]) -> float:
    """The mean F1 over every class that occurs in the truth or the predictions."""
    scores = []
    for label in sorted(set(truth) | set(predicted)):
        tp = sum(t == label and p == label for t, p in zip(truth, predicted, strict=True))
        fp = sum(t != label and p == label for t, p in zip(truth, predicted, strict=True))
        fn = sum(t == label and p != label for t, p in zip(truth, predicted, strict=True))
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        scores.append(2 * precision * recall / (precision + recall) if precision + recall else 0.0)
    return sum(scores) / len(scores)


def confusion(truth: Sequence[str], predicted: Sequence[str]) -> dict[str, Any]:
    """Counts of (true label, predicted label): rows are the truth, columns the predictions."""
    labels = sorted(set(truth) | set(predicted))
    counts = Counter(zip(truth, predicted, strict=True))
    return {"labels": labels, "matrix": [[counts[(t, p)] for p in labels] for t in labels]}


def cohen_kappa(first: Sequence[str], second: Sequence[str]) -> float:
    """Agreement between two raters beyond what chance would give (1 = always agree)."""
    n = len(first)
    observed = sum(a == b for a, b in zip(first, second, strict=True)) / n
    a_counts, b_counts = Counter(first), Counter(second)
    expected = sum(a_counts[label] * b_counts[label] for label in a_counts) / (n * n)
    if expected == 1:
        return 1.0 if observed == 1 else 0.0
    return (observed - expected) / (1 - expected)


def compare(runs: Sequence[dict[str, Any]], truth: dict[str, str] | None) -> dict[str, Any]:
    """The comparison report of several models' predictions over the same inputs.

    Each run: {"model", "top1": {name: label}, "stats": {"images", "seconds", "batch_seconds": [...]}}.
    """
    names = sorted(runs[0]["top1"])
    for run in runs[1:]:
        if sorted(run["top1"]) != names:
            missing = sorted(set(names) ^ set(run["top1"]))[:5]
            raise OperationError(
                f"{run['model']} and {runs[0]['model']} did not see the same inputs (e.g. {missing}); "
                "compare models over the exact same data"
            )
    report: dict[str, Any] = {"inputs": len(names), "labelled": truth is not None, "models": [], "pairs": []}
    top1 = {run["model"]: [run["top1"][n] for n in names] for run in runs}
    expected = [truth[n] for n in names] if truth else None
    for run in runs:
        predicted = top1[run["model"]]
        entry: dict[str, Any] = {"model": run["model"], **_speed(run["stats"])}
        if expected is not None:
            # Labels are matched without regard to case: a folder "fire" is the class "Fire".
            folded = [p.lower() for p in predicted]
            truth_folded = [t.lower() for t in expected]
            entry.update(
                accuracy=accuracy(truth_folded, folded),
                macro_f1=macro_f1(truth_folded, folded),
                confusion=confusion(truth_folded, folded),
            )
        report["models"].append(entry)
    for a, b in itertools.combinations(top1, 2):
        report["pairs"].append({
            "models": [a, b],
            "agreement": accuracy(top1[a], top1[b]),
            "cohen_kappa": cohen_kappa(top1[a], top1[b]),
        })
    return report


def _speed(stats: dict[str, Any]) -> dict[str, Any]:
    batches = sorted(stats.get("batch_seconds", []))
    seconds, images = stats.get("seconds", 0.0), stats.get("images", 0)
    return {
        "images": images,
        "seconds": seconds,
        "throughput_per_s": images / seconds if seconds else None,
        "latency_ms_per_image": 1000 * seconds / images if images else None,
        "median_batch_ms": 1000 * batches[len(batches) // 2] if batches else None,
    }


def markdown(report: dict[str, Any]) -> str:
    """The report as Markdown tables (for the Dagster UI)."""
    labelled = report["labelled"]
    head = "| model | " + ("accuracy | macro-F1 | " if labelled else "") + "images/s | ms per image |"
    rows = [head, "|---" * (head.count("|") - 1) + "|"]
    for m in report["models"]:
        quality = f"{m['accuracy']:.3f} | {m['macro_f1']:.3f} | " if labelled else ""
        rows.append(f"| {m['model']} | {quality}{_num(m['throughput_per_s'])} | {_num(m['latency_ms_per_image'])} |")
    if report["pairs"]:
        rows += ["", "| models | agreement | Cohen's kappa |", "|---|---|---|"]
        rows += [f"| {p['models'][0]} vs {p['models'][1]} | {p['agreement']:.3f} | {p['cohen_kappa']:.3f} |"
                 for p in report["pairs"]]
    return "\n".join(rows)


def chart(report: dict[str, Any], target: Path) -> Path:
    """A bar chart (PNG) of each model's accuracy and macro-F1, or agreement when unlabelled."""
    if report["labelled"]:
        series = [(m["model"], [("accuracy", m["accuracy"]), ("macro-F1", m["macro_f1"])]) for m in report["models"]]
    else:
        series = [(" vs ".join(p["models"]), [("agreement", p["agreement"])]) for p in report["pairs"]]
    width, height, top, bottom, bar = 120 + 160 * max(len(series), 1), 320, 30, 60, 40
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    colours = [(52, 101, 164), (245, 121, 0)]
    draw.line((60, height - bottom, width - 20, height - bottom), fill="black")
    for i, (name, bars) in enumerate(series):
        x = 80 + 160 * i
        for j, (_metric, value) in enumerate(bars):
            y = height - bottom - int((height - top - bottom) * value)
            draw.rectangle((x + j * bar, y, x + (j + 1) * bar - 4, height - bottom), fill=colours[j % 2])
            draw.text((x + j * bar, y - 14), f"{value:.2f}", fill="black")
        draw.text((x, height - bottom + 8), name[:24], fill="black")
    for j, (metric, _) in enumerate(series[0][1] if series else []):
        draw.rectangle((70 + 110 * j, 8, 80 + 110 * j, 18), fill=colours[j % 2])
        draw.text((84 + 110 * j, 6), metric, fill="black")
    target.parent.mkdir(parents=True, exist_ok=True)
    image.save(target, format="PNG")
    return target


def _num(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"
