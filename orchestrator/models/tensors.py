"""Tiles as the float tensors of a model that takes [N, C, H, W]: read, checked, scaled, predicted, written back.

A model "takes tensors" when its metadata's first input is FP32 of four dimensions (an ONNX image
model on our server, or the same .onnx file on Triton). Each tile is read with its bands as stored,
as float32 (GeoTIFFs with rasterio, other images with Pillow, normalize_image's .npy arrays as they
are), its validity (a pixel where every band is nodata, or the raster's mask says so, is not valid),
and where it lies (crs, transform). When the model's card (STAC MLM `mlm:input`, answered in its
metadata) names bands, those are picked by name in its order; its value scaling is applied unless
the tiles were normalized before (normalize_image). Segmentation masks are single-band GeoTIFFs of
class ids, nodata where the input was not valid, on the tile's grid; classification items keep the
tile's place.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.datasets import FileRef
from orchestrator.engine import OperationError
from orchestrator.models.client import labels_of, parameter
from orchestrator.transforms.raster_ops import TILE_TAG
from orchestrator.transforms.raster_values import NORMALIZATION_TAG

if TYPE_CHECKING:
    import numpy as np

MASK_NODATA = 255  # uint8 masks: class ids 0-254, 255 where the input had no data
WIDE_MASK_NODATA = 65535  # uint16 masks, for models of more than 255 classes
# The tile facts a prediction keeps (FileRef.meta of a raster, and a tile's origin in its scene).
PLACE = ("crs", "transform", "width", "height", "tile", "stac_item")


def takes_tensors(metadata: dict[str, Any]) -> bool:
    """Whether the model's (first) input is a float tensor [N, C, H, W]."""
    inputs = metadata.get("inputs")
    first = inputs[0] if isinstance(inputs, list) and inputs and isinstance(inputs[0], dict) else {}
    return first.get("datatype") == "FP32" and isinstance(first.get("shape"), list) and len(first["shape"]) == 4


@dataclass
class TensorModel:
    """What a tensor model takes and answers, from its metadata."""

    model_id: str
    task: str
    bands: int  # -1: any number
    height: int
    width: int
    labels: list[str]
    band_names: list[str] = field(default_factory=list)  # the card's bands, in the model's order
    scaling: list[dict[str, Any] | None] | None = None  # per band (one entry: every band), or none
    outputs: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, model_id: str, task: str, metadata: dict[str, Any]) -> TensorModel:
        shape = [d if isinstance(d, int) and d > 0 else -1 for d in metadata["inputs"][0]["shape"]]
        card = parameter(metadata, "mlm:input") or {}
        if not isinstance(card, dict):
            raise OperationError(f"model {model_id!r}: its mlm:input parameter is not a JSON object")
        band_names = [
            b if isinstance(b, str) else b.get("name")
            for b in card.get("bands") or []
            if isinstance(b, str) or isinstance(b, dict)
        ]
        scaling = card.get("value_scaling")
        outputs = [o.get("name") for o in metadata.get("outputs") or [] if isinstance(o, dict)]
        model = cls(
            model_id,
            task,
            shape[1],
            shape[2],
            shape[3],
            labels_of(metadata),
            [str(b) for b in band_names if b],
            scaling if isinstance(scaling, list) else None,
            [str(o) for o in outputs if o],
        )
        if model.band_names and model.bands == -1:
            model.bands = len(model.band_names)
        return model

    def output_wanted(self) -> str:
        """The output asked for: `class_id` (a byte per pixel) when the server makes it, else the graph's first."""
        if self.task == "image-segmentation" and "class_id" in self.outputs:
            return "class_id"
        if not self.outputs:
            raise OperationError(f"model {self.model_id!r}: its metadata lists no outputs")
        return self.outputs[0]


@dataclass
class Tile:
    ref: FileRef
    values: np.ndarray  # float32 [C, H, W], as the model takes it
    valid: np.ndarray  # bool [H, W]
    place: dict[str, Any]  # crs, transform, ... (empty for images that lie nowhere)
    size: tuple[int, int]  # (height, width) before any padding to the model's size


