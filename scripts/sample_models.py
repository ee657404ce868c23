"""Local stand-in models for every task, so that every sample comparison runs offline.

The transformers models are tiny and randomly initialised (what they predict means nothing,
but they are real models served the real way); the ONNX models are scikit-learn models trained
on the sample table's training rows, so their comparison on the held-out rows is a real one.
Idempotent: a model already in the models root is left alone.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import comparison_samples as samples
import tiny_models

FIRE_LABELS = ("Fire", "Normal", "Smoke")
REPORT_LABELS = ("fire", "no fire")


def _training_rows() -> tuple[list[list[float]], list[str], list[float]]:
    rows = samples.fire_risk_rows(400, seed=1)
    return ([[r[f] for f in samples.FEATURES] for r in rows], [r["risk"] for r in rows],
            [r["burned_area"] for r in rows])


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


def _makers() -> dict[str, Callable[[Path], Path]]:
    x, risk, area = _training_rows()
    return {
        "fire-vit-a": lambda p: tiny_models.make_image_classifier(p, FIRE_LABELS, seed=10),
        "fire-vit-b": lambda p: tiny_models.make_image_classifier(p, FIRE_LABELS, seed=11),
        "fire-clip": lambda p: tiny_models.make_zero_shot_classifier(p, seed=12),
        "box-detector-a": lambda p: tiny_models.make_object_detector(p, samples.DETECTION_LABELS, seed=13),
        "box-detector-b": lambda p: tiny_models.make_object_detector(p, samples.DETECTION_LABELS, seed=14),
        "patch-segmenter-a": lambda p: tiny_models.make_semantic_segmenter(p, samples.SEGMENTATION_LABELS, seed=15),
        "patch-segmenter-b": lambda p: tiny_models.make_semantic_segmenter(p, samples.SEGMENTATION_LABELS, seed=16),
        "report-classifier-a": lambda p: tiny_models.make_text_classifier(p, REPORT_LABELS, seed=17),
        "report-classifier-b": lambda p: tiny_models.make_text_classifier(p, REPORT_LABELS, seed=18),
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
