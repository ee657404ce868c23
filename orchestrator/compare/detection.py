"""Object detection: boxes against COCO ground truth, with pycocotools.

Per model: COCO mAP@[.5:.95] (`map`, COCOeval stats[0]), mAP@.5 (`map_50`, stats[1]) and the
AP of each category (from eval['precision'] over every IoU threshold, area "all", 100
detections, absent entries (-1) ignored). Intervals: a bootstrap over images, which reuses the
per-image matching of one `COCOeval.evaluate()` and re-runs only `accumulate()` on each resample.

Agreement of two models (no truth needed): for each image, their boxes are matched greedily
(highest score first, same label, IoU ≥ `iou_threshold`, IoU from pycocotools) and scored with
F1 = 2·matched / (boxes of one + boxes of the other), 1 when neither found anything; the
agreement is the mean over images. Kappa does not apply (null).
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from orchestrator.compare import coco, stats
from orchestrator.compare.inputs import ModelRun, Truth, items_by_name

#: The detection bootstrap keeps resamples × detections (of all models) under this budget...
DETECTION_BUDGET = 20_000_000
#: ...but never uses fewer resamples than this.
MIN_RESAMPLES = 50
#: Each image's own AP (Friedman's test of three detectors or more) for at most this many images × models.
PER_IMAGE_AP_BUDGET = 20_000


def evaluation(gt: COCO, dt: COCO, image_ids: Sequence[int]) -> COCOeval:
    """The COCOeval of one model's results over the given images, evaluated, accumulated and summarised."""
    ev = COCOeval(gt, dt, "bbox")
    ev.params.imgIds = list(image_ids)
    with coco.quiet():
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def per_class_ap(ev: COCOeval, gt: COCO) -> dict[str, float]:
    """AP of each category with ground truth in the images: precision over all IoUs, area all, max detections."""
    precision = ev.eval["precision"]
    result = {}
    for k, category in enumerate(ev.params.catIds):
        values = precision[:, :, k, 0, -1]
        values = values[values > -1]
        if values.size:
            result[str(gt.cats[category]["name"])] = float(np.mean(values))
    return result


class Resampler:
    """mAP@[.5:.95] over resamples of the evaluated images (positions in the evaluated image list).

    The per-image results of `evaluate()` are reused: only `accumulate()` runs again, over the
    resampled images (a repeated image counts again), for area "all" and the largest max-detections.
    """

    def __init__(self, ev: COCOeval):
        pe = ev._paramsEval
        cells = np.empty(len(ev.evalImgs), dtype=object)
        cells[:] = ev.evalImgs
        self.cells = cells.reshape(len(pe.catIds), len(pe.areaRng), len(pe.imgIds))[:, 0, :]  # area "all" first
        self.ev = ev
        self.narrow = copy.copy(pe)
        self.narrow.areaRng, self.narrow.areaRngLbl = pe.areaRng[:1], pe.areaRngLbl[:1]
        self.narrow.maxDets = pe.maxDets[-1:]

    def __call__(self, positions: np.ndarray) -> float:
        resample = copy.copy(self.ev)
        resample.evalImgs = self.cells[:, np.asarray(positions, dtype=np.int64)].ravel().tolist()
        narrow = copy.copy(self.narrow)
        narrow.imgIds = list(range(len(positions)))
        resample._paramsEval, resample.params = narrow, copy.copy(narrow)
        with coco.quiet():
            resample.accumulate()
        precision = resample.eval["precision"][:, :, :, 0, 0]
        precision = precision[precision > -1]
        return float(np.mean(precision)) if precision.size else float("nan")


