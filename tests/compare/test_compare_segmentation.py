"""Segmentation comparison: per-class IoU, mIoU and pixel accuracy on masks small enough to count by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from orchestrator import compare
from orchestrator.compare import ModelRun, Truth
from orchestrator.engine import OperationError

LABELS = ["background", "road", "car", "sky"]
ROAD_LEFT = np.array([[1, 1, 0, 0]] * 4)  # truth of image 1: road on the left half, background on the right
ROAD_WIDE = np.array([[1, 1, 1, 0]] * 4)  # predicted: road on three columns
CAR = np.full((4, 4), 2)  # truth of image 2: all car
CAR_ROAD = np.vstack([np.full((3, 4), 2), np.full((1, 4), 1)])  # predicted: car, but road on the bottom row


def save(folder: Path, name: str, mask: np.ndarray, mode: str = "L") -> str:
    path = folder / name
    Image.fromarray(mask.astype(np.uint8), mode=mode if mode != "L" else None).save(path)
    return str(path)


def run(folder: Path, model: str, masks: dict[str, np.ndarray], labels: list[str] = LABELS) -> ModelRun:
    items = [{"name": name, "mask": save(folder, f"{model}-{name}", mask)} for name, mask in masks.items()]
    return ModelRun(model, "image-segmentation", items, {"inputs": len(items), "seconds": 1.0}, labels)


def truth(folder: Path, masks: dict[str, np.ndarray], **options) -> Truth:
    return Truth(
        "masks", {name: save(folder, f"truth-{name}", mask) for name, mask in masks.items()}, source="masks/", **options
    )


def test_iou_by_hand_on_one_image(tmp_path: Path):
    report = compare.compare([run(tmp_path, "m", {"a.png": ROAD_WIDE})], truth(tmp_path, {"a.png": ROAD_LEFT}))
    [m] = report["models"]
    # road: 8 in common, union 12 → 2/3; background: 4 in common, union 8 → 1/2; car and sky absent: left out
    assert m["per_class_iou"] == pytest.approx({"road": 2 / 3, "background": 1 / 2})
    assert m["miou"] == pytest.approx(7 / 12)
    assert m["pixel_accuracy"] == pytest.approx(12 / 16)
    assert report["verdict"].startswith("m is best (mIoU 0.583")


def test_confusion_is_summed_over_images_before_the_iou(tmp_path: Path):
    report = compare.compare(
        [run(tmp_path, "m", {"a.png": ROAD_WIDE, "b.png": CAR_ROAD})],
        truth(tmp_path, {"a.png": ROAD_LEFT, "b.png": CAR}),
    )
    [m] = report["models"]
    # road: 8 in common, 8 true + 16 predicted → union 16; background 4 / 8; car 12 in common, union 16
    assert m["per_class_iou"] == pytest.approx({"road": 0.5, "background": 0.5, "car": 0.75})
    assert m["miou"] == pytest.approx((0.5 + 0.5 + 0.75) / 3)
    assert m["pixel_accuracy"] == pytest.approx(24 / 32)
    low, high = m["miou_ci"]
    assert low <= m["miou"] <= high


def test_ignored_pixels_and_classes_matched_by_name(tmp_path: Path):
    with_void = ROAD_LEFT.copy()
    with_void[:, 2] = 255  # the column the model gets wrong is "void" in the truth
    [m] = compare.compare([run(tmp_path, "m", {"a.png": ROAD_WIDE})], truth(tmp_path, {"a.png": with_void}))["models"]
    assert m["pixel_accuracy"] == 1.0 and m["miou"] == 1.0
    # the truth numbers its classes differently (0 = road, 1 = background); the model says "ROAD"
    renumbered = 1 - ROAD_LEFT
    model = run(tmp_path, "m", {"a.png": ROAD_WIDE}, labels=["Background", "ROAD"])
    [m] = compare.compare([model], truth(tmp_path, {"a.png": renumbered}, labels=["road", "background"]))["models"]
    assert m["per_class_iou"] == pytest.approx({"ROAD": 2 / 3, "Background": 1 / 2})


def test_significance_and_pixel_agreement(tmp_path: Path):
    names = [f"{i}.png" for i in range(20)]
    perfect = run(tmp_path, "perfect", dict.fromkeys(names, ROAD_LEFT))
    sloppy = run(tmp_path, "sloppy", dict.fromkeys(names, ROAD_WIDE))
    reference = truth(tmp_path, dict.fromkeys(names, ROAD_LEFT))
    report = compare.compare([sloppy, perfect], reference)
    assert report["best"] == "perfect" and "is significant (paired bootstrap p" in report["verdict"]
    [pair] = report["pairs"]
    assert pair["agreement"] == pytest.approx(12 / 16) and pair["kappa"] is None
    same = compare.compare([perfect, run(tmp_path, "twin", dict.fromkeys(names, ROAD_LEFT))], reference)
    assert same["pairs"][0]["p_value"] == 1.0
    unlabelled = compare.compare([sloppy, perfect], None)
    assert unlabelled["verdict"] == (
        "No ground truth: agreement only. sloppy and perfect agree on 75% of pixels (mean over images)."
    )
    rows = compare.find_disagreements([sloppy, perfect], reference, limit=2)
    assert [r["name"] for r in rows] == ["0.png", "1.png"] and rows[0]["disagreement"] == pytest.approx(0.25)
    assert rows[0]["predictions"] == {"sloppy": "road 75%, background 25%", "perfect": "background 50%, road 50%"}
    assert rows[0]["truth"] == "background 50%, road 50%"


def test_mask_errors_name_the_mask_and_the_sizes(tmp_path: Path):
    model = run(tmp_path, "m", {"a.png": ROAD_WIDE})
    with pytest.raises(OperationError, match=r"truth mask for 'a.png' is 8×4 pixels but model 'm' predicted 4×4"):
        compare.compare([model], truth(tmp_path, {"a.png": np.zeros((4, 8))}))
    other = run(tmp_path, "n", {"a.png": np.zeros((5, 4))})
    with pytest.raises(OperationError, match=r"'m' and 'n' gave masks of different sizes for 'a.png': 4×4 and 4×5"):
        compare.compare([model, other], None)
    rgb = Truth("masks", {"a.png": save(tmp_path, "rgb.png", np.zeros((4, 4, 3)), mode="RGB")})
    with pytest.raises(OperationError, match=r"truth mask for 'a.png' .*rgb.png' is a RGB image; expected a single"):
        compare.compare([model], rgb)
    with pytest.raises(OperationError, match=r"cannot read the truth mask for 'a.png' '.*missing.png'"):
        compare.compare([model], Truth("masks", {"a.png": str(tmp_path / "missing.png")}))
    with pytest.raises(OperationError, match=r"no entry for 1 of the 1 inputs: 'a.png'"):
        compare.compare([model], Truth("masks", {"b.png": "x.png"}))
