"""mosaic: georeferenced tiles (tile_image's, or masks predicted on them) merged back into their scenes.

Tiles are grouped by the scene they came from (their `tile` facts, else the origin tile_image
wrote inside each file, else the folder of their name, `<scene>/x<col>_y<row>.tif`) and placed by
their geotransforms on the grid they share. Where tiles overlap, each pixel comes from the tile
whose centre is nearest (the first such tile on a tie): a model's predictions are least reliable
near a tile's edges. The output is written block by block; each block reads only the tiles that
cover it, so memory follows the block, not the scene.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.datasets import FileRef
from orchestrator.engine import OperationError
from orchestrator.transforms import rasters
from orchestrator.transforms.images import output_path
from orchestrator.transforms.raster_ops import TILE_TAG, Check, _no_check, derived, windows

MOSAIC_BLOCK = 1024


@dataclass(frozen=True)
class _Tile:
    ref: FileRef
    col: int  # its place on the scene's grid, in output pixels
    row: int
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


def _grid(scene: str, refs: list[FileRef], caps: int | None) -> tuple[dict[str, Any], list[_Tile]]:
    """The scene's grid (the union of the tiles, at their resolution) and each tile's place on it."""
    from rasterio.transform import Affine

    first: dict[str, Any] = {}
    placed: list[tuple[FileRef, float, float, int, int]] = []
    for ref in refs:
        with rasters.open_raster(ref.path, caps, ref.name) as src:
            t = src.transform
            this = {
                "crs": src.crs,
                "res": (t.a, t.e),
                "count": src.count,
                "dtype": src.dtypes[0],
                "nodata": src.nodata,
                "names": [d or None for d in src.descriptions],
                "scales": src.scales,
                "offsets": src.offsets,
            }
            if t.b or t.d:
                raise OperationError(f"{ref.name!r} is rotated; mosaic takes north-up tiles")
            if not first:
                first = {**this, "ref": ref}
            else:
                for key, what in (("crs", "CRS"), ("count", "band count"), ("dtype", "data type")):
                    if this[key] != first[key]:
                        raise OperationError(
                            f"{ref.name!r} and {first['ref'].name!r} (scene {scene!r}) differ in "
                            f"{what}: {this[key]} vs {first[key]}; mosaic merges tiles of one grid"
                        )
                if any(abs(a - b) > 1e-9 * abs(b) for a, b in zip(this["res"], first["res"], strict=True)):
                    raise OperationError(
                        f"{ref.name!r} has pixels of {this['res']}, {first['ref'].name!r} of "
                        f"{first['res']} (scene {scene!r}); mosaic merges tiles of one grid"
                    )
            placed.append((ref, t.c, t.f, src.width, src.height))
    a, e = first["res"]
    left = min(x for _, x, _, _, _ in placed)
    top = max(y for _, _, y, _, _ in placed) if e < 0 else min(y for _, _, y, _, _ in placed)
    tiles = []
    for ref, x, y, width, height in placed:
        col, row = (x - left) / a, (y - top) / e
        if abs(col - round(col)) > 1e-6 or abs(row - round(row)) > 1e-6:
            raise OperationError(
                f"{ref.name!r} is not aligned with the other tiles of {scene!r} (offset by {col:.3f}, {row:.3f} pixels)"
            )
        tiles.append(_Tile(ref, round(col), round(row), width, height))
    first["width"] = max(t.col + t.width for t in tiles)
    first["height"] = max(t.row + t.height for t in tiles)
    first["transform"] = Affine(a, 0.0, left, 0.0, e, top)
    return first, tiles


def mosaic(scene: str, refs: list[FileRef], out_dir: Path, caps: int | None, check: Check = _no_check) -> FileRef:
    """One GeoTIFF for `scene` from its tiles: each pixel from the covering tile whose centre is nearest."""
    import numpy as np
    from rasterio.windows import Window

    grid, tiles = _grid(scene, refs, caps)
    nodata = grid["nodata"]
    name = scene if rasters.named_like_raster(scene) else scene + ".tif"
    target = output_path(out_dir, name)
    profile = rasters.output_profile(
        grid["width"], grid["height"], grid["count"], grid["dtype"], grid["crs"], grid["transform"], nodata
    )
    fill = nodata if nodata is not None else 0
    rects = np.array([(t.col, t.row, t.col + t.width, t.row + t.height) for t in tiles])
    with rasters.write_like(target, profile, grid["names"], grid["scales"], grid["offsets"], caps=caps) as dst:
        for block in windows(grid["width"], grid["height"], MOSAIC_BLOCK):
            check()
            c0, r0 = int(block.col_off), int(block.row_off)
            c1, r1 = c0 + int(block.width), r0 + int(block.height)
            out = np.full((grid["count"], r1 - r0, c1 - c0), fill, dtype=grid["dtype"])
            best = np.full((r1 - r0, c1 - c0), np.inf, dtype=np.float64)
            covering = np.nonzero((rects[:, 0] < c1) & (rects[:, 2] > c0) & (rects[:, 1] < r1) & (rects[:, 3] > r0))[0]
            for i in covering:
                t = tiles[i]
                x0, y0, x1, y1 = max(c0, t.col), max(r0, t.row), min(c1, t.col + t.width), min(r1, t.row + t.height)
                with rasters.open_raster(t.ref.path, caps, t.ref.name) as src:
                    data = src.read(window=Window(x0 - t.col, y0 - t.row, x1 - x0, y1 - y0))
                # squared distance of each pixel's centre to the tile's centre, in pixels
                ys = np.arange(y0, y1)[:, None] + 0.5 - (t.row + t.height / 2)
                xs = np.arange(x0, x1)[None, :] + 0.5 - (t.col + t.width / 2)
                distance = ys * ys + xs * xs
                here = best[y0 - r0 : y1 - r0, x0 - c0 : x1 - c0]
                nearer = distance < here
                here[nearer] = distance[nearer]
                out[:, y0 - r0 : y1 - r0, x0 - c0 : x1 - c0][:, nearer] = data[:, nearer]
            dst.write(out, window=block)
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
        if isinstance(source, Path) and rasters.has_tiff_magic(source):
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