def resample_count(n_resamples: int, detections: int) -> int:
    """Resamples for the detection bootstrap: at most 200, fewer (not below 50) for very many detections.

    Each resample re-runs `accumulate()`, whose cost grows with the detections; the count depends
    only on the data, so a comparison stays reproducible.
    """
    return min(n_resamples, stats.IMAGE_RESAMPLES, max(MIN_RESAMPLES, DETECTION_BUDGET // max(detections, 1)))


class Boxes:
    """One model's detections on one image: COCO boxes [x, y, w, h], case-folded labels, scores."""

    def __init__(self, run: ModelRun, name: str, detections: list[dict]):
        self.xywh = np.array([coco.box(run, name, d) for d in detections], dtype=float).reshape(-1, 4)
        self.labels = np.array([str(d.get("label", "")).casefold() for d in detections], dtype=object)
        self.scores = np.array([float(d.get("score", 1.0)) for d in detections], dtype=float)

    def __len__(self) -> int:
        return len(self.scores)


def matched_f1(first: Boxes, second: Boxes, iou_threshold: float) -> float:
    """How far two sets of detections agree: F1 of a greedy same-label matching at the IoU threshold."""
    if not len(first) and not len(second):
        return 1.0
    if not len(first) or not len(second):
        return 0.0
    iou = np.asarray(mask_utils.iou(first.xywh, second.xywh, [0] * len(second)), dtype=float)
    iou = iou.reshape(len(first), len(second))
    free = np.ones(len(second), dtype=bool)
    matched = 0
    for i in np.argsort(-first.scores, kind="stable"):
        candidates = free & (second.labels == first.labels[i]) & (iou[i] >= iou_threshold)
        if candidates.any():
            free[int(np.argmax(np.where(candidates, iou[i], -1.0)))] = False
            matched += 1
    return 2 * matched / (len(first) + len(second))


def _pair_agreements(runs: Sequence[ModelRun], names: Sequence[str], iou_threshold: float) -> dict:
    """Per pair of runs, the matched F1 on each image (in the order of `names`)."""
    boxes = []
    for run in runs:
        by_name = items_by_name(run)
        boxes.append({n: Boxes(run, n, by_name[n].get("detections") or []) for n in names})
    return {
        (a, b): np.array([matched_f1(boxes[a][n], boxes[b][n], iou_threshold) for n in names])
        for a, b in itertools.combinations(range(len(runs)), 2)
    }


def evaluate(
    runs: Sequence[ModelRun],
    names: Sequence[str],
    truth: Truth | None,
    *,
    iou_threshold: float,
    seed: int,
    n_resamples: int,
    **_: Any,
) -> stats.Evaluation:
    models: list[dict[str, Any]] = [{} for _ in runs]
    boot, resamples = None, None
    if truth is not None:
        source = repr(truth.source or str(truth.coco))
        gt = coco.load_truth(truth)
        images = coco.match_images(gt, names, source)
        evals = []
        for i, run in enumerate(runs):
            dt, ignored = coco.results(gt, run, images, source)
            ev = evaluation(gt, dt, [images[n] for n in names])
            evals.append(ev)
            models[i] = {
                "map": float(ev.stats[0]) if ev.stats[0] >= 0 else None,
                "map_50": float(ev.stats[1]) if ev.stats[1] >= 0 else None,
                "per_class_ap": per_class_ap(ev, gt),
            }
            if ignored:
                models[i]["ignored_labels"] = ignored
        position = {image: j for j, image in enumerate(evals[0]._paramsEval.imgIds)}
        positions = np.array([position[images[n]] for n in names])
        resamplers = [Resampler(ev) for ev in evals]

        def statistic(idx: np.ndarray) -> np.ndarray:
            return np.array([[resample(positions[row]) for row in idx] for resample in resamplers])

        resamples = resample_count(n_resamples, sum(len(ev.cocoDt.anns) for ev in evals))
        boot = stats.bootstrap(statistic, len(names), n_resamples=resamples, seed=seed)
        for i in range(len(runs)):
            models[i]["map_ci"] = boot.interval(i) if boot else None
    pairs = []
    for (a, b), f1 in _pair_agreements(runs, names, iou_threshold).items():
        pair: dict[str, Any] = {
            "models": [runs[a].model, runs[b].model],
            "agreement": float(np.mean(f1)),
            "kappa": None,
            "cohen_kappa": None,
        }
        if truth is not None:
            pair["p_value"] = stats.paired_p(boot.distribution[a], boot.distribution[b]) if boot else None
        pairs.append(pair)
    if truth is None:
        return stats.Evaluation(models, pairs, None, "images")
    losses = None
    if len(runs) >= 3 and len(names) * len(runs) <= PER_IMAGE_AP_BUDGET:  # for Friedman's test of three or more
        losses = 1 - np.array([[resample(positions[j : j + 1]) for j in range(len(names))] for resample in resamplers])
    return stats.Evaluation(
        models,
        pairs,
        resamples if boot else None,
        "images",
        distributions={"map": boot.distribution} if boot else {},
        losses=losses,
    )


def summary(detections: list[tuple[str, float | None, Sequence[float]]], limit: int = 6) -> str:
    """`person 0.91 [10, 12, 48, 90]; dog 0.80 [...]` (best first, at most `limit`); `nothing` when empty."""
    if not detections:
        return "nothing"
    ordered = sorted(detections, key=lambda d: -(d[1] if d[1] is not None else 1.0))
    shown = [
        f"{label}{'' if score is None else f' {score:.2f}'} [{', '.join(f'{v:.0f}' for v in box)}]"
        for label, score, box in ordered[:limit]
    ]
    more = f"; and {len(ordered) - limit} more" if len(ordered) > limit else ""
    return "; ".join(shown) + more


def disagreements(
    runs: Sequence[ModelRun], names: Sequence[str], truth: Truth | None, *, iou_threshold: float = 0.5, **_: Any
) -> list[dict]:
    """Images whose detections differ between models (lowest mean matched F1 first)."""
    agreements = _pair_agreements(runs, names, iou_threshold)
    mean = np.mean(np.array(list(agreements.values())), axis=0) if agreements else np.ones(len(names))
    shown_truth: dict[str, str] = {}
    if truth is not None:
        gt = coco.load_truth(truth)
        images = coco.match_images(gt, names, repr(truth.source or str(truth.coco)))
        for name, image in images.items():
            boxes: list[tuple[str, float | None, Sequence[float]]] = [
                (
                    gt.cats[a["category_id"]]["name"],
                    None,
                    [a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]],
                )
                for a in gt.imgToAnns[image]
            ]
            shown_truth[name] = summary(boxes)
    items = [items_by_name(run) for run in runs]
    rows = []
    for j, name in enumerate(names):
        if mean[j] >= 1.0:
            continue
        shown = {}
        for run, by_name in zip(runs, items, strict=True):
            found = by_name[name].get("detections") or []
            shown[run.model] = summary(
                [(str(d.get("label", "")), float(d.get("score", 1.0)), d.get("box") or []) for d in found]
            )
        rows.append(
            {"name": name, "predictions": shown, "truth": shown_truth.get(name), "disagreement": float(1.0 - mean[j])}
        )
    return rows
