"""mosaic: georeferenced tiles (tile_image's, or masks predicted on them) merged back into their scenes.

Tiles are grouped by the scene they came from (their `tile` facts, else the origin tile_image
wrote inside each file, else the folder of their name, `<scene>/x<col>_y<row>.tif`) and placed by
their geotransforms on the grid they share (`place`). Where tiles overlap, each pixel comes from the
tile whose centre is nearest (the first such tile on a tie): a model's predictions are least reliable
near a tile's edges. The output is written block by block (`merge`); each block reads only the tiles
that cover it, so memory follows the block, not the scene. `merge` takes any reader of tiles: the
operation reads files, a comparison's maps the masks it holds in memory.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.datasets import FileRef
from orchestrator.engine import OperationError
from orchestrator.transforms import rasters
from orchestrator.transforms.images import output_path
from orchestrator.transforms.raster_ops import TILE_TAG, Check, _has_mask, _no_check, derived, windows

MOSAIC_BLOCK = 1024


class NotOneGrid(OperationError):
    """Tiles that do not lie on one north-up pixel lattice (rotated, or of different CRS, resolution or offset):
    no mosaic of them exists. A comparison's maps are left out for such a scene; its scores stand."""


@dataclass(frozen=True)
class Placed:
    """A tile's place on its scene's grid, in output pixels; `key` is what `merge`'s reader is given for it."""

    key: Any
    col: int
    row: int
    width: int
    height: int


@dataclass(frozen=True)
class Footprint:
    """Where a tile lies: its CRS, north-up geotransform and size (from its file, or from facts already read)."""

    key: Any
    name: str
    crs: Any
    transform: Any  # affine.Affine
    width: int
    height: int


def scene_of(ref: FileRef, tags: dict[str, str]) -> str:
    """The name of the scene a tile came from."""
    origin = ref.meta.get("tile")
    if isinstance(origin, dict) and origin.get("source"):
        return str(origin["source"])
    if TILE_TAG in tags:
        try:
            return str(json.loads(tags[TILE_TAG])["source"])
        except (ValueError, KeyError, TypeError):
            pass
    folder = str(Path(ref.name).parent)
    return folder + ".tif" if folder not in ("", ".") else "mosaic.tif"


def group(
    refs: list[FileRef], caps: int | None, tags_of: Callable[[FileRef], dict[str, str]] | None = None
) -> dict[str, list[FileRef]]:
    """Tiles by scene, in the order the scenes first appear."""
    groups: dict[str, list[FileRef]] = {}
    for ref in refs:
        tags: dict[str, str] = {}
        if not isinstance(ref.meta.get("tile"), dict):
            with rasters.open_raster(ref.path, caps, ref.name) as src:
                tags = src.tags()
        groups.setdefault(scene_of(ref, tags), []).append(ref)
    return groups


def place(scene: str, footprints: Sequence[Footprint]) -> tuple[Any, int, int, list[Placed]]:
    """The scene's grid (the union of the tiles, at their resolution): its transform, width and height, and each
    tile's place on it. The tiles must share a CRS, a resolution and a pixel lattice."""
    from rasterio.transform import Affine

    first = footprints[0]
    a, e = first.transform.a, first.transform.e
    for tile in footprints:
        t = tile.transform
        if t.b or t.d:
            raise NotOneGrid(f"{tile.name!r} is rotated; mosaic takes north-up tiles")
        if tile.crs != first.crs:
            raise NotOneGrid(
                f"{tile.name!r} and {first.name!r} (scene {scene!r}) differ in CRS: {tile.crs} vs "
                f"{first.crs}; mosaic merges tiles of one grid"
            )
        if abs(t.a - a) > 1e-9 * abs(a) or abs(t.e - e) > 1e-9 * abs(e):
            raise NotOneGrid(
                f"{tile.name!r} has pixels of {(t.a, t.e)}, {first.name!r} of {(a, e)} (scene {scene!r}); "
                "mosaic merges tiles of one grid"
            )
    left = min(f.transform.c for f in footprints)
    tops = [f.transform.f for f in footprints]
    top = max(tops) if e < 0 else min(tops)
    tiles = []
    for tile in footprints:
        col, row = (tile.transform.c - left) / a, (tile.transform.f - top) / e
        if abs(col - round(col)) > 1e-6 or abs(row - round(row)) > 1e-6:
            raise NotOneGrid(
                f"{tile.name!r} is not aligned with the other tiles of {scene!r} "
                f"(offset by {col:.3f}, {row:.3f} pixels)"
            )
        tiles.append(Placed(tile.key, round(col), round(row), tile.width, tile.height))
    width = max(t.col + t.width for t in tiles)
    height = max(t.row + t.height for t in tiles)
    return Affine(a, 0.0, left, 0.0, e, top), width, height, tiles


