"""Maps of a comparison on the Earth: each scene's input, every model's prediction, the truth, and where they differ.

For each scene the tiles came from, the predicted masks of every model and the truth tiles are
merged back into scene GeoTIFFs by `mosaic` (the same placement as the operation), and a
disagreement GeoTIFF is computed from them by blocks (0 the models agree, 1 they do not, 255 no
prediction). Those files are what a user downloads into a GIS. The page gets small PNG pictures of
them (nearest-neighbour decimated reads, one colour per class name, the same in every picture) and
a quicklook of the input: an RGB composite of its tiles (red, green, blue bands by name, else bands
3, 2, 1), each band stretched between its 2nd and 98th percentile over valid pixels.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.compare.geotruth import IGNORE, Aligned
from orchestrator.datasets import FileRef, Predictions

QUICKLOOK = 720  # the longer side of a picture, in pixels
NO_DATA_COLOUR = (246, 247, 249)  # the page's background: no prediction, no truth
AGREE_COLOUR, DISAGREE_COLOUR = (205, 210, 218), (214, 39, 40)
DISAGREEMENT_NODATA = 255
RGB_NAMES = (("red", "green", "blue"), ("b04", "b03", "b02"), ("r", "g", "b"))


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

    colours = colormaps["tab20"].colors
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
) -> tuple[list[SceneMaps], dict[str, tuple[int, int, int]]]:
    """Scene GeoTIFFs (predictions, truth, disagreement) and the page's pictures; the class colours."""
    from orchestrator.transforms import mosaic as mosaics

    colours = palette(aligned.vocabulary or aligned.names)
    if aligned.kind != "segmentation":
        return [], colours
    per_model = [mosaics.group(mosaics.mask_refs(result), caps) for result in results]
    scenes: list[SceneMaps] = []
    for scene, refs in per_model[0].items():
        check()
        stem = _safe(Path(scene).stem or "scene")
        folder = out_dir / stem
        made: dict[str, FileRef] = {}
        for index, (result, groups) in enumerate(zip(results, per_model, strict=True)):
            tiles = groups.get(scene)
            if not tiles:
                continue
            made[result.model] = mosaics.mosaic(
                f"{_safe(result.model)}.tif", tiles, folder / f"model-{index + 1}", caps, check
            )
        facts = made[results[0].model].meta
        maps = SceneMaps(
            scene,
            int(facts["width"]),
            int(facts["height"]),
            str(facts.get("crs")),
            {model: ref.path for model, ref in made.items()},
        )
        truth_refs = [
            FileRef(ref.name, aligned.truth_tiles[ref.name], ref.meta)
            for ref in refs
            if ref.name in aligned.truth_tiles
        ]
        if truth_refs:
            maps.truth = mosaics.mosaic("truth.tif", truth_refs, folder / "truth", caps, check).path
        maps.disagreement, maps.disagreeing_share = _disagreement(
            results, maps, aligned, folder / "disagreement.tif", caps
        )
        maps.pictures = _pictures(results, maps, aligned, colours, refs, caps)
        scenes.append(maps)
    return scenes, colours


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


