"""Detection comparison: mAP against pycocotools' COCOeval run directly on a small hand-made COCO set."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from orchestrator import compare
from orchestrator.compare import ModelRun, Truth
from orchestrator.compare import coco as coco_truth
from orchestrator.compare.detection import Resampler, evaluation, resample_count
from orchestrator.engine import OperationError

CATEGORIES = [{"id": 1, "name": "person"}, {"id": 2, "name": "dog"}, {"id": 3, "name": "cat"}]
IMAGES = 20


def ground_truth(folder: Path) -> Path:
    """20 images of 100×100: a person in each, a dog in every other one (no cats)."""
    images, annotations = [], []
    for i in range(IMAGES):
        images.append({"id": i + 1, "file_name": f"img{i}.jpg", "width": 100, "height": 100})
        annotations.append(
            {
                "id": len(annotations) + 1,
                "image_id": i + 1,
                "category_id": 1,
                "bbox": [10, 10, 30, 40],
                "area": 1200,
                "iscrowd": 0,
            }
        )
        if i % 2:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "category_id": 2,
                    "bbox": [50, 50, 20, 20],
                    "area": 400,
                    "iscrowd": 0,
                }
            )
    path = folder / "instances.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": CATEGORIES}))
    return path


def detections(i: int, quality: str) -> list[dict]:
    """A model's boxes on image i: 'good' finds everything (slightly off), 'poor' misses dogs and people."""
    found = []
    if quality == "good" or i % 3:
        found.append({"label": "Person", "score": 0.9, "box": [11, 10, 41, 52]})
    if i % 2 and (quality == "good" or i % 4 == 1):
        found.append({"label": "dog", "score": 0.8, "box": [50, 51, 70, 70]})
    if i % 5 == 0:
        found.append({"label": "dog", "score": 0.4 if quality == "good" else 0.95, "box": [0, 0, 10, 10]})
    return found


def run(model: str, quality: str) -> ModelRun:
    items = [
        {"name": f"photos/img{i}.jpg", "width": 100, "height": 100, "detections": detections(i, quality)}
        for i in range(IMAGES)
    ]
    return ModelRun(
        model, "object-detection", items, {"inputs": IMAGES, "seconds": 2.0, "batch_seconds": [1, 1]}, ["person", "dog"]
    )


