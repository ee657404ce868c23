"""Benchmark: two-model multi-band segmentation of a scene's tiles through the model server vs ONNX Runtime in
process on the same tiles (issue 19: goal >= 0.8x).

    .venv/bin/python bench/eo_inference.py [--size 8192] [--tile 256] [--batch 16] [--repeat 3]

A 4-band uint16 scene of --size x --size pixels (UTM 33N, 10 m, a nodata border, smooth fields so that
it compresses like a real one) is written once to bench/out/eo/ as a tiled, deflate GeoTIFF and cut
into --tile x --tile GeoTIFF tiles (rasterio windows; not timed: the subject is inference). The two
sample land-cover segmenters (scripts/sample_models.py: land-cover-a, land-cover-b) go into a
temporary models root; a real model server (`python -m model_server`, batch size --batch) loads them.

Sides, each over every tile with both models, in batches of --batch tiles:

1. pipeline: what model_inference does (orchestrator/models/inference.predict_tiles): read each tile with
   rasterio as float32, send the batch to the server in binary (the binary tensor data extension), get
   `class_id` back in binary, write each mask as a GeoTIFF on the tile's grid with nodata where the tile
   had none.
2. in process (the baseline): the same reading and mask writing (the same functions), with
   `onnxruntime.InferenceSession.run` in this process and the server's own argmax over the classes
   (`best_class`) in place of the server.
3. transport only: the tiles read into memory beforehand, then `ModelServer.infer_tensor` vs `session.run`
   + `best_class` on the same arrays (what the protocol costs, without the files).
4. JSON numbers (a few batches only, it is slow): the same tiles as the protocol's JSON `data` lists,
   `class_id` answered as JSON, to show what the binary extension saves.

Rounds interleave the sides, the side going first switching every round; the tables give medians.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))
from bench.inference import cpu_seconds, free_port, peak_rss_mb, start_server  # noqa: E402
from model_server.tasks.onnx_image import best_class  # noqa: E402  (the server's own argmax, for a like baseline)

OUT = ROOT / "bench" / "out"
MODELS = {"land-a": "a", "land-b": "b"}


# --- data ---------------------------------------------------------------------------------------------------------


def make_scene(path: Path, size: int) -> Path:
    """A 4-band uint16 scene (blue, green, red, nir): smooth water / vegetation / soil fields, noise, a nodata
    border of 40 pixels; written in strips, so memory stays a strip."""
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = {
        "driver": "GTiff",
        "width": size,
        "height": size,
        "count": 4,
        "dtype": "uint16",
        "nodata": 0,
        "crs": "EPSG:32633",
        "transform": from_origin(500000, 4700000, 10, 10),
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
        "compress": "deflate",
        "predictor": 2,
        "bigtiff": "IF_SAFER",
    }
    rng = np.random.default_rng(0)
    columns = np.arange(size)
    partial = path.with_suffix(".partial.tif")
    with rasterio.open(partial, "w", **profile) as out:
        out.descriptions = ("blue", "green", "red", "nir")
        for top in range(0, size, 512):
            rows = np.arange(top, min(top + 512, size))[:, None]
            wave = np.sin(rows / 700.0) + np.cos(columns[None, :] / 900.0) + 0.3 * np.sin((rows + columns) / 150.0)
            water, vegetation = wave < -0.6, wave > 0.5
            strip = np.empty((4, len(rows), size), dtype=np.uint16)
            for band, (soil, wet, green) in enumerate(
                ((900, 600, 500), (1300, 1200, 900), (1800, 700, 600), (2500, 300, 4200))
            ):
                base = np.where(water, wet, np.where(vegetation, green, soil)).astype(np.float32)
                strip[band] = np.clip(base + rng.normal(0, 150, base.shape), 1, 65535).astype(np.uint16)
            border = (rows < 40) | (rows >= size - 40) | (columns[None, :] < 40) | (columns[None, :] >= size - 40)
            strip[:, border] = 0
            out.write(strip, window=Window(0, top, size, len(rows)))
    partial.rename(path)
    return path


def cut_tiles(scene: Path, folder: Path, tile: int) -> list[Path]:
    """The scene's tile x tile GeoTIFF tiles (each with its own geotransform), made once."""
    import rasterio
    from rasterio.windows import Window

    done = folder / ".done"
    if done.exists():
        return sorted(folder.glob("*.tif"))
    folder.mkdir(parents=True, exist_ok=True)
    with rasterio.open(scene) as source:
        for row in range(0, source.height, tile):
            for col in range(0, source.width, tile):
                window = Window(col, row, tile, tile)
                profile = {
                    **source.profile,
                    "width": tile,
                    "height": tile,
                    "transform": source.window_transform(window),
                    "tiled": False,
                }
                profile.pop("blockxsize", None)
                profile.pop("blockysize", None)
                with rasterio.open(folder / f"tile_{row:05d}_{col:05d}.tif", "w", **profile) as out:
                    out.write(source.read(window=window))
                    out.descriptions = source.descriptions
    done.write_text("")
    return sorted(folder.glob("*.tif"))


