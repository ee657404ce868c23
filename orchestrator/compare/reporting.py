"""What a comparison report shows of the inputs themselves: thumbnails of images, table rows.

Detection and segmentation thumbnails are drawn on: each model's picture shows its boxes (with the
class name) or its mask (a semi-transparent overlay), and the preview shows the truth the same way.
Every class has one colour, the same in every picture and in the page's legend (maps.palette).
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from orchestrator import compare
from orchestrator.compare.inputs import TASK_KINDS, items_by_name
from orchestrator.datasets import Predictions, Table
from orchestrator.engine import OperationError
from orchestrator.transforms.tables import keyed_rows

THUMBNAIL = (160, 160)
#: Thumbnails with boxes or masks drawn on them are larger, so that a box and its class name can be read.
DRAWN = (240, 240)
#: How much of a class's colour covers the picture under a mask.
MASK_ALPHA = 0.45
#: At most this many boxes per picture, the highest-scored.
MAX_BOXES = 50
BOX_WIDTH = 2
# A thumbnail decodes the whole image; past this many pixels the report shows the name alone.
THUMBNAIL_MAX_PIXELS = 50_000_000


def disagreements(
    results: Sequence[Predictions],
    runs: Sequence[compare.ModelRun],
    truth: Any,
    limit: int = 24,
    colours: Mapping[str, tuple[int, int, int]] | None = None,
) -> list[dict[str, Any]]:
    """The inputs the models disagree on most, each with a thumbnail (images) or its row (tables).

    Detection and segmentation rows also get "pictures" ({model: JPEG} with its boxes or mask drawn), a
    "thumbnail" with the truth drawn (when there is truth) and "colours" ({class: "#rrggbb"} of the classes
    drawn in that row). `colours` ({case-folded class: RGB}) fixes the classes' colours; by default each
    class drawn gets one of maps.palette's, in the order of the truth's classes, then the models'.
    """
    shown = compare.find_disagreements(runs, truth, limit=limit)
    inputs: dict[str, Any] = {}
    for result in results:
        inputs.update(result.inputs)
        if result.table is not None:
            inputs.update(_rows(result.table, result.table_key, {e["name"] for e in shown}))
    kind = TASK_KINDS.get(runs[0].task) if runs else None
    if kind in ("detection", "segmentation") and shown:
        _draw_marks(kind, shown, inputs, runs, truth, colours)
        return shown
    for entry in shown:
        source = inputs.get(entry["name"])
        if isinstance(source, Path):
            entry["thumbnail"] = thumbnail(source)
        elif isinstance(source, dict):
            entry["row"] = source
    return shown


def _draw_marks(
    kind: str,
    shown: list[dict[str, Any]],
    inputs: Mapping[str, Any],
    runs: Sequence[compare.ModelRun],
    truth: Any,
    colours: Mapping[str, tuple[int, int, int]] | None,
) -> None:
    """Give each row its pictures with boxes or masks drawn (in place). Masks whose image cannot be read (a
    multi-band GeoTIFF, say) are drawn opaque on a blank picture; boxes need their image."""
    marks: _DetectionMarks | _MaskMarks = (
        _DetectionMarks(runs, truth, shown) if kind == "detection" else _MaskMarks(runs, truth)
    )
    layers = []  # per row: (picture, truth layer or None, {model: layer}, blank)
    for entry in shown:
        source = inputs.get(entry["name"])
        opened = _picture(source, DRAWN) if isinstance(source, Path) else None
        blank = False
        if opened is None and isinstance(marks, _MaskMarks):
            opened, blank = marks.canvas(entry["name"], DRAWN), True
        if opened is None:
            entry["thumbnail"] = thumbnail(source) if isinstance(source, Path) else None
            continue
        picture, size = opened
        found = marks.layers(entry["name"], size, picture.size)
        layers.append((entry, picture, found, blank))
    order = list(dict.fromkeys(name.casefold() for name in marks.order))
    used = {
        name.casefold(): name
        for _, _, found, _ in layers
        for layer in found.values()
        if layer
        for name in layer.classes()
    }
    if colours is None:
        from orchestrator.compare import maps

        ranked = sorted(used, key=lambda n: (order.index(n) if n in order else len(order), n))
        colours = maps.palette(ranked)
    for entry, picture, found, blank in layers:
        alpha = 1.0 if blank else MASK_ALPHA
        drawn = {key: _jpeg(layer.draw(picture, colours, alpha) if layer else picture) for key, layer in found.items()}
        truth_drawn = drawn.pop(None, None)
        entry["thumbnail"] = truth_drawn or (None if blank else _jpeg(picture))
        entry["truth_drawn"] = truth_drawn is not None
        entry["pictures"] = drawn
        names = {n.casefold(): n for layer in reversed(list(found.values())) if layer for n in layer.classes()}
        entry["colours"] = {
            names[key]: "#{:02x}{:02x}{:02x}".format(*colours.get(key, (0, 0, 0)))
            for key in sorted(names, key=lambda n: (order.index(n) if n in order else len(order), n))
        }


def _picture(path: Path, size: tuple[int, int]) -> tuple[Image.Image, tuple[int, int]] | None:
    """The image at `path` as an RGB thumbnail, and the image's own size; None when it cannot be read."""
    try:
        with Image.open(path) as image:
            if image.width * image.height > THUMBNAIL_MAX_PIXELS:
                return None
            full = image.size
            image.draft("RGB", size)  # JPEG: decode at a fraction of the size
            small = image.convert("RGB")
            small.thumbnail(size)
            if small.width < size[0] and small.height < size[1]:  # a small image grows, so its boxes can be read
                scale = min(size[0] / small.width, size[1] / small.height)
                small = small.resize((round(small.width * scale), round(small.height * scale)))
            return small, full
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def _jpeg(picture: Image.Image) -> bytes:
    out = io.BytesIO()
    # No chroma subsampling: a thin box line keeps its colour.
    picture.save(out, format="JPEG", quality=88, subsampling=0)
    return out.getvalue()