def read_tile(ref: FileRef, model: TensorModel, max_samples: int | None = None) -> Tile:
    """The tile's bands (the card's, by name, when it names them), as float32, scaled by the card unless it was
    normalized before; its valid pixels and its place."""
    import numpy as np

    from orchestrator.transforms import rasters

    place: dict[str, Any] = {k: ref.meta[k] for k in PLACE if k in ref.meta}
    normalized = bool(ref.meta.get("normalization"))
    if ref.path.suffix.lower() == ".npy":
        values = _npy(ref)
        valid = np.isfinite(values).all(axis=0)
        normalized = True  # normalize_image's arrays: scaled already
    elif rasters.has_tiff_magic(ref.path):
        with rasters.open_raster(ref.path, max_samples, name=ref.name) as dataset:
            indexes = _band_indexes(ref.name, model, band_aliases(dataset, ref))
            values = dataset.read(indexes, out_dtype="float32")
            valid = _valid(dataset, indexes, values)
            place = {**place, **{k: v for k, v in rasters.facts(dataset).items() if k in PLACE}}
            tags = dataset.tags()
            # normalize_image keeps the statistics it used in the GeoTIFF's tags as well as in its facts
            normalized = normalized or NORMALIZATION_TAG in tags
            origin = _origin(tags.get(TILE_TAG)) if "tile" not in place else None
            if origin is not None:  # the tile's origin in its scene (tile_image's tag): the maps group tiles by it
                place["tile"] = origin
    else:
        values, valid = _picture(ref, max_samples)
    if model.bands != -1 and values.shape[0] != model.bands:
        raise OperationError(
            f"{ref.name!r}: model {model.model_id!r} expects {model.bands} bands, data has {values.shape[0]}"
        )
    if model.scaling and not normalized:
        values = scale(values, model.scaling, model.model_id)
    return Tile(ref, np.ascontiguousarray(values, dtype=np.float32), valid, place, values.shape[1:])


def _origin(text: str | None) -> dict[str, Any] | None:
    """A tile's origin as tile_image wrote it in the file (its TILE_TAG), or None when it is not one."""
    import json

    if not text:
        return None
    try:
        origin = json.loads(text)
    except ValueError:
        return None
    return origin if isinstance(origin, dict) else None


def _valid(dataset: Any, indexes: list[int], values: np.ndarray) -> np.ndarray:
    """Pixels with data: GDAL's dataset mask (not valid where every band is nodata, or where the file's mask
    says so). Computed from the bands just read when they are all the bands and nodata is all the mask there is,
    instead of GDAL reading every band again."""
    import numpy as np
    from rasterio.enums import MaskFlags

    flags = dataset.mask_flag_enums
    if all(f == [MaskFlags.all_valid] for f in flags):
        return np.ones(values.shape[1:], dtype=bool)
    nodata = dataset.nodata
    if (
        nodata is not None
        and sorted(indexes) == list(range(1, dataset.count + 1))
        and all(f == [MaskFlags.nodata] for f in flags)
    ):
        missing = np.isnan(values) if math.isnan(nodata) else values == np.float32(nodata)
        return ~missing.all(axis=0)
    return dataset.dataset_mask() > 0


def band_aliases(dataset: Any, ref: FileRef) -> list[list[str]]:
    """Each band's names, the first shown: its description, the file list's name for it (STAC's, for an
    import_from_stac file), and the STAC `name` and `common_name` kept as band metadata (B08 and nir)."""
    from orchestrator.transforms import rasters

    described = rasters.band_names(dataset) or [None] * dataset.count
    listed = ref.meta.get("bands")
    listed = listed if isinstance(listed, list) and len(listed) == dataset.count else [None] * dataset.count
    aliases = []
    for index in range(dataset.count):
        tags = dataset.tags(index + 1)
        found = [described[index], listed[index], tags.get("name"), tags.get("common_name")]
        aliases.append(list(dict.fromkeys(str(n) for n in found if n)))
    return aliases


