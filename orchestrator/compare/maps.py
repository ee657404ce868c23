"""Maps of a comparison on the Earth: each scene's input, every model's prediction, the truth, and where they differ.

For each scene the tiles came from (their origin as model_inference kept it, else their folder), the
predicted masks of every model and the truth tiles, as the alignment read them and holds them, are
merged back into scene GeoTIFFs block by block with `mosaic.merge` (the placement of the operation),
and a disagreement GeoTIFF is computed on the same blocks (0 the models agree, 1 they do not, 255 no
prediction): one pass, no tile read again. Those files are what a user downloads into a GIS. The page
gets small PNG pictures of them (nearest-neighbour decimations taken from the same blocks, one colour
per class name, the same in every picture) and a quicklook of the input: an RGB composite of its tiles
(red, green, blue bands by name, else bands 3, 2, 1), each band stretched between its 2nd and 98th
percentile over valid pixels.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.compare.geotruth import IGNORE, Aligned
from orchestrator.datasets import FileRef, Predictions
from orchestrator.transforms import mosaic as mosaics

QUICKLOOK = 720  # the longer side of a picture, in pixels
QUICKLOOK_THREADS = 4  # input tiles read at once for the quicklook
NO_DATA_COLOUR = (246, 247, 249)  # the page's background: no prediction, no truth
AGREE_COLOUR, DISAGREE_COLOUR = (205, 210, 218), (214, 39, 40)
DISAGREEMENT_NODATA = 255
RGB_NAMES = (("red", "green", "blue"), ("b04", "b03", "b02"), ("r", "g", "b"))
# The scene maps hold class ids: deflate at level 1 without a predictor writes them 3-4x faster than the rasters'
# default (level 6, horizontal differencing), for files about 10 % larger (bench/geo_truth.py's 4096² scene).
CLASS_MAP = {"predictor": 1, "zlevel": 1}


@dataclass
class SceneMaps:
    scene: str
    width: int
    height: int
    crs: str
    predictions: dict[str, Path] = field(default_factory=dict)  # model -> GeoTIFF
    truth: Path | None = None
    disagreement: Path | None = None
    disagreeing_share: float | None = None
    pictures: list[dict[str, Any]] = field(default_factory=list)  # {"caption", "png"}


def palette(names: Sequence[str]) -> dict[str, tuple[int, int, int]]:
    """One colour per class name (case-folded), from matplotlib's qualitative tab20 colours in a fixed order."""
    from matplotlib import colormaps

    tab20 = colormaps["tab20"]
    colours = [tab20(i)[:3] for i in range(tab20.N)]  # a listed map: its i-th colour, as RGB in 0..1
    order = [0, 4, 2, 6, 8, 10, 12, 16, 18, 14, 1, 5, 3, 7, 9, 11, 13, 17, 19, 15]
    shown: dict[str, tuple[int, int, int]] = {}
    for i, name in enumerate(dict.fromkeys(n.casefold() for n in names)):
        r, g, b = colours[order[i % len(order)]]
        shown[name] = (round(r * 255), round(g * 255), round(b * 255))
    return shown


def draw(
    results: Sequence[Predictions],
    aligned: Aligned,
    out_dir: Path,
    caps: int | None,
    check: Callable[[], None] = lambda: None,
) -> tuple[list[SceneMaps], dict[str, tuple[int, int, int]], list[dict[str, str]]]:
    """Scene GeoTIFFs (predictions, truth, disagreement) and the page's pictures; the class colours; the scenes
    not drawn, and why (tiles on no one north-up grid: no mosaic of them exists, their scores stand)."""
    colours = palette(aligned.vocabulary or aligned.names)
    if aligned.kind != "segmentation" or aligned.held is None:
        return [], colours, []
    scenes: dict[str, list[str]] = {}
    for item in results[0].items:  # tiles by scene: their origin as model_inference kept it, else their folder
        origin = item.get("tile")
        ref = FileRef(str(item["name"]), Path(str(item.get("mask", ""))), {"tile": origin} if origin else {})
        scenes.setdefault(mosaics.scene_of(ref, {}), []).append(ref.name)
    drawn, undrawn = [], []
    for scene, names in scenes.items():
        check()
        folder = out_dir / _safe(Path(scene).stem or "scene")
        try:
            drawn.append(_scene(results, aligned, scene, names, colours, folder, caps, check))
        except mosaics.NotOneGrid as error:  # raised while placing the tiles, before any file is written
            undrawn.append({"scene": scene, "why": str(error)})
    return drawn, colours, undrawn


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "model"


