"""Semantic segmentation: class-id masks against truth masks.

Classes are matched by name (case-folded) through each model's `labels` (class names by id); a
mask id without a name is the class `#id`. The truth's ids are named by `Truth.labels`, or, when
that is empty, by each model's own labels. Truth pixels equal to `Truth.ignore_index` are not scored.

Per image and model, the confusion counts of truth against prediction (one `np.bincount` of
truth × classes + prediction, as scikit-learn's `confusion_matrix` counts them); summed over
images it gives per-class IoU = diag / (row + col − diag), the mean IoU over the classes present
in the truth or the prediction (`miou`), and `pixel_accuracy`. The bootstrap over images keeps
each image's diagonal, row and column sums, so a resample is a weighted sum.

Agreement of two models (no truth needed): the share of pixels with the same class, averaged
over images. Kappa does not apply (null).
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError
from scipy.stats import DegenerateDataWarning

from orchestrator.compare import perclass, stats
from orchestrator.compare.inputs import ModelRun, Truth, items_by_name
from orchestrator.engine import OperationError


def load_mask(path: Any, what: str) -> np.ndarray:
    """A PNG of class ids as a 2-D integer array."""
    try:
        with Image.open(Path(str(path))) as image:
            mode, array = image.mode, np.asarray(image)
    except (OSError, UnidentifiedImageError, ValueError) as error:
        raise OperationError(f"cannot read {what} {str(path)!r}: {error}") from error
    if array.ndim != 2:
        raise OperationError(
            f"{what} {str(path)!r} is a {mode} image; expected a single-channel PNG of class ids (mode L, I;16 or P)"
        )
    if array.size and array.min() < 0:
        raise OperationError(f"{what} {str(path)!r} has negative values; class ids are 0 or more")
    return array.astype(np.int64)


class Vocabulary:
    """Class names (case-folded) shared by every model and the truth, each with one index."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.index: dict[str, int] = {}

    def of(self, mask: np.ndarray, labels: Sequence[str]) -> np.ndarray:
        """The mask with every class id replaced by the index of its class name."""
        table = np.zeros(int(mask.max(initial=0)) + 1, dtype=np.int32)
        for class_id in np.flatnonzero(np.bincount(mask.ravel(), minlength=table.size)).tolist():
            name = str(labels[class_id]) if class_id < len(labels) else f"#{class_id}"
            table[class_id] = self.index.setdefault(name.casefold(), len(self.names))
            if table[class_id] == len(self.names):
                self.names.append(name)
        return table[mask]