def _band_indexes(name: str, model: TensorModel, aliases: list[list[str]]) -> list[int]:
    """1-based band indexes to read: the card's bands by name (any of a band's names, any case), else every band
    as stored."""
    count = len(aliases)
    if not model.band_names:
        if model.bands != -1 and count != model.bands:
            raise OperationError(f"{name!r}: model {model.model_id!r} expects {model.bands} bands, data has {count}")
        return list(range(1, count + 1))
    if not any(aliases):
        if count == len(model.band_names):
            return list(range(1, count + 1))  # unnamed bands, as many as the model's: taken as they are
        raise OperationError(
            f"{name!r}: model {model.model_id!r} expects {len(model.band_names)} bands "
            f"({', '.join(model.band_names)}), data has {count} unnamed bands"
        )
    folded: dict[str, int] = {}
    for index, names in reversed(list(enumerate(aliases))):  # a name two bands share: the first band's
        folded.update((n.casefold(), index + 1) for n in names)
    missing = [b for b in model.band_names if b.casefold() not in folded]
    if missing:
        shown = ", ".join(names[0] if names else f"#{i + 1}" for i, names in enumerate(aliases))
        raise OperationError(
            f"{name!r}: model {model.model_id!r} reads bands {', '.join(model.band_names)}; the data "
            f"has no {', '.join(map(repr, missing))} (its bands: {shown})"
        )
    return [folded[b.casefold()] for b in model.band_names]


def _npy(ref: FileRef) -> np.ndarray:
    import numpy as np

    try:
        values = np.load(ref.path, allow_pickle=False, mmap_mode="r")
    except (OSError, ValueError) as exc:
        raise OperationError(f"{ref.name!r} is not a readable .npy array: {exc}") from None
    if values.ndim != 3:
        raise OperationError(f"{ref.name!r} is an array of shape {list(values.shape)}; a tile is C×H×W")
    return np.asarray(values, dtype=np.float32)