def _grid(scene: str, refs: list[FileRef], caps: int | None) -> tuple[dict[str, Any], list[Placed]]:
    """The scene's grid (the union of the tiles, at their resolution) and each tile's place on it."""
    first: dict[str, Any] = {}
    footprints = []
    for ref in refs:
        with rasters.open_raster(ref.path, caps, ref.name) as src:
            this = {
                "crs": src.crs,
                "count": src.count,
                "dtype": src.dtypes[0],
                "nodata": src.nodata,
                "names": [d or None for d in src.descriptions],
                "scales": src.scales,
                "offsets": src.offsets,
            }
            if not first:
                first = {**this, "ref": ref, "masked": False}
            else:
                for key, what in (("count", "band count"), ("dtype", "data type")):
                    if this[key] != first[key]:
                        raise OperationError(
                            f"{ref.name!r} and {first['ref'].name!r} (scene {scene!r}) differ in "
                            f"{what}: {this[key]} vs {first[key]}; mosaic merges tiles of one grid"
                        )
            # Tiles whose validity is a mask (tile_image keeps a scene's), not a nodata value: the mosaic keeps it.
            first["masked"] |= src.nodata is None and _has_mask(src)
            footprints.append(Footprint(ref, ref.name, src.crs, src.transform, src.width, src.height))
    first["transform"], first["width"], first["height"], tiles = place(scene, footprints)
    return first, tiles


def merge(
    tiles: Sequence[Placed],
    width: int,
    height: int,
    count: int,
    dtype: Any,
    fill: Any,
    read: Callable[[Placed, Any], Any],
    check: Check = _no_check,
) -> Iterator[tuple[Any, Any]]:
    """The scene's blocks, row-major: (window, count × rows × columns array), each pixel from the covering tile whose
    centre is nearest (the first such tile on a tie), `fill` where none covers it. `read(tile, window)` gives a
    window of a tile's pixels (count × rows × columns). A tile that no other covering tile overlaps is copied
    whole; only where tiles overlap are distances compared."""
    import numpy as np
    from rasterio.windows import Window

    rects = np.array([(t.col, t.row, t.col + t.width, t.row + t.height) for t in tiles]).reshape(-1, 4)
    for block in windows(width, height, MOSAIC_BLOCK):
        check()
        c0, r0 = int(block.col_off), int(block.row_off)
        c1, r1 = c0 + int(block.width), r0 + int(block.height)
        out = np.full((count, r1 - r0, c1 - c0), fill, dtype=dtype)
        best: Any = None
        covering = np.nonzero((rects[:, 0] < c1) & (rects[:, 2] > c0) & (rects[:, 1] < r1) & (rects[:, 3] > r0))[0]
        clipped = np.column_stack(
            [
                np.maximum(rects[covering, 0], c0),
                np.maximum(rects[covering, 1], r0),
                np.minimum(rects[covering, 2], c1),
                np.minimum(rects[covering, 3], r1),
            ]
        )
        crossing = (
            (clipped[:, None, 0] < clipped[None, :, 2])
            & (clipped[None, :, 0] < clipped[:, None, 2])
            & (clipped[:, None, 1] < clipped[None, :, 3])
            & (clipped[None, :, 1] < clipped[:, None, 3])
        )
        np.fill_diagonal(crossing, False)
        for k, i in enumerate(covering):
            t = tiles[int(i)]
            x0, y0, x1, y1 = (int(v) for v in clipped[k])
            data = read(t, Window(x0 - t.col, y0 - t.row, x1 - x0, y1 - y0))
            target = out[:, y0 - r0 : y1 - r0, x0 - c0 : x1 - c0]
            if not crossing[k].any():  # the only tile here: all its pixels
                target[...] = data
                continue
            if best is None:
                best = np.full((r1 - r0, c1 - c0), np.inf, dtype=np.float64)
            # squared distance of each pixel's centre to the tile's centre, in pixels
            ys = np.arange(y0, y1)[:, None] + 0.5 - (t.row + t.height / 2)
            xs = np.arange(x0, x1)[None, :] + 0.5 - (t.col + t.width / 2)
            distance = ys * ys + xs * xs
            here = best[y0 - r0 : y1 - r0, x0 - c0 : x1 - c0]
            nearer = distance < here
            here[nearer] = distance[nearer]
            target[:, nearer] = data[:, nearer]
        yield block, out


