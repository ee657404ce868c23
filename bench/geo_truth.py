"""Benchmark (issue 20): geographic truth for compare_models.

    .venv/bin/python bench/geo_truth.py [--size 4096] [--tile 256] [--polygons 10000] [--repeat 3]

1. Truth alignment: --polygons polygons (a jittered grid of cells over the scene, five classes, GeoJSON in
   lon/lat) read onto every --tile x --tile tile of a --size x --size scene (UTM 33N, 10 m):
   - ours: `geotruth.source_of` (read the file, reproject once, an STRtree) and `labels(grid)` per tile
     (orchestrator/compare/geo.py);
   - by hand: json + shapely + pyproj, an STRtree, and `rasterio.features.rasterize` per tile, written for
     this bench as a user would. Both outputs are checked equal. Goal: ours >= 0.9x the hand loop's speed.
2. The comparison's own time vs inference: the two sample land-cover segmenters (scripts/sample_models.py)
   served by a real model server (`python -m model_server`); `model_inference` of each over the scene's
   tiles (the ops, in process), then `compare_models` of the two against the same GeoJSON (its classes named
   as the models' labels): alignment, scoring, bootstrap, maps and the report page. Goal: < 10 % of the two
   inferences. `--truth-raster`: the same polygons as a label raster in lon/lat instead. `--unet WIDTH`: two
   U-Nets of random weights instead of the 1x1 samples (the comparison's cost against a real model's compute).
   Side by side with
   the code before a change: run this file from a worktree of that commit too
   (`--skip-alignment` for part 2 alone), one after the other, and compare the compare_models figures.

Rounds alternate the sides of 1; medians are printed (JSON at the end).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))
from bench.eo_inference import cut_tiles, make_scene  # noqa: E402
from bench.inference import free_port, start_server  # noqa: E402

OUT = ROOT / "bench" / "out" / "geo"
CLASSES = ["water", "vegetation", "bare", "urban", "wetland"]


def make_polygons(path: Path, size: int, count: int) -> Path:
    """`count` polygons tiling the scene: a jittered grid of cells (shared jittered corners), GeoJSON in lon/lat."""
    from pyproj import Transformer

    if path.exists():
        return path
    side = int(round(count**0.5))
    rng = np.random.default_rng(20)
    west, north, extent = 500000.0, 4700000.0, size * 10.0
    step = extent / side
    xs = west + step * np.arange(side + 1)[None, :] + rng.uniform(-0.3, 0.3, (side + 1, side + 1)) * step
    ys = north - step * np.arange(side + 1)[:, None] + rng.uniform(-0.3, 0.3, (side + 1, side + 1)) * step
    xs[:, 0], xs[:, -1], ys[0, :], ys[-1, :] = west, west + extent, north, north - extent
    to_lon_lat = Transformer.from_crs("EPSG:32633", "OGC:CRS84", always_xy=True)
    lon, lat = to_lon_lat.transform(xs, ys)
    features = []
    for row in range(side):
        for col in range(side):
            ring = [(row, col), (row, col + 1), (row + 1, col + 1), (row + 1, col), (row, col)]
            features.append(
                {
                    "type": "Feature",
                    "properties": {"class": CLASSES[int(rng.integers(0, 3 if col % 7 else 5))]},
                    "geometry": {
                        "type": "Polygon",
                        "coordinates": [[[float(lon[r, c]), float(lat[r, c])] for r, c in ring]],
                    },
                }
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path


def make_label_raster(geojson: Path, path: Path, size: int) -> Path:
    """The same polygons as a GeoTIFF of class ids in lon/lat (EPSG:4326), about 8 m a pixel: another CRS and
    resolution than the scene's, so each tile's truth is read through a reprojection. Names in its CLASSES tag."""
    import rasterio
    from rasterio.features import rasterize
    from rasterio.transform import from_bounds
    from shapely.geometry import shape

    if path.exists():
        return path
    features = json.loads(geojson.read_text())["features"]
    geometries = [shape(f["geometry"]) for f in features]
    west = min(g.bounds[0] for g in geometries)
    south = min(g.bounds[1] for g in geometries)
    east = max(g.bounds[2] for g in geometries)
    north = max(g.bounds[3] for g in geometries)
    width, height = int(size * 1.25), int(size * 1.25 * (north - south) / (east - west) * 1.33)
    transform = from_bounds(west, south, east, north, width, height)
    ids = rasterize(
        ((g, CLASSES.index(f["properties"]["class"])) for g, f in zip(geometries, features, strict=True)),
        out_shape=(height, width),
        transform=transform,
        fill=255,
        dtype="uint8",
    )
    profile = {"driver": "GTiff", "width": width, "height": height, "count": 1, "dtype": "uint8", "nodata": 255}
    profile.update(crs="EPSG:4326", transform=transform, tiled=True, compress="deflate")
    with rasterio.open(path, "w", **profile) as out:
        out.write(ids, 1)
        out.update_tags(CLASSES=",".join(CLASSES))
    return path


def unet_segmenter(path: Path, width: int, seed: int, levels: int = 4) -> Path:
    """A U-Net of `levels` levels (two 3x3 convolutions and ReLU per level, `width` channels at the top, doubling
    at each 2x2 max-pooling; 2x2 transposed convolutions up, skips concatenated; a 1x1 convolution into the
    three land-cover classes), as ONNX (onnx's helper), its weights drawn at random (He): the compute of a
    small real segmentation model of the 4 bands, not a trained one. Input FP32 [N, 4, H, W] scaled by 1e-4
    (reflectance x 10000), output `logits` [N, 3, H, W]; H and W multiples of 2^(levels - 1)."""
    from onnx import TensorProto, helper, numpy_helper

    from tiny_models import LAND_COVER_LABELS, _save_onnx

    rng = np.random.default_rng(seed)
    nodes: list[Any] = []
    weights: list[Any] = []

    def tensor(name: str, shape: tuple[int, ...], fan_in: int | None) -> str:
        drawn = rng.normal(0, (2 / fan_in) ** 0.5, shape) if fan_in else np.zeros(shape)  # biases: zero
        weights.append(numpy_helper.from_array(drawn.astype(np.float32), name))
        return name

    def conv(x: str, out: str, c_in: int, c_out: int, k: int = 3, relu: bool = True) -> str:
        w = tensor(f"{out}.w", (c_out, c_in, k, k), c_in * k * k)
        b = tensor(f"{out}.b", (c_out,), None)
        made = f"{out}.conv" if relu else out
        nodes.append(helper.make_node("Conv", [x, w, b], [made], pads=[k // 2] * 4))
        if relu:
            nodes.append(helper.make_node("Relu", [made], [out]))
        return out

    weights.append(numpy_helper.from_array(np.asarray(1e-4, dtype=np.float32), "scale"))
    nodes.append(helper.make_node("Mul", ["bands", "scale"], ["x"]))
    x, channels, skips = "x", 4, []
    for level in range(levels):
        c = width * 2**level
        x = conv(conv(x, f"e{level}a", channels, c), f"e{level}b", c, c)
        channels = c
        if level < levels - 1:
            skips.append((x, c))
            nodes.append(helper.make_node("MaxPool", [x], [f"p{level}"], kernel_shape=[2, 2], strides=[2, 2]))
            x = f"p{level}"
    for level in reversed(range(levels - 1)):
        skip, c = skips[level]
        w = tensor(f"u{level}.w", (channels, c, 2, 2), channels * 4)
        b = tensor(f"u{level}.b", (c,), None)
        nodes.append(helper.make_node("ConvTranspose", [x, w, b], [f"u{level}"], kernel_shape=[2, 2], strides=[2, 2]))
        nodes.append(helper.make_node("Concat", [f"u{level}", skip], [f"k{level}"], axis=1))
        x = conv(conv(f"k{level}", f"d{level}a", 2 * c, c), f"d{level}b", c, c)
        channels = c
    conv(x, "logits", channels, len(LAND_COVER_LABELS), k=1, relu=False)
    graph = helper.make_graph(
        nodes,
        "unet",
        [helper.make_tensor_value_info("bands", TensorProto.FLOAT, ["N", 4, "H", "W"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", len(LAND_COVER_LABELS), "H", "W"])],
        weights,
    )
    return _save_onnx(graph, path, LAND_COVER_LABELS)


def grids_of(size: int, tile: int) -> list[Any]:
    from rasterio.crs import CRS
    from rasterio.transform import from_origin

    from orchestrator.compare.geo import Grid

    crs = CRS.from_epsg(32633)
    return [
        Grid(f"x{col}_y{row}", crs, from_origin(500000 + 10 * col, 4700000 - 10 * row, 10, 10), tile, tile)
        for row in range(0, size, tile)
        for col in range(0, size, tile)
    ]


def ours(path: Path, grids: list[Any]) -> tuple[float, list[np.ndarray]]:
    from orchestrator.compare import geotruth
    from orchestrator.datasets import FileDict

    start = time.perf_counter()
    source = geotruth.source_of(FileDict({path.name: path}), geotruth.Options(column="class"))
    out = [source.labels(grid) for grid in grids]
    return time.perf_counter() - start, out


def by_hand(path: Path, grids: list[Any]) -> tuple[float, list[np.ndarray]]:
    import shapely
    from pyproj import Transformer
    from rasterio.features import rasterize
    from shapely.geometry import shape

    start = time.perf_counter()
    document = json.loads(path.read_bytes())
    names: dict[str, int] = {}
    geometries, codes = [], []
    for feature in document["features"]:
        geometries.append(shape(feature["geometry"]))
        codes.append(names.setdefault(feature["properties"]["class"].casefold(), len(names)))
    move = Transformer.from_crs("OGC:CRS84", "EPSG:32633", always_xy=True)
    projected = shapely.transform(
        np.array(geometries, dtype=object), lambda xy: np.column_stack(move.transform(xy[:, 0], xy[:, 1]))
    )
    tree, codes_array = shapely.STRtree(projected), np.array(codes)
    out = []
    for grid in grids:
        found = np.sort(tree.query(shapely.box(*grid.bounds)))
        out.append(
            rasterize(
                zip(projected[found], codes_array[found].tolist(), strict=True),
                out_shape=grid.shape,
                transform=grid.transform,
                fill=-1,
                dtype="int32",
            )
        )
    return time.perf_counter() - start, out


def alignment(args: argparse.Namespace, truth: Path) -> dict[str, Any]:
    grids = grids_of(args.size, args.tile)
    ours(truth, grids[:2]), by_hand(truth, grids[:2])  # imports, outside the timing
    times: dict[str, list[float]] = {"ours": [], "by hand": []}
    for number in range(args.repeat):
        sides = [("ours", ours), ("by hand", by_hand)]
        for name, side in sides if number % 2 == 0 else sides[::-1]:
            seconds, out = side(truth, grids)
            times[name].append(seconds)
            if name == "ours":
                mine = out
            else:
                theirs = out
        assert all(np.array_equal(a, b) for a, b in zip(mine, theirs, strict=True)), "the two sides differ"
        print(f"round {number + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()), flush=True)
    medians = {k: statistics.median(v) for k, v in times.items()}
    return {"tiles": len(grids), "seconds": medians, "speed_ratio": medians["by hand"] / medians["ours"]}


def comparison(args: argparse.Namespace, truth: Path) -> dict[str, Any]:
    import httpx

    from orchestrator.assets import ops
    from orchestrator.assets.resources import ModelServerConnection, Workspace
    from orchestrator.datasets import FileDict, FileList, FileRef
    from orchestrator.engine import RunContext
    from sample_models import land_cover_segmenter

    scene = make_scene(ROOT / "bench" / "out" / "eo" / f"scene-{args.size}.tif", args.size)
    paths = cut_tiles(scene, ROOT / "bench" / "out" / "eo" / f"tiles-{args.size}-{args.tile}", args.tile)
    tiles = FileList([FileRef(p.name, p) for p in paths])
    figures: dict[str, list[float]] = {"inference": [], "comparison": [], "alignment": []}
    with tempfile.TemporaryDirectory() as temp:
        root = Path(temp) / "models"
        for number, (name, variant) in enumerate((("land-a", "a"), ("land-b", "b"))):
            if args.unet:
                unet_segmenter(root / f"{name}.onnx", args.unet, seed=number)
            else:
                land_cover_segmenter(root / f"{name}.onnx", variant)
        port = free_port()
        server = start_server(root, port, batch=16)
        url = f"http://127.0.0.1:{port}"
        try:
            with httpx.Client(base_url=url, timeout=60) as http:
                for name in ("land-a", "land-b"):
                    http.post(
                        f"/v2/repository/models/{name}/load",
                        json={"parameters": {"source": f"{name}.onnx", "task": "image-segmentation"}},
                    ).raise_for_status()
            for number in range(args.repeat + 1):  # the first round warms imports and the server: not counted
                run = Path(temp) / f"run-{number}"
                workspace = Workspace(data_root=str(truth.parent), artifact_root=str(run / "art"))
                resources = SimpleNamespace(
                    workspace=workspace, model_server=ModelServerConnection(url=url, retry_attempts=1)
                )
                ctx = RunContext(run_dir=run / "run", resources=resources)
                start = time.perf_counter()
                results = [ops.model_inference(ctx, name, tiles) for name in ("land-a", "land-b")]
                inferred = time.perf_counter()
                # "class": the polygons' property (a label raster names its classes in its CLASSES tag)
                ops.compare_models(ctx, results, truth=FileDict({truth.name: truth}), truth_column="class")
                compared = time.perf_counter()
                from orchestrator.compare import geotruth
                from orchestrator.compare.inputs import ModelRun

                runs = [ModelRun(r.model, r.task, r.items, r.stats, r.labels) for r in results]
                aligned_start = time.perf_counter()
                made = geotruth.align(
                    runs, FileDict({truth.name: truth}), geotruth.Options(column="class"), run / "align"
                )
                aligned = time.perf_counter() - aligned_start
                if hasattr(made, "close"):  # the masks it holds for the maps
                    made.close()
                if number == 0:
                    continue
                figures["inference"].append(inferred - start)
                figures["comparison"].append(compared - inferred)
                figures["alignment"].append(aligned)
                print(
                    f"round {number}: two inferences {inferred - start:.2f} s, compare_models "
                    f"{compared - inferred:.2f} s (alignment alone {aligned:.2f} s)",
                    flush=True,
                )
        finally:
            server.terminate()
            server.wait(10)
    medians = {k: statistics.median(v) for k, v in figures.items()}
    return {"tiles": len(paths), "seconds": medians, "share": medians["comparison"] / medians["inference"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--polygons", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-comparison", action="store_true")
    parser.add_argument("--skip-alignment", action="store_true", help="part 2 only")
    parser.add_argument(
        "--truth-raster",
        action="store_true",
        help="part 2 against the polygons as a label raster in lon/lat (another CRS and resolution)",
    )
    parser.add_argument(
        "--unet",
        type=int,
        default=0,
        metavar="WIDTH",
        help="part 2 with two U-Nets of this top width (random weights) instead of the 1x1 sample segmenters",
    )
    args = parser.parse_args()
    truth = make_polygons(OUT / f"truth-{args.size}-{args.polygons}.geojson", args.size, args.polygons)
    if args.truth_raster:
        args.skip_alignment = True  # part 1 compares polygon rasterizing with a hand loop: not this truth
        truth = make_label_raster(truth, OUT / f"truth-{args.size}-{args.polygons}.tif", args.size)
    print(
        f"{args.polygons} polygons over a {args.size}x{args.size} scene in {args.tile}x{args.tile} tiles; "
        f"{os.cpu_count()} CPUs; load {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    found: dict[str, Any] = {} if args.skip_alignment else {"alignment": alignment(args, truth)}
    if not args.skip_comparison:
        found["comparison"] = comparison(args, truth)
    found["load"] = os.getloadavg()[0]
    print(json.dumps(found, indent=1))


if __name__ == "__main__":
    main()