def _disagreement(
    results: Sequence[Predictions], maps: SceneMaps, aligned: Aligned, target: Path, caps: int | None
) -> tuple[Path | None, float | None]:
    """A uint8 GeoTIFF on the scene's grid: 1 where the models' classes differ, 0 where they agree, 255 where any
    model has no prediction; and the share of predicted pixels that differ."""
    from orchestrator.transforms import rasters
    from orchestrator.transforms.raster_ops import windows

    if len(maps.predictions) < 2:
        return None, None
    tables, _ = _class_tables(results, aligned)
    paths = [maps.predictions[r.model] for r in results if r.model in maps.predictions]
    differ = total = 0
    with ExitStack() as stack:
        datasets = [stack.enter_context(rasters.open_raster(path, caps)) for path in paths]
        first = datasets[0]
        profile = rasters.output_profile(
            first.width, first.height, 1, "uint8", first.crs, first.transform, DISAGREEMENT_NODATA
        )
        with rasters.write_like(target, profile, descriptions=["disagreement"]) as out:
            for window in windows(profile["width"], profile["height"], 1024):
                valid = None
                codes = []
                for i, dataset in enumerate(datasets):
                    ids = dataset.read(1, window=window)
                    here = ids != dataset.nodata if dataset.nodata is not None else np.ones(ids.shape, bool)
                    valid = here if valid is None else valid & here
                    table = tables[i]
                    codes.append(table[np.minimum(ids, table.size - 1)])
                assert valid is not None
                different = np.zeros(valid.shape, dtype=bool)
                for other in codes[1:]:
                    different |= other != codes[0]
                block = np.where(valid, different.astype(np.uint8), DISAGREEMENT_NODATA).astype(np.uint8)
                out.write(block, 1, window=window)
                differ += int((different & valid).sum())
                total += int(valid.sum())
    return target, (differ / total if total else None)


def _decimated(path: Path, caps: int | None, shape: tuple[int, int]) -> tuple[np.ndarray, Any]:
    from rasterio.enums import Resampling

    from orchestrator.transforms import rasters

    with rasters.open_raster(path, caps) as dataset:
        return dataset.read(1, out_shape=shape, resampling=Resampling.nearest), dataset.nodata


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
    refs: Sequence[FileRef],
    caps: int | None,
) -> list[dict]:
    shape = _picture_shape(maps.width, maps.height)
    pictures = []
    quicklook = _quicklook(results[0], maps, refs, shape, caps)
    if quicklook is not None:
        pictures.append({"caption": "input (RGB composite)", "png": _png(quicklook), "kind": "input"})
    if maps.truth is not None:
        ids, _ = _decimated(maps.truth, caps, shape)
        pictures.append(
            {"caption": "truth", "png": _png(_coloured(ids, IGNORE, aligned.names, colours)), "kind": "truth"}
        )
    for result in results:
        path = maps.predictions.get(result.model)
        if path is None:
            continue
        ids, nodata = _decimated(path, caps, shape)
        pictures.append(
            {"caption": result.model, "png": _png(_coloured(ids, nodata, result.labels, colours)), "kind": "prediction"}
        )
    if maps.disagreement is not None:
        ids, _ = _decimated(maps.disagreement, caps, shape)
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
    result: Predictions, maps: SceneMaps, refs: Sequence[FileRef], shape: tuple[int, int], caps: int | None
) -> np.ndarray | None:
    """The input tiles of the scene as one small RGB picture, or None when they are not GeoTIFFs."""
    from rasterio.enums import Resampling

    from orchestrator.transforms import rasters

    with rasters.open_raster(maps.predictions[result.model], caps) as scene:
        origin = scene.transform
    sy, sx = shape[0] / maps.height, shape[1] / maps.width
    picture = np.zeros((3, *shape), dtype=np.float32)
    valid = np.zeros(shape, dtype=bool)
    for ref in refs:
        source = result.inputs.get(ref.name)
        if not isinstance(source, Path) or not rasters.has_tiff_magic(source):
            return None
        with rasters.open_raster(source, caps, ref.name) as tile:
            t = tile.transform
            col, row = (t.c - origin.c) / origin.a, (t.f - origin.f) / origin.e
            x0, y0 = round(col * sx), round(row * sy)
            x1, y1 = round((col + tile.width) * sx), round((row + tile.height) * sy)
            x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, shape[1]), min(y1, shape[0])
            if x1 <= x0 or y1 <= y0:
                continue
            bands = _rgb_bands(tile)
            data = tile.read(bands, out_shape=(3, y1 - y0, x1 - x0), resampling=Resampling.nearest, out_dtype="float32")
            mask = tile.dataset_mask(out_shape=(y1 - y0, x1 - x0), resampling=Resampling.nearest) > 0
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