def _class_tables(results: Sequence[Predictions], aligned: Aligned) -> tuple[list[np.ndarray], list[str]]:
    """Per model, its class ids -> an index into one list of names shared with the truth (case-folded)."""
    names: dict[str, int] = {}
    shown: list[str] = []

    def code(name: str) -> int:
        key = name.casefold()
        if key not in names:
            names[key] = len(shown)
            shown.append(name)
        return names[key]

    for name in aligned.names:
        code(name)
    tables = [
        np.array(
            [code(label) for label in result.labels] + [code(f"#{i}") for i in range(len(result.labels), 256)],
            dtype=np.int32,
        )
        for result in results
    ]
    return tables, shown


class _Picture:
    """A nearest-neighbour decimation of a scene to the page's size (GDAL's choice of pixels: the one under each
    picture pixel's centre), filled block by block."""

    def __init__(self, width: int, height: int, dtype: Any):
        self.shape = _picture_shape(width, height)
        self.rows = np.floor((np.arange(self.shape[0]) + 0.5) * height / self.shape[0]).astype(np.int64)
        self.cols = np.floor((np.arange(self.shape[1]) + 0.5) * width / self.shape[1]).astype(np.int64)
        self.ids = np.zeros(self.shape, dtype=dtype)

    def add(self, block: Any, values: np.ndarray) -> None:
        r0, c0 = int(block.row_off), int(block.col_off)
        rows = np.flatnonzero((self.rows >= r0) & (self.rows < r0 + int(block.height)))
        cols = np.flatnonzero((self.cols >= c0) & (self.cols < c0 + int(block.width)))
        self.ids[np.ix_(rows, cols)] = values[np.ix_(self.rows[rows] - r0, self.cols[cols] - c0)]


def _scene(
    results: Sequence[Predictions],
    aligned: Aligned,
    scene: str,
    names: Sequence[str],
    colours: dict[str, tuple[int, int, int]],
    folder: Path,
    caps: int | None,
    check: Callable[[], None],
) -> SceneMaps:
    """One scene's GeoTIFFs, merged from the masks and truth the alignment holds (as `mosaic` places tiles), the
    disagreement computed on the same blocks, and the pictures decimated from them: one pass, no file read."""
    from concurrent.futures import ThreadPoolExecutor
    from contextlib import ExitStack

    from orchestrator.transforms import rasters
    from orchestrator.transforms.images import output_path

    assert aligned.held is not None
    held = aligned.held
    grids = [aligned.grids[name] for name in names]
    footprints = [mosaics.Footprint(g.name, g.name, g.crs, g.transform, g.width, g.height) for g in grids]
    transform, width, height, placed = mosaics.place(scene, footprints)
    crs = grids[0].crs
    first = held.get(names[0])
    models = len(results)
    by_name = [{str(item["name"]): item for item in result.items} for result in results]
    nodata = [by_name[i][names[0]].get("nodata") for i in range(models)] + [IGNORE]
    dtypes = [np.dtype(a.dtype) for a in first]
    fills = [v if v is not None else 0 for v in nodata]
    targets = [output_path(folder / f"model-{i + 1}", f"{_safe(r.model)}.tif") for i, r in enumerate(results)]
    targets.append(output_path(folder / "truth", "truth.tif"))
    maps = SceneMaps(
        scene,
        width,
        height,
        str(rasters.crs_text(crs)),
        {r.model: path for r, path in zip(results, targets[:models], strict=True)},
        targets[-1],
    )
    tables, _ = _class_tables(results, aligned)
    pictures = [_Picture(width, height, dtype) for dtype in dtypes]
    disagreement = _Picture(width, height, np.uint8) if models >= 2 else None
    differ = total = 0
    common = np.result_type(*dtypes)

    def read(tile: Any, window: Any) -> np.ndarray:
        rows = slice(int(window.row_off), int(window.row_off + window.height))
        cols = slice(int(window.col_off), int(window.col_off + window.width))
        return np.stack([layer[rows, cols] for layer in held.get(tile.key)])

    with ExitStack() as stack:
        # The quicklook reads the input tiles while the scene is merged and written (GDAL works without the GIL).
        side = stack.enter_context(ThreadPoolExecutor(max_workers=1))
        quicklook = side.submit(_quicklook, results[0], maps, transform, names, pictures[0].shape, caps)
        outputs = [
            stack.enter_context(
                rasters.write_like(
                    target,
                    {**rasters.output_profile(width, height, 1, dtype.name, crs, transform, value), **CLASS_MAP},
                    descriptions=["class"] if k == models else ["class_id"],
                    caps=caps,
                )
            )
            for k, (target, dtype, value) in enumerate(zip(targets, dtypes, nodata, strict=True))
        ]
        if disagreement is not None:
            maps.disagreement = output_path(folder, "disagreement.tif")
            profile = {
                **rasters.output_profile(width, height, 1, "uint8", crs, transform, DISAGREEMENT_NODATA),
                **CLASS_MAP,
            }
            against = stack.enter_context(
                rasters.write_like(maps.disagreement, profile, descriptions=["disagreement"], caps=caps)
            )
        fill = np.array(fills, dtype=common).reshape(-1, 1, 1)
        for block, out in mosaics.merge(placed, width, height, len(dtypes), common, fill, read, check):
            for k, (dataset, picture) in enumerate(zip(outputs, pictures, strict=True)):
                layer = out[k].astype(dtypes[k], copy=False)
                dataset.write(layer, 1, window=block)
                picture.add(block, layer)
            if disagreement is None:
                continue
            valid = np.ones(out.shape[1:], dtype=bool)
            codes = []
            for i in range(models):
                ids = out[i]
                if nodata[i] is not None:
                    valid &= ids != nodata[i]
                codes.append(tables[i][np.minimum(ids, tables[i].size - 1)])
            different = np.zeros(valid.shape, dtype=bool)
            for other in codes[1:]:
                different |= other != codes[0]
            marks = np.where(valid, different.astype(np.uint8), DISAGREEMENT_NODATA).astype(np.uint8)
            against.write(marks, 1, window=block)
            disagreement.add(block, marks)
            differ += int(np.count_nonzero(different & valid))
            total += int(np.count_nonzero(valid))
        input_picture = quicklook.result()
    maps.disagreeing_share = differ / total if disagreement is not None and total else None
    maps.pictures = _pictures(results, maps, aligned, colours, pictures, disagreement, nodata, input_picture)
    return maps