def reference(path: Path, quality: str) -> COCOeval:
    """COCOeval exactly as its documentation runs it."""
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(path))
        results = []
        for i in range(IMAGES):
            for d in detections(i, quality):
                x0, y0, x1, y1 = d["box"]
                results.append(
                    {
                        "image_id": i + 1,
                        "category_id": 1 if d["label"] == "Person" else 2,
                        "bbox": [x0, y0, x1 - x0, y1 - y0],
                        "score": d["score"],
                    }
                )
        ev = COCOeval(gt, gt.loadRes(results), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def test_map_and_per_class_ap_are_cocoevals(tmp_path: Path):
    path = ground_truth(tmp_path)
    report = compare.compare([run("detr", "good"), run("yolo", "poor")], Truth("coco", coco=path, source="COCO"))
    assert report["kind"] == "detection" and report["headline"] == "map" and report["iou_threshold"] == 0.5
    for entry, quality in zip(report["models"], ["good", "poor"], strict=True):
        ev = reference(path, quality)
        assert entry["map"] == pytest.approx(ev.stats[0]) and entry["map_50"] == pytest.approx(ev.stats[1])
        expected = {}
        for k, name in enumerate(["person", "dog", "cat"]):
            precision = ev.eval["precision"][:, :, k, 0, -1]
            if (precision > -1).any():
                expected[name] = float(np.mean(precision[precision > -1]))
        assert entry["per_class_ap"] == pytest.approx(expected) and "cat" not in entry["per_class_ap"]
        low, high = entry["map_ci"]
        assert low <= entry["map"] <= high
    assert report["models"][0]["map"] > report["models"][1]["map"]


def test_a_resample_is_cocoeval_over_the_repeated_images(tmp_path: Path):
    path = ground_truth(tmp_path)
    gt = coco_truth.load(path)
    names = [f"img{i}.jpg" for i in range(IMAGES)]
    images = coco_truth.match_images(gt, names, "test")
    dt, _ = coco_truth.results(gt, run("m", "poor"), {f"photos/{n}": images[n] for n in names}, "test")
    ev = evaluation(gt, dt, list(images.values()))
    assert Resampler(ev)(np.arange(IMAGES)) == pytest.approx(ev.stats[0])
    # a resample with repeats equals COCOeval on a data set that really holds those images twice
    picks = [0, 0, 3, 5, 5, 5, 8, 13, 13, 19]
    data = json.loads(path.read_text())
    images_, annotations, results = [], [], []
    for new_id, i in enumerate(picks, start=1):
        images_.append({"id": new_id, "file_name": f"copy{new_id}.jpg", "width": 100, "height": 100})
        for ann in data["annotations"]:
            if ann["image_id"] == i + 1:
                annotations.append({**ann, "id": len(annotations) + 1, "image_id": new_id})
        for d in detections(i, "poor"):
            x0, y0, x1, y1 = d["box"]
            results.append(
                {
                    "image_id": new_id,
                    "category_id": 1 if d["label"] == "Person" else 2,
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "score": d["score"],
                }
            )
    repeated = tmp_path / "repeated.json"
    repeated.write_text(json.dumps({"images": images_, "annotations": annotations, "categories": CATEGORIES}))
    with contextlib.redirect_stdout(io.StringIO()):
        gt2 = COCO(str(repeated))
        direct = COCOeval(gt2, gt2.loadRes(results), "bbox")
        direct.evaluate()
        direct.accumulate()
        direct.summarize()
    assert Resampler(ev)(np.array(picks)) == pytest.approx(direct.stats[0])
    assert resample_count(1000, 500) == 200 and resample_count(100, 500) == 100
    assert resample_count(1000, 200_000) == 100 and resample_count(1000, 10**8) == 50


def test_significance_and_agreement(tmp_path: Path):
    truth = Truth("coco", coco=ground_truth(tmp_path), source="COCO")
    report = compare.compare([run("yolo", "poor"), run("detr", "good")], truth)
    assert report["best"] == "detr" and "is significant (paired bootstrap p" in report["verdict"]
    assert report["bootstrap"]["resamples"] == 200 and report["bootstrap"]["unit"] == "images"
    same = compare.compare([run("detr", "good"), run("detr-copy", "good")], truth)
    assert same["pairs"][0]["p_value"] == 1.0 and same["pairs"][0]["agreement"] == 1.0
    assert "is not significant" in same["verdict"] or "tie on mAP" in same["verdict"]
    [pair] = report["pairs"]
    # per image F1 of the same-label matching at IoU 0.5, by hand from detections(): every box of the
    # poor model has a box of the same label at the same place in the good one's, so all of them match
    f1 = []
    for i in range(IMAGES):
        poor, good = detections(i, "poor"), detections(i, "good")
        f1.append(2 * len(poor) / (len(poor) + len(good)))
    assert pair["agreement"] == pytest.approx(np.mean(f1)) and pair["kappa"] is None
    unlabelled = compare.compare([run("yolo", "poor"), run("detr", "good")], None, iou_threshold=0.5)
    assert unlabelled["verdict"].startswith(
        "No ground truth: agreement only. yolo and detr agree with a mean matched-box F1 of "
    )


def test_disagreements_show_boxes_and_truth(tmp_path: Path):
    truth = Truth("coco", coco=ground_truth(tmp_path), source="COCO")
    rows = compare.find_disagreements([run("yolo", "poor"), run("detr", "good")], truth, limit=4)
    assert len(rows) == 4 and rows == sorted(rows, key=lambda r: -r["disagreement"])
    # images where the poor model found nothing at all come first, in input order
    assert [r["name"] for r in rows] == ["photos/img3.jpg", "photos/img6.jpg", "photos/img12.jpg", "photos/img18.jpg"]
    assert rows[0]["disagreement"] == 1.0
    assert rows[0]["predictions"] == {
        "yolo": "nothing",
        "detr": "Person 0.90 [11, 10, 41, 52]; dog 0.80 [50, 51, 70, 70]",
    }
    assert rows[0]["truth"] == "person [10, 10, 40, 50]; dog [50, 50, 70, 70]"


def test_errors_name_the_model_the_inputs_and_what_was_expected(tmp_path: Path):
    path = ground_truth(tmp_path)
    truth = Truth("coco", coco=path, source="instances.json")
    stranger = run("detr", "good")
    stranger.items[4]["name"] = "elsewhere/other.jpg"
    with pytest.raises(OperationError, match=r"instances.json' has no image for 1 of the 20 inputs: 'elsewhere/other"):
        compare.compare([stranger], truth)
    labels = run("detr", "good")
    for item in labels.items:
        for d in item["detections"]:
            d["label"] = "LABEL_0"
    with pytest.raises(OperationError, match=r"none of model 'detr'.*'LABEL_0'.*'cat', 'dog', 'person'"):
        compare.compare([labels], truth)
    sized = run("detr", "good")
    sized.items[2]["width"] = 640
    with pytest.raises(OperationError, match=r"model 'detr' saw 'photos/img2.jpg' as 640×100 pixels.*100×100"):
        compare.compare([sized], truth)
    boxed = run("detr", "good")
    boxed.items[1]["detections"][0]["box"] = [1, 2]
    with pytest.raises(OperationError, match=r"model 'detr': a detection for 'photos/img1.jpg' has box \[1, 2\]"):
        compare.compare([boxed], truth)
    data = json.loads(path.read_text())
    data["images"][1]["file_name"] = "img0.jpg"
    path.write_text(json.dumps(data))
    with pytest.raises(OperationError, match="several images share the file_name 'img0.jpg'"):
        compare.compare([run("detr", "good")], truth)
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(OperationError, match="cannot read the COCO ground truth"):
        compare.compare([run("detr", "good")], Truth("coco", coco=tmp_path / "broken.json"))