def mosaic(scene: str, refs: list[FileRef], out_dir: Path, caps: int | None, check: Check = _no_check) -> FileRef:
    """One GeoTIFF for `scene` from its tiles: each pixel from the covering tile whose centre is nearest."""
    import numpy as np

    grid, tiles = _grid(scene, refs, caps)
    nodata = grid["nodata"]
    name = scene if rasters.named_like_raster(scene) else scene + ".tif"
    target = output_path(out_dir, name)
    profile = rasters.output_profile(
        grid["width"], grid["height"], grid["count"], grid["dtype"], grid["crs"], grid["transform"], nodata
    )

    count, masked = grid["count"], grid["masked"]

    def read(tile: Placed, window: Any) -> Any:
        with rasters.open_raster(tile.key.path, caps, tile.key.name) as src:
            if not masked:
                return src.read(window=window)
            # the mask merged as one more band (1 valid, 0 not: a value of any data type), from the same tile
            valid = (src.read_masks(1, window=window) > 0)[None].astype(grid["dtype"])
            return np.concatenate([src.read(window=window), valid])

    fill = nodata if nodata is not None else 0  # masked: the mask band is 0 (not valid) where no tile covers
    bands = count + 1 if masked else count
    with rasters.write_like(target, profile, grid["names"], grid["scales"], grid["offsets"], caps=caps) as dst:
        for block, out in merge(tiles, grid["width"], grid["height"], bands, grid["dtype"], fill, read, check):
            dst.write(out[:count], window=block)
            if masked:
                dst.write_mask(np.where(out[count] > 0, 255, 0).astype(np.uint8), window=block)
        first = refs[0]
        kept = {k: v for k, v in first.meta.items() if k != "tile"}
        return derived(FileRef(first.name, first.path, kept), name, target, dst, mosaic={"tiles": len(refs)})


def mask_refs(predictions: Any) -> list[FileRef]:
    """A segmentation model's predicted masks as tiles: each named like its input, with the input tile's origin."""
    refs = []
    for item in predictions.items:
        if "mask" not in item:
            continue
        meta: dict[str, Any] = {}
        source = predictions.inputs.get(item["name"])
        if isinstance(item.get("tile"), dict):  # model_inference kept the tile's origin
            meta["tile"] = item["tile"]
        elif isinstance(source, Path) and rasters.has_tiff_magic(source):  # predictions of before it did
            try:
                with rasters.open_raster(source, None, item["name"]) as tile:
                    origin = tile.tags().get(TILE_TAG)
                if origin:
                    meta["tile"] = json.loads(origin)
            except (OperationError, ValueError):
                pass
        refs.append(FileRef(item["name"], Path(item["mask"]), meta))
    if not refs:
        raise OperationError(
            f"the predictions of {predictions.model!r} ({predictions.task}) hold no masks; mosaic "
            "takes raster tiles or a segmentation model's predicted masks"
        )
    return refs
