"""COCO ground truth for detection: loading the JSON, matching its images to prediction names,
and turning a model's detections into a pycocotools results object.
"""

from __future__ import annotations

import contextlib
import io
import json
import posixpath
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pycocotools.coco import COCO

from orchestrator.compare.inputs import ModelRun, Truth, few, items_by_name
from orchestrator.engine import OperationError


def quiet() -> contextlib.AbstractContextManager:
    """pycocotools prints progress on stdout: keep it out of the run's logs."""
    return contextlib.redirect_stdout(io.StringIO())


def load_truth(truth: Truth) -> COCO:
    """The COCO ground truth of `truth` (kind "coco"), which names its JSON file (inputs.check_truth checks it)."""
    if truth.coco is None:
        raise OperationError("COCO ground truth needs the path of its JSON file (Truth.coco)")
    return load(truth.coco)


def load(path: Path | str) -> COCO:
    """The COCO ground truth at `path`, with `id`, `area` and `iscrowd` filled in when absent."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise OperationError(f"cannot read the COCO ground truth {str(path)!r}: {error}") from error
    if not isinstance(data, dict) or not all(isinstance(data.get(key), list) for key in ("images", "categories")):
        raise OperationError(
            f"{str(path)!r} is not COCO ground truth: expected a JSON object with 'images', 'annotations' "
            "and 'categories' lists"
        )
    annotations = []
    for number, ann in enumerate(data.get("annotations") or [], start=1):
        box = ann.get("bbox") if isinstance(ann, dict) else None
        if not isinstance(box, list) or len(box) != 4 or "image_id" not in ann or "category_id" not in ann:
            raise OperationError(
                f"COCO ground truth {str(path)!r}: annotation #{number} needs 'image_id', 'category_id' "
                "and 'bbox' [x, y, width, height]"
            )
        annotations.append({"id": number, "iscrowd": 0, "area": float(box[2]) * float(box[3]), **ann})
    gt = COCO()
    gt.dataset = {**data, "annotations": annotations}
    with quiet():
        gt.createIndex()
    return gt


def match_images(gt: COCO, names: Sequence[str], source: str) -> dict[str, int]:
    """Each prediction name's COCO image id: its `file_name` exactly, else its unique base name."""
    images = gt.dataset["images"]
    files = Counter(str(image.get("file_name", "")) for image in images)
    twice = [name for name, count in files.items() if count > 1]
    if twice:
        raise OperationError(f"COCO ground truth {source}: several images share the file_name {few(twice)}")
    exact = {str(image.get("file_name", "")): image["id"] for image in images}
    bases = Counter(posixpath.basename(name) for name in exact)
    by_base = {posixpath.basename(name): i for name, i in exact.items() if bases[posixpath.basename(name)] == 1}
    found: dict[str, int] = {}
    missing = []
    for name in names:
        image = exact.get(name, by_base.get(posixpath.basename(name)))
        if image is None:
            missing.append(name)
        else:
            found[name] = image
    if missing:
        raise OperationError(
            f"COCO ground truth {source} has no image for {len(missing)} of the {len(names)} inputs: {few(missing)}; "
            "images match an input by file_name (or by base name when that is unique)"
        )
    shared = [image for image, count in Counter(found.values()).items() if count > 1]
    if shared:
        names_of = [name for name, image in found.items() if image in shared]
        raise OperationError(
            f"COCO ground truth {source}: the inputs {few(names_of)} all match the same image by base name; "
            "use file_name paths that tell them apart"
        )
    return found


def categories(gt: COCO) -> dict[str, int]:
    """COCO category ids by case-folded name."""
    return {str(cat["name"]).casefold(): cat["id"] for cat in gt.dataset["categories"]}


def box(run: ModelRun, name: str, detection: Any) -> list[float]:
    """A detection's [xmin, ymin, xmax, ymax] as COCO's [x, y, width, height]."""
    raw = detection.get("box") if isinstance(detection, dict) else None
    try:
        if raw is None:
            raise TypeError("no box")
        xmin, ymin, xmax, ymax = (float(v) for v in raw)
    except (TypeError, ValueError) as error:
        raise OperationError(
            f"model {run.model!r}: a detection for {name!r} has box {raw!r}; expected [xmin, ymin, xmax, ymax]"
        ) from error
    return [xmin, ymin, xmax - xmin, ymax - ymin]


def results(gt: COCO, run: ModelRun, images: dict[str, int], source: str) -> tuple[COCO, dict[str, int]]:
    """The run's detections as a pycocotools results object, and the labels no category matched (counts)."""
    cats = categories(gt)
    by_name = items_by_name(run)
    anns: list[dict[str, Any]] = []
    ignored: Counter[str] = Counter()
    for name, image_id in images.items():
        item = by_name[name]
        info = gt.imgs[image_id]
        seen, expected = (item.get("width"), item.get("height")), (info.get("width"), info.get("height"))
        if all(seen) and all(expected) and seen != expected:
            raise OperationError(
                f"model {run.model!r} saw {name!r} as {item['width']}×{item.get('height')} pixels, but the COCO "
                f"ground truth {source} says {info['width']}×{info.get('height')}: the boxes would not line up"
            )
        for detection in item.get("detections") or []:
            label = str(detection.get("label", ""))
            category = cats.get(label.casefold())
            if category is None:
                ignored[label] += 1
                continue
            anns.append(
                {
                    "image_id": image_id,
                    "category_id": category,
                    "bbox": box(run, name, detection),
                    "score": float(detection.get("score", 1.0)),
                }
            )
    if ignored and not anns:
        raise OperationError(
            f"none of model {run.model!r}'s detection labels ({few(sorted(ignored))}) is a category of the COCO "
            f"ground truth {source} ({few(sorted(c['name'] for c in gt.dataset['categories']))})"
        )
    with quiet():
        if anns:
            dt = gt.loadRes(anns)
        else:
            dt = COCO()
            dt.dataset = {
                "images": list(gt.dataset["images"]),
                "categories": list(gt.dataset["categories"]),
                "annotations": [],
            }
            dt.createIndex()
    return dt, dict(ignored)