def _picture_shape(width: int, height: int) -> tuple[int, int]:
    scale = max(width, height) / QUICKLOOK
    if scale <= 1:
        return height, width
    return max(1, round(height / scale)), max(1, round(width / scale))


def _png(rgb: np.ndarray) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb), "RGB").save(out, format="PNG", optimize=False, compress_level=6)
    return out.getvalue()


def _coloured(
    ids: np.ndarray, nodata: Any, names_by_id: Sequence[str], colours: dict[str, tuple[int, int, int]]
) -> np.ndarray:
    lookup = np.array([colours.get(n.casefold(), (0, 0, 0)) for n in names_by_id] or [(0, 0, 0)], dtype=np.uint8)
    safe = np.minimum(ids.astype(np.int64), len(lookup) - 1)
    rgb = lookup[safe]
    missing = ids >= len(names_by_id)
    if nodata is not None:
        missing |= ids == nodata
    rgb[missing] = NO_DATA_COLOUR
    return rgb


def _pictures(
    results: Sequence[Predictions],
    maps: SceneMaps,
    aligned: Aligned,
    colours: dict[str, tuple[int, int, int]],
    layers: Sequence[_Picture],
    disagreement: _Picture | None,
    nodata: Sequence[Any],
    quicklook: np.ndarray | None,
) -> list[dict]:
    pictures = []
    if quicklook is not None:
        pictures.append({"caption": "input (RGB composite)", "png": _png(quicklook), "kind": "input"})
    truth = layers[len(results)].ids
    pictures.append(
        {"caption": "truth", "png": _png(_coloured(truth, IGNORE, aligned.names, colours)), "kind": "truth"}
    )
    for i, result in enumerate(results):
        rgb = _coloured(layers[i].ids, nodata[i], result.labels, colours)
        pictures.append({"caption": result.model, "png": _png(rgb), "kind": "prediction"})
    if disagreement is not None:
        ids = disagreement.ids
        rgb = np.empty(ids.shape + (3,), dtype=np.uint8)
        rgb[:] = NO_DATA_COLOUR
        rgb[ids == 0] = AGREE_COLOUR
        rgb[ids == 1] = DISAGREE_COLOUR
        share = f" ({100 * maps.disagreeing_share:.1f} % of pixels)" if maps.disagreeing_share is not None else ""
        pictures.append({"caption": f"where the models disagree{share}", "png": _png(rgb), "kind": "disagreement"})
    return pictures


