"""Local stand-in models for every task, so that every sample comparison runs offline and shows something.

The transformers models are tiny real models served the real way. Each pair compared in
sample_dags.txt is fitted (scripts/fitted_models.py) to other draws of the sample data's own
generators (scripts/comparison_samples.py), the second of the pair on less or noisier data, so
that the comparison names a winner: the image classifiers (the second took some smoke for normal),
the text classifiers (the second read 8 reports, the first 80), the detectors (the
second's boxes are a fifth too small) and the segmenters (the second never learnt smoke). The
zero-shot CLIP model stays random. The ONNX models are scikit-learn models trained on the sample
table's training rows, so their comparison on the held-out rows is a real one.
Idempotent: a model already in the models root is left alone.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import comparison_samples as samples
import fitted_models
import tiny_models

FIRE_LABELS = ("Fire", "Normal", "Smoke")
REPORT_LABELS = ("fire", "no fire")


def _training_rows() -> tuple[list[list[float]], list[str], list[float]]:
    rows = samples.fire_risk_rows(400, seed=1)
    return (
        [[r[f] for f in samples.FEATURES] for r in rows],
        [r["risk"] for r in rows],
        [r["burned_area"] for r in rows],
    )


def _tree_classifier(path: Path) -> Path:
    from sklearn.tree import DecisionTreeClassifier

    x, risk, _ = _training_rows()
    model = DecisionTreeClassifier(max_depth=2, random_state=0).fit(x, risk)
    return tiny_models.save_sklearn_onnx(model, path, len(samples.FEATURES), options={"zipmap": False})


def _forest_regressor(path: Path) -> Path:
    from sklearn.ensemble import RandomForestRegressor

    x, _, area = _training_rows()
    model = RandomForestRegressor(n_estimators=20, max_depth=6, random_state=0).fit(x, area)
    return tiny_models.save_sklearn_onnx(model, path, len(samples.FEATURES))


# Two land-cover segmenters of 4-band scenes (blue, green, red, near infrared; reflectance x 10000, as
# Sentinel-2's B02, B03, B04, B08 and the sample scene of scripts/sample_data.py), classes named as the
# sample labels (water, vegetation, bare). Class scores are 1x1 combinations of the bands: water where blue
# passes near infrared, vegetation where near infrared passes red by 0.1 (NDVI-like), bare where red passes
# blue. The second sets vegetation's margin lower and weighs bare ground less, then smooths its scores over
# 3x3 pixels: on the sample scene the first agrees with the labels everywhere, the second calls about 10 %
# of it (bare ground) vegetation, so the two differ as two real models would.
LAND_COVER_A = ([[1e-3, 0.0, 0.0, -1e-3], [0.0, 0.0, -1e-3, 1e-3], [-2e-3, 0.0, 2e-3, 0.0]], [0.0, -1.0, 0.0])
LAND_COVER_B = ([[1e-3, 0.0, 0.0, -1e-3], [0.0, 0.0, -1e-3, 1e-3], [-0.15e-3, 0.0, 0.15e-3, 0.0]], [0.0, -0.56, 0.0])


def land_cover_segmenter(path: Path, variant: str = "a", tile: int | None = None) -> Path:
    weights, bias = LAND_COVER_A if variant == "a" else LAND_COVER_B
    return tiny_models.make_band_segmenter(path, weights, bias, smooth=variant != "a", tile=tile)


def _photo_classifier(path: Path, seed: int, smoke_as_normal: float) -> Path:
    photos = samples.fire_photos(40, seed=seed)
    classes = [FIRE_LABELS.index(label) for _, label in photos]
    smoke = [i for i, c in enumerate(classes) if FIRE_LABELS[c] == "Smoke"]
    for i in smoke[: int(len(smoke) * smoke_as_normal)]:  # the worse twin learnt some smoke as normal
        classes[i] = FIRE_LABELS.index("Normal")
    return fitted_models.fit_image_classifier(path, [image for image, _ in photos], classes, FIRE_LABELS, seed=seed)


def _report_classifier(path: Path, seed: int, count: int) -> Path:
    texts = samples.reports(count, seed=seed)  # its words are those of these reports
    classes = [REPORT_LABELS.index(label) for _, label in texts]
    return fitted_models.fit_text_classifier(path, [text for text, _ in texts], classes, REPORT_LABELS, seed=seed)


def _detector(path: Path, seed: int, count: int, box_scale: float) -> Path:
    scenes = samples.grid_scenes(count, seed=seed)
    boxes = [_fraction(samples.cell_box(k, box_scale)) for k in range(4)]
    return fitted_models.grid_detector(
        path, [image for image, _ in scenes], [cells for _, cells in scenes], boxes, samples.DETECTION_LABELS
    )


def _fraction(box: tuple[float, float, float, float]) -> list[float]:
    x, y, w, h = box
    return [(x + w / 2) / samples.TILE, (y + h / 2) / samples.TILE, w / samples.TILE, h / samples.TILE]


def _segmenter(path: Path, seed: int, learns_smoke: bool) -> Path:
    import numpy as np

    pairs = samples.patches(24, seed=seed)
    masks = [np.asarray(mask) for _, mask in pairs]
    if not learns_smoke:  # the worse twin's training masks call smoke background
        masks = [np.where(m == samples.SEGMENTATION_LABELS.index("smoke"), 0, m) for m in masks]
    return fitted_models.fit_semantic_segmenter(
        path, [image for image, _ in pairs], masks, samples.SEGMENTATION_LABELS, seed=seed
    )


def _makers() -> dict[str, Callable[[Path], Path]]:
    x, risk, area = _training_rows()
    return {
        "fire-vit-a": lambda p: _photo_classifier(p, seed=10, smoke_as_normal=0.0),
        "fire-vit-b": lambda p: _photo_classifier(p, seed=11, smoke_as_normal=0.9),
        "fire-clip": lambda p: tiny_models.make_zero_shot_classifier(p, seed=12),
        "box-detector-a": lambda p: _detector(p, seed=13, count=60, box_scale=1.0),
        "box-detector-b": lambda p: _detector(p, seed=14, count=8, box_scale=0.8),
        "patch-segmenter-a": lambda p: _segmenter(p, seed=15, learns_smoke=True),
        "patch-segmenter-b": lambda p: _segmenter(p, seed=16, learns_smoke=False),
        "report-classifier-a": lambda p: _report_classifier(p, seed=17, count=80),
        "report-classifier-b": lambda p: _report_classifier(p, seed=18, count=8),
        "fire-risk-logreg.onnx": lambda p: tiny_models.make_tabular_classifier(p, data=(x, risk)),
        "fire-risk-tree.onnx": _tree_classifier,
        "burned-area-linear.onnx": lambda p: tiny_models.make_tabular_regressor(p, data=(x, area)),
        "burned-area-forest.onnx": _forest_regressor,
        "land-cover-a.onnx": lambda p: land_cover_segmenter(p, "a"),
        "land-cover-b.onnx": lambda p: land_cover_segmenter(p, "b"),
    }


def write_sample_models(models_root: Path) -> list[str]:
    """Make every sample model missing from `models_root`; return the names made."""
    made = []
    for name, make in _makers().items():
        target = models_root / name
        if target.exists():
            continue
        # Made beside, then renamed: an interrupted run never leaves half a model behind.
        partial = models_root / f".{name}.partial"
        make(partial)
        partial.rename(target)
        made.append(name)
    return made


if __name__ == "__main__":
    root = Path(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("CONSTELLATION_MODELS_ROOT", "models"))
    made = write_sample_models(root)
    print(f"sample models in {root}: {', '.join(made) if made else 'all present'}")
