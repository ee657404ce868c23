"""Model results as files an export can upload: predictions as JSON Lines or CSV rows, comparisons whole."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from orchestrator.datasets import Comparison, FileRef, Predictions


def result_files(result: Predictions | Comparison, work_dir: Path) -> list[FileRef]:
    """Predictions as `predictions.jsonl` (one line per input); a comparison as its JSON, page and charts."""
    work_dir.mkdir(parents=True, exist_ok=True)
    if isinstance(result, Predictions):
        path = work_dir / f"{_safe(result.model)}.predictions.jsonl"
        with path.open("w") as sink:
            for item in result.items:
                sink.write(json.dumps({"model": result.model, "task": result.task, **_public(item)}) + "\n")
        return [FileRef(path.name, path)]
    path = work_dir / "comparison.json"
    path.write_text(json.dumps(result.report, indent=1))
    files = [FileRef(path.name, path)]
    if result.html is not None:
        files.append(FileRef("report.html", result.html))
    files += [FileRef(f"charts/{name}.png", chart) for name, chart in result.charts.items()]
    files += [FileRef(name, path) for name, path in result.files.items()]  # maps: GeoTIFFs of the scenes
    return files


def prediction_columns(result: Predictions) -> list[str]:
    """The CSV columns of a model's predictions, by task."""
    if result.task == "tabular-regression":
        return ["name", "model", "value"]
    if result.task == "object-detection":
        return ["name", "model", "detections", "labels", "scores"]
    if result.task == "image-segmentation":
        return ["name", "model", "mask"]
    return ["name", "model", "label", "score", "labels", "scores"]


def prediction_row(result: Predictions, item: dict[str, Any]) -> dict[str, Any]:
    """One input's prediction as a flat row: the best label and its score first, then the top-k as JSON."""
    row: dict[str, Any] = {"name": item["name"], "model": result.model}
    if "value" in item:
        row["value"] = item["value"]
    elif "detections" in item:
        row.update(
            detections=len(item["detections"]),
            labels=json.dumps([d["label"] for d in item["detections"]]),
            scores=json.dumps([d["score"] for d in item["detections"]]),
        )
    elif "mask" in item:
        row["mask"] = Path(item["mask"]).name
    else:
        labels, scores = item.get("labels", []), item.get("scores", [])
        row.update(
            label=labels[0] if labels else None,
            score=scores[0] if scores else None,
            labels=json.dumps(labels),
            scores=json.dumps(scores),
        )
    return row


def _public(item: dict[str, Any]) -> dict[str, Any]:
    """A prediction without server paths (a mask is named by its file)."""
    return {**item, "mask": Path(item["mask"]).name} if "mask" in item else item


def _safe(name: str) -> str:
    return name.replace("/", "--")