def batches_of(refs: list[Any], size: int) -> list[list[Any]]:
    return [refs[i : i + size] for i in range(0, len(refs), size)]


# --- sides ----------------------------------------------------------------------------------------------------------


def pipeline_side(url: str, refs: list[Any], batch: int, metadata: dict[str, dict], out: Path) -> float:
    """model_inference's own path for both models: seconds."""
    from orchestrator.models.client import ModelServer
    from orchestrator.models.inference import ImageOptions, predict_tiles
    from orchestrator.models.tensors import TensorModel

    start = time.perf_counter()
    with ModelServer(url, timeout_s=600) as client:
        for name in MODELS:
            model = TensorModel.of(name, "image-segmentation", metadata[name])
            options = ImageOptions(mask_dir=out / "pipeline" / name)
            predict_tiles(client, model, batches_of(refs, batch), options, lambda: None)
    return time.perf_counter() - start


def in_process_side(
    sessions: dict[str, Any], refs: list[Any], batch: int, metadata: dict[str, dict], out: Path
) -> float:
    """The same reading and mask writing, ONNX Runtime in this process: seconds."""
    from orchestrator.models import tensors
    from orchestrator.models.tensors import TensorModel

    start = time.perf_counter()
    for name, session in sessions.items():
        model = TensorModel.of(name, "image-segmentation", metadata[name])
        folder = out / "in-process" / name
        for number, chunk in enumerate(batches_of(refs, batch)):
            tiles = [tensors.read_tile(ref, model) for ref in chunk]
            (logits,) = session.run(None, {"bands": tensors.stack(tiles, model)})
            ids = best_class(logits)
            for index, tile in enumerate(tiles):
                tensors.write_mask(tile, ids[index], folder / f"{number:06d}-{index:04d}.tif", 3)
    return time.perf_counter() - start


def transport_server(url: str, arrays: list[np.ndarray]) -> float:
    from orchestrator.models.client import ModelServer

    start = time.perf_counter()
    with ModelServer(url, timeout_s=600) as client:
        for name in MODELS:
            for array in arrays:
                client.infer_tensor(name, array, ["class_id"])
    return time.perf_counter() - start


def transport_in_process(sessions: dict[str, Any], arrays: list[np.ndarray]) -> float:
    start = time.perf_counter()
    for session in sessions.values():
        for array in arrays:
            (logits,) = session.run(None, {"bands": array})
            best_class(logits)
    return time.perf_counter() - start


def json_side(url: str, arrays: list[np.ndarray]) -> float:
    start = time.perf_counter()
    with httpx.Client(base_url=url, timeout=600) as http:
        for name in MODELS:
            for array in arrays:
                body = {
                    "inputs": [
                        {
                            "name": "bands",
                            "shape": list(array.shape),
                            "datatype": "FP32",
                            "data": array.ravel().tolist(),
                        }
                    ],
                    "outputs": [{"name": "class_id"}],
                }
                answer = http.post(
                    f"/v2/models/{name}/infer", content=json.dumps(body), headers={"Content-Type": "application/json"}
                )
                answer.raise_for_status()
                np.asarray(answer.json()["outputs"][0]["data"], dtype=np.uint8)
    return time.perf_counter() - start