def _rgb_bands(dataset: Any) -> list[int]:
    described = [str(d or "").casefold() for d in dataset.descriptions]
    for wanted in RGB_NAMES:
        if all(name in described for name in wanted):
            return [described.index(name) + 1 for name in wanted]
    if dataset.count >= 3:
        return [3, 2, 1]
    return [1, 1, 1]


def _quicklook(
    result: Predictions, maps: SceneMaps, origin: Any, names: Sequence[str], shape: tuple[int, int], caps: int | None
) -> np.ndarray | None:
    """The input tiles of the scene as one small RGB picture, or None when they are not GeoTIFFs."""
    from orchestrator.transforms import rasters, threads

    given = [result.inputs.get(name) for name in names]
    sources = [source for source in given if isinstance(source, Path) and rasters.has_tiff_magic(source)]
    if len(sources) < len(given):
        return None
    sy, sx = shape[0] / maps.height, shape[1] / maps.width

    def read(name: str, source: Path) -> tuple[tuple[int, int, int, int], np.ndarray, np.ndarray] | None:
        """The tile's place on the picture, its RGB bands and valid pixels at the picture's scale."""
        from rasterio.enums import MaskFlags, Resampling

        with rasters.open_raster(source, caps, name) as tile:
            t = tile.transform
            col, row = (t.c - origin.c) / origin.a, (t.f - origin.f) / origin.e
            x0, y0 = round(col * sx), round(row * sy)
            x1, y1 = round((col + tile.width) * sx), round((row + tile.height) * sy)
            x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, shape[1]), min(y1, shape[0])
            if x1 <= x0 or y1 <= y0:
                return None
            bands = _rgb_bands(tile)
            size = (y1 - y0, x1 - x0)
            flags = tile.mask_flag_enums
            nodata = tile.nodata
            if all(f == [MaskFlags.all_valid] for f in flags):
                data = tile.read(bands, out_shape=(3, *size), resampling=Resampling.nearest, out_dtype="float32")
                mask = np.ones(size, dtype=bool)
            elif all(f == [MaskFlags.nodata] for f in flags) and nodata is not None and not np.isnan(nodata):
                # GDAL's dataset mask of per-band nodata: valid where any band is not nodata; one read of the bands
                every = tile.read(out_shape=(tile.count, *size), resampling=Resampling.nearest)
                mask = (every != nodata).any(axis=0)
                data = every[[band - 1 for band in bands]].astype(np.float32)
            else:
                data = tile.read(bands, out_shape=(3, *size), resampling=Resampling.nearest, out_dtype="float32")
                mask = tile.dataset_mask(out_shape=size, resampling=Resampling.nearest) > 0
        return (x0, y0, x1, y1), data, mask

    picture = np.zeros((3, *shape), dtype=np.float32)
    valid = np.zeros(shape, dtype=bool)
    # GDAL reads without the GIL: a few tiles at once; placed in the tiles' order (a later tile over an earlier one)
    for found in threads.map_in_order(
        lambda pair: read(*pair),
        zip(names, sources, strict=True),
        threads=QUICKLOOK_THREADS,
        ahead=2 * QUICKLOOK_THREADS,
        name="quicklook",
    ):
        if found is None:
            continue
        (x0, y0, x1, y1), data, mask = found
        picture[:, y0:y1, x0:x1] = np.where(mask, data, picture[:, y0:y1, x0:x1])
        valid[y0:y1, x0:x1] |= mask
    rgb = np.zeros((*shape, 3), dtype=np.uint8)
    rgb[:] = NO_DATA_COLOUR
    if not valid.any():
        return rgb
    for band in range(3):
        low, high = np.percentile(picture[band][valid], [2, 98])
        scaled = (picture[band] - low) * (255.0 / max(float(high - low), 1e-12))
        rgb[..., band] = np.where(valid, np.clip(np.rint(scaled), 0, 255), NO_DATA_COLOUR[band]).astype(np.uint8)
    return rgb