def _picture(ref: FileRef, max_samples: int | None) -> tuple[np.ndarray, np.ndarray]:
    """An ordinary image (PNG, JPEG...): its channels as bands, every pixel valid."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(ref.path) as image:
            width, height = image.size
            if max_samples is not None and width * height * len(image.getbands()) > max_samples:
                raise OperationError(f"{ref.name!r} is {width}×{height} pixels, over the limit")
            pixels = np.asarray(image)
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise OperationError(f"{ref.name!r} is not an image: {exc}") from None
    pixels = pixels.reshape(pixels.shape[0], pixels.shape[1], -1)
    return np.moveaxis(pixels, 2, 0).astype(np.float32), np.ones(pixels.shape[:2], dtype=bool)


def scale(values: np.ndarray, scaling: list[dict[str, Any] | None], model_id: str) -> np.ndarray:
    """MLM value scaling, per band (one entry: every band), in float32."""
    import numpy as np

    bands = values.shape[0]
    if len(scaling) not in (1, bands):
        raise OperationError(
            f"model {model_id!r}: its card gives {len(scaling)} value scalings for {bands} bands; "
            "give one per band, or one for all"
        )
    out = values.astype(np.float32, copy=True)
    for band in range(bands):
        step = scaling[0] if len(scaling) == 1 else scaling[band]
        if not isinstance(step, dict):  # None (no scaling for this band), or not a scaling at all
            continue
        kind = step.get("type")
        if kind is None:
            continue
        data = out[band]
        number = _number_getter(step, kind, model_id)
        if kind == "min-max":
            low, high = number("minimum"), number("maximum")
            if high == low:
                raise OperationError(f"model {model_id!r}: min-max scaling with minimum = maximum = {low}")
            data -= np.float32(low)
            data /= np.float32(high - low)
        elif kind == "z-score":
            mean, stddev = number("mean"), number("stddev")
            if stddev == 0:
                raise OperationError(f"model {model_id!r}: z-score scaling with stddev 0")
            data -= np.float32(mean)
            data /= np.float32(stddev)
        elif kind == "clip":
            np.clip(data, number("minimum"), number("maximum"), out=data)
        elif kind == "clip-min":
            np.maximum(data, np.float32(number("minimum")), out=data)
        elif kind == "clip-max":
            np.minimum(data, np.float32(number("maximum")), out=data)
        elif kind == "offset":
            data -= np.float32(number("value"))
        elif kind == "scale":
            if number("value") == 0:
                raise OperationError(f"model {model_id!r}: scale scaling by 0")
            data /= np.float32(number("value"))
        else:
            raise OperationError(
                f"model {model_id!r}: its card's value scaling {kind!r} is not applied here "
                "(min-max, z-score, clip, clip-min, clip-max, offset, scale are)"
            )
    return out


def _number_getter(step: dict[str, Any], kind: str, model_id: str) -> Any:
    def number(key: str) -> float:
        value = step.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise OperationError(f"model {model_id!r}: its card's {kind} scaling has {key} {value!r}, not a number")
        return float(value)

    return number


def stack(tiles: list[Tile], model: TensorModel) -> np.ndarray:
    """The tiles as one float32 [N, C, H, W], each padded (nodata, not valid) to the model's size when it has one;
    a tile larger than that size is refused."""
    import numpy as np

    height = model.height if model.height != -1 else max(t.size[0] for t in tiles)
    width = model.width if model.width != -1 else max(t.size[1] for t in tiles)
    out = np.zeros((len(tiles), tiles[0].values.shape[0], height, width), dtype=np.float32)
    for index, tile in enumerate(tiles):
        rows, columns = tile.size
        if rows > height or columns > width:
            raise OperationError(
                f"{tile.ref.name!r} is {rows}×{columns} pixels (rows × columns); model "
                f"{model.model_id!r} takes tiles of {height}×{width}: tile the data to that size"
            )
        if tile.values.shape[0] != out.shape[1]:
            raise OperationError(
                f"{tile.ref.name!r} has {tile.values.shape[0]} bands but {tiles[0].ref.name!r} has "
                f"{out.shape[1]}; one request takes tiles of one band count"
            )
        out[index, :, :rows, :columns] = tile.values
    return out


def class_ids(answer: np.ndarray, model: TensorModel) -> np.ndarray:
    """Class ids [N, H, W] from the answer: the server's class_id, or the argmax of the graph's scores."""
    import numpy as np

    if model.output_wanted() == "class_id" or answer.ndim == 3:
        return np.asarray(answer)
    if answer.ndim == 4 and answer.shape[1] == 1 and answer.dtype.kind in "iu":
        return answer[:, 0]
    if answer.ndim != 4:
        raise OperationError(
            f"model {model.model_id!r} answered scores of shape {list(answer.shape)}; a "
            "segmentation model's are [N, K, H, W]"
        )
    return answer.argmax(axis=1)


def write_mask(tile: Tile, ids: np.ndarray, target: Path, classes: int) -> dict[str, Any]:
    """The tile's class ids as a single-band GeoTIFF on its grid, nodata where the input was not valid; the
    prediction's item fields."""
    import numpy as np

    from orchestrator.transforms import rasters

    rows, columns = tile.size
    ids = ids[:rows, :columns]
    wide = classes > MASK_NODATA or (ids.size and int(ids.max()) >= MASK_NODATA)
    dtype, nodata = ("uint16", WIDE_MASK_NODATA) if wide else ("uint8", MASK_NODATA)
    mask = ids.astype(dtype)
    mask[~tile.valid[:rows, :columns]] = nodata
    crs, transform = tile.place.get("crs"), tile.place.get("transform")
    profile = rasters.output_profile(columns, rows, 1, dtype, _crs(crs), _affine(transform), nodata)
    with rasters.write_like(target, profile, descriptions=["class_id"]) as dataset:
        dataset.write(mask, 1)
    counts = np.bincount(mask[mask != nodata].ravel(), minlength=0)
    return {
        "mask": str(target),
        **tile.place,
        "nodata": nodata,
        "class_pixels": {str(i): int(c) for i, c in enumerate(counts.tolist()) if c},
    }


def _crs(text: Any) -> Any:
    if not text:
        return None
    from rasterio.crs import CRS

    return CRS.from_user_input(text)


def _affine(numbers: Any) -> Any:
    from rasterio.transform import Affine

    return Affine(*numbers[:6]) if numbers else Affine.identity()


def ranked(scores: np.ndarray, labels: list[str], k: int) -> list[list[tuple[str, float]]]:
    """Top-k (label, probability) per tile, best first: the graph's scores as probabilities (softmax of logits)."""
    import numpy as np

    if scores.ndim != 2:
        raise OperationError(f"a classifier's scores are [N, K]; the model answered {list(scores.shape)}")
    values = scores.astype(np.float64)
    if not ((values >= 0).all() and np.allclose(values.sum(axis=1), 1.0, atol=1e-3)):
        values = np.exp(values - values.max(axis=1, keepdims=True))
        values /= values.sum(axis=1, keepdims=True)
    names = labels if len(labels) == values.shape[1] else [str(i) for i in range(values.shape[1])]
    order = np.argsort(-values, axis=1, kind="stable")[:, :k]
    return [[(names[i], float(values[row, i])) for i in order[row]] for row in range(len(values))]