class _Boxes:
    """Boxes on a thumbnail: (class, [x0, y0, x1, y1] in thumbnail pixels), drawn lowest score first."""

    def __init__(self, boxes: list[tuple[str, list[float]]]):
        self.boxes = boxes

    def classes(self) -> list[str]:
        return [label for label, _ in self.boxes]

    def draw(
        self, picture: Image.Image, colours: Mapping[str, tuple[int, int, int]], alpha: float = 1.0
    ) -> Image.Image:
        from orchestrator.compare.plots import readable_on

        drawn = picture.copy()
        pen = ImageDraw.Draw(drawn)
        font = ImageFont.load_default(size=11)
        for label, (x0, y0, x1, y1) in self.boxes:
            colour = tuple(colours.get(label.casefold(), (0, 0, 0)))
            pen.rectangle([x0, y0, max(x0, x1), max(y0, y1)], outline=colour, width=BOX_WIDTH)
            left, top, right, bottom = pen.textbbox((0, 0), label, font=font)
            height = bottom - top + 2
            # above the box; else below it; else inside it at the top edge
            y = y0 - height if y0 - height >= 0 else y1 + 1 if y1 + 1 + height <= drawn.height else y0
            pen.rectangle([x0, y, x0 + right - left + 4, y + height], fill=colour)
            pen.text((x0 + 2 - left, y + 1 - top), label, font=font, fill=readable_on([c / 255 for c in colour]))
        return drawn


class _DetectionMarks:
    """The boxes of each model, and of the COCO truth, on the rows shown."""

    def __init__(self, runs: Sequence[compare.ModelRun], truth: Any, shown: list[dict[str, Any]]):
        from orchestrator.compare import coco

        self.runs = runs
        self.items = [items_by_name(run) for run in runs]
        self.truth: dict[str, list[tuple[str, list[float], tuple[Any, Any]]]] = {}  # name: (class, box, size)
        self.order: list[str] = []
        if truth is not None and truth.coco is not None:
            gt = coco.load(truth.coco)
            self.order += [str(c["name"]) for c in gt.dataset["categories"]]
            try:
                images = coco.match_images(gt, [e["name"] for e in shown], repr(truth.source or str(truth.coco)))
            except OperationError:  # the comparison checked every input against this truth; nothing to add here
                images = {}
            for name, image in images.items():
                size = (gt.imgs[image].get("width"), gt.imgs[image].get("height"))
                self.truth[name] = [
                    (str(gt.cats[a["category_id"]]["name"]), _corners(a["bbox"]), size) for a in gt.imgToAnns[image]
                ]
        for run in runs:
            self.order += list(run.labels)

    def layers(self, name: str, size: tuple[int, int], thumb: tuple[int, int]) -> dict[Any, _Boxes | None]:
        found: dict[Any, _Boxes | None] = {}
        if name in self.truth:
            found[None] = _Boxes([_scaled(label, box, seen, size, thumb) for label, box, seen in self.truth[name]])
        for run, items in zip(self.runs, self.items, strict=True):
            item = items.get(name) or {}
            detections = [d for d in item.get("detections") or [] if _is_box(d.get("box"))]
            detections.sort(key=lambda d: float(d.get("score", 1.0)))
            seen = (item.get("width"), item.get("height"))
            found[run.model] = _Boxes(
                [_scaled(str(d.get("label", "")), d["box"], seen, size, thumb) for d in detections[-MAX_BOXES:]]
            )
        return found


def _corners(xywh: Sequence[float]) -> list[float]:
    x, y, width, height = (float(v) for v in xywh)
    return [x, y, x + width, y + height]


def _is_box(box: Any) -> bool:
    try:
        return len(box) == 4 and all(np.isfinite(float(v)) for v in box)
    except (TypeError, ValueError):
        return False