class Scan:
    """One pass over every image: per-image confusion sums, pair agreements and what each mask shows."""

    def __init__(self, runs: Sequence[ModelRun], names: Sequence[str], truth: Truth | None):
        self.vocab = Vocabulary()
        self.names = list(names)
        self.models = [run.model for run in runs]
        m, n = len(runs), len(names)
        self.agreement = {pair: np.zeros(n) for pair in itertools.combinations(range(m), 2)}
        self.shown: list[dict[str, str]] = []
        self.truth_shown: list[str | None] = []
        sums: list[list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = []  # per image, per model: the confusion's
        # diagonal, truth (row) and predicted (column) counts
        items = [items_by_name(run) for run in runs]
        for j, name in enumerate(names):
            masks = []
            for run, by_name in zip(runs, items, strict=True):
                path = by_name[name].get("mask")
                if not path:
                    raise OperationError(f"model {run.model!r} has no 'mask' for {name!r}")
                masks.append(self.vocab.of(load_mask(path, f"model {run.model!r}'s mask for {name!r}"), run.labels))
                if masks[-1].shape != masks[0].shape:
                    raise OperationError(
                        f"models {runs[0].model!r} and {run.model!r} gave masks of different sizes for {name!r}: "
                        f"{_size(masks[0])} and {_size(masks[-1])}"
                    )
            self.shown.append({run.model: self.summary(mask) for run, mask in zip(runs, masks, strict=True)})
            for a, b in self.agreement:
                self.agreement[(a, b)][j] = float(np.mean(masks[a] == masks[b]))
            if truth is None:
                continue
            raw = load_mask(truth.values[name], f"the truth mask for {name!r}")
            if raw.shape != masks[0].shape:
                raise OperationError(
                    f"the truth mask for {name!r} is {_size(raw)} pixels but model {runs[0].model!r} predicted "
                    f"{_size(masks[0])}; truth masks must have the size of the images"
                )
            scored = (raw != truth.ignore_index).ravel() if truth.ignore_index is not None else None
            named: dict[tuple[str, ...], np.ndarray] = {}
            row: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
            for run, mask in zip(runs, masks, strict=True):
                key = tuple(truth.labels or run.labels)
                if key not in named:
                    named[key] = self.vocab.of(raw, key).ravel()
                    named[key] = named[key] if scored is None else named[key][scored]
                predicted = mask.ravel() if scored is None else mask.ravel()[scored]
                size = len(self.vocab.names)
                matrix = np.bincount(named[key] * size + predicted, minlength=size * size).reshape(size, size)
                row.append((np.diag(matrix), matrix.sum(axis=1), matrix.sum(axis=0)))
            self.truth_shown.append(self.summary(next(iter(named.values()))))
            sums.append(row)
        self.sums = None
        if truth is not None:
            g = len(self.vocab.names)
            self.sums = np.zeros((3, n, m, g))  # diagonal, truth (row) and predicted (column) counts
            for j, row in enumerate(sums):
                for i, counts in enumerate(row):
                    for part, values in enumerate(counts):
                        self.sums[part, j, i, : values.size] = values

    def summary(self, mask: np.ndarray) -> str:
        """The largest classes of a mask with their share of the pixels: `road 45%, car 20%, sky 12%`."""
        return self.summary_of(np.bincount(mask.ravel(), minlength=len(self.vocab.names)))

    def summary_of(self, counts: np.ndarray) -> str:
        """`summary` from a mask's pixel count per class."""
        order = [k for k in np.argsort(-counts, kind="stable")[:3] if counts[k]]
        total = max(int(counts.sum()), 1)
        return ", ".join(f"{self.vocab.names[k]} {100 * counts[k] / total:.0f}%" for k in order)

    @classmethod
    def of(cls, runs: Sequence[ModelRun], names: Sequence[str], truth: Truth | None) -> Scan:
        """The scan the truth's maker already counted for these runs and images, else a new one."""
        found = truth.counted if truth is not None else None
        if isinstance(found, Scan) and found.names == list(names) and found.models == [run.model for run in runs]:
            return found
        return cls(runs, names, truth)

    @classmethod
    def counted(
        cls,
        names: Sequence[str],
        models: Sequence[str],
        classes: Sequence[str],
        counts: np.ndarray,
        agreement: Sequence[Sequence[float]],
        shown: Sequence[Sequence[np.ndarray]],
        truth_shown: Sequence[np.ndarray],
    ) -> Scan:
        """A scan from counts made elsewhere (geotruth.align), over images `names` of `models`.

        counts: images × models × classes × classes confusion counts (truth rows); agreement: per image, each
        pair's share of equal pixels (in itertools.combinations order); shown / truth_shown: per image, each
        model's and the truth's pixel count per class (of the classes known at that image, a prefix of `classes`).
        """
        scan = cls.__new__(cls)
        scan.vocab = Vocabulary()
        scan.vocab.names = list(classes)
        scan.vocab.index = {name.casefold(): k for k, name in enumerate(classes)}
        scan.names, scan.models = list(names), list(models)
        pairs = list(itertools.combinations(range(len(models)), 2))
        scan.agreement = {pair: np.array([row[p] for row in agreement], dtype=float) for p, pair in enumerate(pairs)}
        g = len(classes)

        def padded(values: np.ndarray) -> np.ndarray:
            return np.pad(values, (0, g - values.size))

        scan.shown = [
            {model: scan.summary_of(padded(c)) for model, c in zip(models, row, strict=True)} for row in shown
        ]
        scan.truth_shown = [scan.summary_of(padded(c)) for c in truth_shown]
        counts = np.asarray(counts)
        scan.sums = np.stack([np.diagonal(counts, axis1=2, axis2=3), counts.sum(axis=3), counts.sum(axis=2)]).astype(
            float
        )
        return scan


def _size(mask: np.ndarray) -> str:
    return f"{mask.shape[1]}×{mask.shape[0]}"


def scores(diag: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """From summed confusion counts (..., classes): per-class IoU (NaN when absent from both), mIoU, pixel accuracy."""
    present = rows + cols > 0
    union = np.where(present, rows + cols - diag, 1)
    iou = np.where(present, diag / union, np.nan)
    count = present.sum(axis=-1)
    miou = np.where(count > 0, np.where(present, iou, 0.0).sum(axis=-1) / np.maximum(count, 1), np.nan)
    total = rows.sum(axis=-1)
    accuracy = np.where(total > 0, diag.sum(axis=-1) / np.where(total > 0, total, 1), np.nan)
    return iou, miou, accuracy


def evaluate(
    runs: Sequence[ModelRun], names: Sequence[str], truth: Truth | None, *, seed: int, n_resamples: int, **_: Any
) -> stats.Evaluation:
    scan = Scan.of(runs, names, truth)
    models: list[dict[str, Any]] = [{} for _ in runs]
    boot = None
    if scan.sums is not None:
        n, m, g = scan.sums.shape[1:]
        flat = scan.sums.reshape(3, n, m * g)
        iou, miou, accuracy = scores(*scan.sums.sum(axis=1))

        def statistic(idx: np.ndarray) -> np.ndarray:
            weights = stats.resample_weights(idx, n)
            diag, rows, cols = (weights @ part for part in flat)
            per_class, miou, accuracy = scores(*(x.reshape(-1, m, g) for x in (diag, rows, cols)))
            return np.concatenate([miou.T, accuracy.T, per_class.reshape(-1, m * g).T])  # then model × class

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DegenerateDataWarning)  # a class a resample lacks: its row is NaN
            boot = stats.bootstrap(statistic, n, n_resamples=min(n_resamples, stats.IMAGE_RESAMPLES), seed=seed)
        for i in range(m):
            models[i] = {
                "miou": _number(miou[i]),
                "miou_ci": boot.interval(i) if boot else None,
                "pixel_accuracy": _number(accuracy[i]),
                "pixel_accuracy_ci": boot.interval(m + i) if boot else None,
                "per_class_iou": {scan.vocab.names[c]: float(iou[i, c]) for c in range(g) if not np.isnan(iou[i, c])},
                "per_class_iou_ci": {
                    scan.vocab.names[c]: perclass.finite_interval(boot.distribution[2 * m + i * g + c])
                    if boot
                    else None
                    for c in range(g)
                    if not np.isnan(iou[i, c])
                },
            }
    pairs = []
    for (a, b), agreement in scan.agreement.items():
        pair: dict[str, Any] = {
            "models": [runs[a].model, runs[b].model],
            "agreement": float(np.mean(agreement)),
            "kappa": None,
            "cohen_kappa": None,
        }
        if truth is not None:
            pair["p_value"] = stats.paired_p(boot.distribution[a], boot.distribution[b]) if boot else None
        pairs.append(pair)
    resamples = min(n_resamples, stats.IMAGE_RESAMPLES) if boot else None
    if scan.sums is None:
        return stats.Evaluation(models, pairs, resamples, "images")
    distributions = {"miou": boot.distribution[:m], "pixel_accuracy": boot.distribution[m : 2 * m]} if boot else {}
    per_image = scores(*scan.sums)[1]  # each image's own mIoU (images × models)
    return stats.Evaluation(models, pairs, resamples, "images", distributions=distributions, losses=1 - per_image.T)


def _number(value: float) -> float | None:
    return None if np.isnan(value) else float(value)


def disagreements(runs: Sequence[ModelRun], names: Sequence[str], truth: Truth | None, **_: Any) -> list[dict]:
    """Images whose masks differ between models (lowest mean pixel agreement first)."""
    scan = Scan.of(runs, names, truth)
    mean = np.mean(np.array(list(scan.agreement.values())), axis=0) if scan.agreement else np.ones(len(names))
    return [
        {
            "name": name,
            "predictions": scan.shown[j],
            "truth": scan.truth_shown[j] if truth is not None else None,
            "disagreement": float(1.0 - mean[j]),
        }
        for j, name in enumerate(names)
        if mean[j] < 1.0
    ]