def section(
    report: dict[str, Any],
    scenes: Sequence[SceneMaps],
    colours: dict[str, tuple[int, int, int]],
    links: dict[str, tuple[str, str]],
) -> dict[str, Any]:
    """What geo.html.j2 shows: pictures, downloads ({path: (name, href)}), legend, per-class IoU and regions."""
    from orchestrator.compare import page, text

    shown_scenes = []
    for maps in scenes:
        downloads = []
        for label, path in [
            *((f"prediction of {m}", p) for m, p in maps.predictions.items()),
            ("truth", maps.truth),
            ("disagreement", maps.disagreement),
        ]:
            if path is not None and str(path) in links:
                name, href = links[str(path)]
                downloads.append({"label": label, "name": name, "href": href})
        shown_scenes.append(
            {
                "scene": maps.scene,
                "size": f"{maps.width} × {maps.height} pixels, {maps.crs}",
                "pictures": [{"uri": page.data_uri(p["png"]), "caption": p["caption"]} for p in maps.pictures],
                "downloads": downloads,
            }
        )
    predicted = (n for m in report["models"] for n in (m.get("per_class_iou_intervals") or {}))
    legend_names = list(dict.fromkeys([*(report.get("classes") or {}).get("truth", []), *predicted]))
    legend = [
        {"name": n, "colour": "#{:02x}{:02x}{:02x}".format(*colours[n.casefold()])}
        for n in legend_names
        if n.casefold() in colours
    ]
    scored = report.get("scored_pixels")
    line = (
        f"{scored:,} pixels scored, {report.get('ignored_pixels') or 0:,} not (nodata in the input, or no truth "
        f"there); {report['inputs']} tiles scored, {report.get('ignored_inputs') or 0} without truth"
        if scored is not None
        else f"{report['inputs']} tiles scored, {report.get('ignored_inputs') or 0} without a class in the truth"
    )
    return {
        "scenes": shown_scenes,
        "legend": legend,
        "scored": line,
        "unmatched": _unmatched(report),
        "undrawn": [f"no map of {s['scene']}: {s['why']}" for s in report.get("maps_not_drawn", [])],
        "per_class": _per_class_table(report, text),
        "regions": _regions_table(report, text),
    }


def _unmatched(report: dict[str, Any]) -> str:
    classes = report.get("classes") or {}
    parts = []
    if classes.get("truth_only"):
        parts.append(
            "truth classes no model knows (their pixels count against every model): " + ", ".join(classes["truth_only"])
        )
    for model, labels in (classes.get("model_only") or {}).items():
        if labels:
            parts.append(f"classes of {model} absent from the truth: {', '.join(labels)}")
    return "; ".join(parts)


def _per_class_table(report: dict[str, Any], text: Any) -> tuple[list[str], list[list[str]]] | None:
    models = [m for m in report["models"] if m.get("per_class_iou_intervals")]
    if not models:
        return None
    classes = list(dict.fromkeys(c for m in models for c in m["per_class_iou_intervals"]))
    rows = []
    for name in classes:
        row = [name]
        for m in models:
            entry = m["per_class_iou_intervals"].get(name)
            row.append(text.with_interval(entry["iou"], entry["ci"]) if entry else "–")
        rows.append(row)
    return ["class", *(m["model"] for m in models)], rows


def _regions_table(report: dict[str, Any], text: Any) -> tuple[list[str], list[list[str]]] | None:
    regions = report.get("regions")
    if not regions:
        return None
    metric = report.get("headline")
    label = text.HEADLINE[report["kind"]][2]
    models = [m["model"] for m in report["models"]]
    key, test = text.significance_label(report)
    head = [
        "region",
        "pixels" if report["kind"] == "segmentation" else "tiles",
        *(f"{model} ({label})" for model in models),
        "best",
    ]
    if len(models) == 2:
        head.append(test)
    rows = []
    for region in regions:
        by_model = {m["model"]: m for m in region["models"]}
        count = region.get("scored_pixels") if report["kind"] == "segmentation" else region.get("inputs")
        row = [region["region"], f"{count:,}" if count is not None else "–"]
        for model in models:
            m = by_model.get(model) or {}
            row.append(text.with_interval(m.get(metric), m.get(f"{metric}_ci")))
        row.append(region.get("best") or "–")
        if len(models) == 2:
            row.append(text.p_value(region["pairs"][0].get(key)) if region.get("pairs") else "–")
        rows.append(row)
    return head, rows