# --- main -----------------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=8192)
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json-batches", type=int, default=4, help="batches sent as JSON numbers (side 4)")
    args = parser.parse_args()

    import onnxruntime

    from orchestrator.datasets import FileRef
    from orchestrator.models import tensors
    from orchestrator.models.tensors import TensorModel
    from sample_models import land_cover_segmenter

    data = OUT / "eo"
    scene = make_scene(data / f"scene-{args.size}.tif", args.size)
    paths = cut_tiles(scene, data / f"tiles-{args.size}-{args.tile}", args.tile)
    refs = [FileRef(p.name, p) for p in paths]
    print(
        f"{len(refs)} tiles of {args.tile}x{args.tile}x4 uint16 from a {args.size}x{args.size} scene; "
        f"batch {args.batch}; {os.cpu_count()} CPUs; load {os.getloadavg()[0]:.2f}",
        flush=True,
    )

    with tempfile.TemporaryDirectory() as temp:
        root = Path(temp) / "models"
        for name, variant in MODELS.items():
            land_cover_segmenter(root / f"{name}.onnx", variant)
        sessions = {
            name: onnxruntime.InferenceSession(str(root / f"{name}.onnx"), providers=["CPUExecutionProvider"])
            for name in MODELS
        }
        port = free_port()
        server = start_server(root, port, batch=args.batch)
        url = f"http://127.0.0.1:{port}"
        try:
            with httpx.Client(base_url=url, timeout=60) as http:
                for name in MODELS:
                    http.post(
                        f"/v2/repository/models/{name}/load",
                        json={"parameters": {"source": f"{name}.onnx", "task": "image-segmentation"}},
                    ).raise_for_status()
                metadata = {name: http.get(f"/v2/models/{name}").json() for name in MODELS}
            model = TensorModel.of("land-a", "image-segmentation", metadata["land-a"])
            arrays = [
                tensors.stack([tensors.read_tile(r, model) for r in chunk], model)
                for chunk in batches_of(refs, args.batch)
            ]
            work = Path(temp) / "out"
            transport_server(url, arrays[:1])  # warm both: ONNX Runtime's first run allocates its buffers
            transport_in_process(sessions, arrays[:1])
            rounds: dict[str, list[float]] = {
                k: [] for k in ("pipeline", "in process", "transport server", "transport in process")
            }
            cpu: dict[str, list[float]] = {k: [] for k in rounds}
            load: list[float] = []
            for number in range(args.repeat):
                folder = work / str(number)
                sides = [
                    ("pipeline", lambda folder=folder: pipeline_side(url, refs, args.batch, metadata, folder)),
                    ("in process", lambda folder=folder: in_process_side(sessions, refs, args.batch, metadata, folder)),
                    ("transport server", lambda: transport_server(url, arrays)),
                    ("transport in process", lambda: transport_in_process(sessions, arrays)),
                ]
                if number % 2:
                    sides = [sides[1], sides[0], sides[3], sides[2]]
                for side, run in sides:
                    before = cpu_seconds() + cpu_seconds(server.pid)
                    rounds[side].append(run())
                    cpu[side].append(cpu_seconds() + cpu_seconds(server.pid) - before)
                load.append(os.getloadavg()[0])
                print(f"round {number + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in rounds.items()), flush=True)
            few = arrays[: args.json_batches]
            json_seconds = json_side(url, few)
            binary_seconds = transport_server(url, few)
            server_rss = peak_rss_mb(server.pid)
        finally:
            server.terminate()
            server.wait(20)

    inferences = 2 * len(refs)
    median = {k: statistics.median(v) for k, v in rounds.items()}
    ratio_pipeline = statistics.median(b / a for a, b in zip(rounds["pipeline"], rounds["in process"], strict=True))
    ratio_transport = statistics.median(
        b / a for a, b in zip(rounds["transport server"], rounds["transport in process"], strict=True)
    )
    lines = [
        f"## eo_inference.py: {len(refs)} tiles {args.tile}×{args.tile}×4 of a {args.size}×{args.size} scene, "
        f"2 models, batch {args.batch}, {args.repeat} rounds",
        "",
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load average during the rounds "
        f"{min(load):.2f}–{max(load):.2f}",
        "",
        "| side | seconds (median) | tile inferences/s | speed / in process | CPU s (client + server) |",
        "|---|---:|---:|---:|---:|",
        f"| pipeline (model_inference's path: read, binary tensors to the server, masks written) | "
        f"{median['pipeline']:.2f} | {inferences / median['pipeline']:.0f} | {ratio_pipeline:.2f} | "
        f"{statistics.median(cpu['pipeline']):.1f} |",
        f"| in process (same reading and writing, ONNX Runtime here) | {median['in process']:.2f} | "
        f"{inferences / median['in process']:.0f} | 1.00 | {statistics.median(cpu['in process']):.1f} |",
        f"| transport only: infer_tensor on tiles in memory | {median['transport server']:.2f} | "
        f"{inferences / median['transport server']:.0f} | {ratio_transport:.2f} | "
        f"{statistics.median(cpu['transport server']):.1f} |",
        f"| transport only: session.run + argmax in process | {median['transport in process']:.2f} | "
        f"{inferences / median['transport in process']:.0f} | 1.00 | "
        f"{statistics.median(cpu['transport in process']):.1f} |",
        "",
        f"JSON numbers instead of binary, {len(few)} batches × 2 models: {json_seconds:.2f} s vs "
        f"{binary_seconds:.2f} s in binary ({json_seconds / binary_seconds:.0f}× slower). Server peak RSS "
        f"{server_rss or 0:.0f} MB.",
    ]
    text = "\n".join(lines)
    print(text)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "eo_inference.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