def _scaled(
    label: str, box: Sequence[Any], seen: tuple[Any, Any], size: tuple[int, int], thumb: tuple[int, int]
) -> tuple[str, list[float]]:
    """A box in the pixels the model (or the truth) saw, in the thumbnail's pixels."""
    width, height = seen if all(isinstance(v, int | float) and v > 0 for v in seen) else size
    sx, sy = thumb[0] / float(width), thumb[1] / float(height)
    x0, y0, x1, y1 = (float(v) for v in box)
    return label, [x0 * sx, y0 * sy, x1 * sx, y1 * sy]


class _Mask:
    """A class-id mask on a thumbnail: ids (nearest-neighbour resized), their names, the id not drawn."""

    def __init__(self, ids: np.ndarray, names: Sequence[str], skip: int | None):
        self.ids, self.names, self.skip = ids, list(names), skip

    def _shown(self) -> list[int]:
        return [int(i) for i in np.unique(self.ids) if int(i) != self.skip]

    def _name(self, class_id: int) -> str:
        return self.names[class_id] if class_id < len(self.names) else f"#{class_id}"

    def classes(self) -> list[str]:
        return [self._name(i) for i in self._shown()]

    def draw(
        self, picture: Image.Image, colours: Mapping[str, tuple[int, int, int]], alpha: float = MASK_ALPHA
    ) -> Image.Image:
        base = np.asarray(picture, dtype=float)
        out = base.copy()
        for class_id in self._shown():
            where = self.ids == class_id
            colour = np.array(colours.get(self._name(class_id).casefold(), (0, 0, 0)), dtype=float)
            out[where] = (1 - alpha) * base[where] + alpha * colour
        return Image.fromarray(np.round(out).astype(np.uint8), "RGB")


class _MaskMarks:
    """The mask of each model, and the truth mask, on the rows shown."""

    def __init__(self, runs: Sequence[compare.ModelRun], truth: Any):
        self.runs, self.truth = runs, truth
        self.items = [items_by_name(run) for run in runs]
        self.order = [*(truth.labels if truth is not None else []), *(n for run in runs for n in run.labels)]

    def canvas(self, name: str, size: tuple[int, int]) -> tuple[Image.Image, tuple[int, int]] | None:
        """A blank picture of the masks' size (fitted to `size`), for masks whose image cannot be shown."""
        for items in self.items:
            path = (items.get(name) or {}).get("mask")
            try:
                with Image.open(Path(str(path))) as mask:
                    full = mask.size
            except (OSError, ValueError, Image.DecompressionBombError):
                continue
            scale = min(size[0] / full[0], size[1] / full[1])
            return Image.new("RGB", (max(1, round(full[0] * scale)), max(1, round(full[1] * scale))), "white"), full
        return None

    def layers(self, name: str, size: tuple[int, int], thumb: tuple[int, int]) -> dict[Any, _Mask | None]:
        found: dict[Any, _Mask | None] = {}
        if self.truth is not None and name in self.truth.values:
            labels = self.truth.labels or (self.runs[0].labels if self.runs else [])
            found[None] = _mask(
                self.truth.values[name], f"the truth mask for {name!r}", thumb, labels, self.truth.ignore_index
            )
        for run, items in zip(self.runs, self.items, strict=True):
            path = (items.get(name) or {}).get("mask")
            found[run.model] = _mask(path, f"model {run.model!r}'s mask for {name!r}", thumb, run.labels, None)
        return found


def _mask(path: Any, what: str, thumb: tuple[int, int], labels: Sequence[str], skip: int | None) -> _Mask | None:
    """The mask at `path` at the thumbnail's size; None when it cannot be read (the comparison said why)."""
    from orchestrator.compare.segmentation import load_mask

    if not path:
        return None
    try:
        ids = load_mask(path, what)
    except OperationError:
        return None
    small = Image.fromarray(ids.astype(np.int32), "I").resize(thumb, Image.Resampling.NEAREST)
    return _Mask(np.asarray(small), labels, skip)


def rows_of(table: Table, key: str | None, wanted: set[str]) -> dict[str, dict[str, Any]]:
    """The rows named in `wanted` (long values clipped), for a report to show."""
    return _rows(table, key, wanted)


def _rows(table: Table, key: str | None, wanted: set[str]) -> dict[str, dict[str, Any]]:
    """The rows named in `wanted`, read from the table one at a time (long values clipped)."""
    found = {}
    for name, row in keyed_rows(table, key):
        if name in wanted:
            found[name] = {k: (v[:80] + "…" if isinstance(v, str) and len(v) > 80 else v) for k, v in row.items()}
    return found


def thumbnail(path: Path, size: tuple[int, int] = THUMBNAIL) -> bytes | None:
    """A small JPEG of an image file, or None when it cannot (or should not) be decoded."""
    try:
        with Image.open(path) as image:
            if image.width * image.height > THUMBNAIL_MAX_PIXELS:
                return None
            image.draft("RGB", size)  # JPEG: decode at a fraction of the size
            small = image.convert("RGB")
            small.thumbnail(size)
            out = io.BytesIO()
            small.save(out, format="JPEG", quality=80)
            return out.getvalue()
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
