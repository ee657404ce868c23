"""Models over many bands: ONNX image models on the real model server, fed GeoTIFF tiles by the real ops.

What a user would notice: the server's predictions are ONNX Runtime's own on the same tiles; tensors
travel in binary (the server counts the requests that came so); class names come from the graph's
metadata or a STAC MLM card beside it, whose bands and scaling model_inference applies; a model of
4 bands refuses data of 3 saying both numbers; segmentation masks are GeoTIFFs on the tile's grid,
nodata where the tile had none.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import numpy as np
import pytest
import rasterio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rasterio.transform import from_origin
from test_model_server import ModelServerProcess, load_models, running_server

from orchestrator.assets import ops
from orchestrator.assets.repository import CATALOG
from orchestrator.assets.resources import ModelServerConnection, Workspace
from orchestrator.datasets import FileList, FileRef
from orchestrator.engine import InstructionFailed, OperationError, RunContext, build_plan, execute
from orchestrator.models.client import ModelServer, labels_of
from sample_models import LAND_COVER_A, land_cover_segmenter
from tiny_models import LAND_COVER_LABELS, make_band_classifier, make_band_segmenter

BANDS = ("blue", "green", "red", "nir")
TILE = 32
NODATA = 0
CARD_CLASSES = ["cloud", "shadow", "clear"]
# The card's z-score per band, in its band order (nir, red, green, blue).
MEANS, STDDEVS = [2000.0, 500.0, 0.0, 1000.0], [0.5, 4.0, 1.0, 2.0]
# name: (source under the models root, task)
MODELS = {
    "land-a": ("land-cover-a.onnx", "image-segmentation"),
    "land-b": ("nested/land-cover-b.onnx", "image-segmentation"),
    "land-fixed": ("land-cover-fixed.onnx", "image-segmentation"),
    "carded": ("carded.onnx", "image-segmentation"),
    "scenes": ("scenes.onnx", "image-classification"),
}


@pytest.fixture(scope="module")
def models_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("band_models")
    land_cover_segmenter(root / "land-cover-a.onnx", "a")
    land_cover_segmenter(root / "nested" / "land-cover-b.onnx", "b")
    land_cover_segmenter(root / "land-cover-fixed.onnx", "a", tile=TILE)
    # No labels in the graph: its card names the classes, picks bands by name (in another order) and scales them.
    make_band_segmenter(root / "carded.onnx", LAND_COVER_A[0], LAND_COVER_A[1], labels=None)
    (root / "carded.json").write_text(json.dumps(mlm_card()))
    make_band_classifier(root / "scenes.onnx", LAND_COVER_A[0], LAND_COVER_A[1])
    make_band_segmenter(root / "scored-badly.onnx", LAND_COVER_A[0], LAND_COVER_A[1], labels=("only", "two"))
    make_band_segmenter(root / "expression.onnx", LAND_COVER_A[0], LAND_COVER_A[1], labels=None)
    card = mlm_card()
    card["properties"]["mlm:input"][0]["bands"][0] = {"name": "ndvi", "format": "python", "expression": "x:y"}
    (root / "expression.json").write_text(json.dumps(card))
    return root


def mlm_card() -> dict:
    """A STAC MLM item: bands by name in the model's order (nir first), z-score scaling, three named classes."""
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": "carded",
        "stac_extensions": ["https://stac-extensions.github.io/mlm/v1.4.0/schema.json"],
        "geometry": None,
        "bbox": None,
        "links": [],
        "properties": {
            "datetime": "2024-06-01T00:00:00Z",
            "mlm:name": "carded",
            "mlm:architecture": "1x1 convolution",
            "mlm:tasks": ["semantic-segmentation"],
            "mlm:framework": "ONNX",
            "mlm:input": [
                {
                    "name": "bands",
                    "bands": ["blue", "green", "red", "nir"][::-1],
                    "input": {
                        "shape": [-1, 4, -1, -1],
                        "dim_order": ["batch", "channel", "height", "width"],
                        "data_type": "float32",
                    },
                    "value_scaling": [
                        {"type": "z-score", "mean": m, "stddev": d} for m, d in zip(MEANS, STDDEVS, strict=True)
                    ],
                }
            ],
            "mlm:output": [
                {
                    "name": "logits",
                    "tasks": ["semantic-segmentation"],
                    "result": {
                        "shape": [-1, 3, -1, -1],
                        "dim_order": ["batch", "class", "height", "width"],
                        "data_type": "float32",
                    },
                    "classification:classes": [{"value": i, "name": n} for i, n in enumerate(CARD_CLASSES)],
                }
            ],
        },
        "assets": {"model": {"href": "carded.onnx", "roles": ["mlm:model"], "type": "application/octet-stream"}},
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, models_root: Path) -> Iterator[ModelServerProcess]:
    env = {
        "CONSTELLATION_MODELS_ROOT": str(models_root),
        "CONSTELLATION_MODEL_SERVER_TOKEN": "",
        "CONSTELLATION_MODEL_SERVER_BATCH_SIZE": "3",
        "HF_HUB_OFFLINE": "1",
    }
    with running_server(env, tmp_path_factory.mktemp("band_server") / "server.log") as running:
        load_models(running, MODELS)
        yield running


@pytest.fixture
def http(server: ModelServerProcess) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


def session_of(path: Path):
    import onnxruntime

    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def scene(seed: int = 0, bands: int = 4, size: int = 2 * TILE) -> np.ndarray:
    """uint16 reflectance-like bands with water, vegetation and bare patches, and a nodata border."""
    rng = np.random.default_rng(seed)
    values = rng.integers(300, 4000, size=(bands, size, size)).astype(np.uint16)
    values[:, : size // 2, : size // 2] = np.array([600, 1200, 700, 300][:bands], dtype=np.uint16)[:, None, None]
    values[:, size // 2 :, size // 2 :] = np.array([500, 900, 600, 4500][:bands], dtype=np.uint16)[:, None, None]
    values[:, :3, :] = NODATA
    values[:, :, :2] = NODATA
    return values


def write_tiles(folder: Path, values: np.ndarray, described: bool = True) -> list[Path]:
    """The scene cut in TILE x TILE GeoTIFFs (UTM 33N, 10 m), each with its own geotransform."""
    paths = []
    bands, height, width = values.shape
    for row in range(0, height, TILE):
        for col in range(0, width, TILE):
            path = folder / f"tile_{row:03d}_{col:03d}.tif"
            path.parent.mkdir(parents=True, exist_ok=True)
            with rasterio.open(
                path,
                "w",
                driver="GTiff",
                width=TILE,
                height=TILE,
                count=bands,
                dtype="uint16",
                crs="EPSG:32633",
                transform=from_origin(500000 + 10 * col, 4650000 - 10 * row, 10, 10),
                nodata=NODATA,
            ) as out:
                out.write(values[:, row : row + TILE, col : col + TILE])
                if described:
                    out.descriptions = BANDS[:bands]
            paths.append(path)
    return paths


def read(path: Path) -> tuple[np.ndarray, dict]:
    with rasterio.open(path) as dataset:
        return dataset.read(), {
            "crs": dataset.crs,
            "transform": dataset.transform,
            "nodata": dataset.nodata,
            "count": dataset.count,
            "dtype": dataset.dtypes[0],
            "mask": dataset.dataset_mask(),
        }


def tiles_of(paths: list[Path]) -> np.ndarray:
    return np.stack([read(p)[0] for p in paths]).astype(np.float32)


# Through the server: the protocol's tensors, in binary.


def test_segmentation_through_the_server_is_onnxruntime_in_process(
    server: ModelServerProcess, models_root: Path, tmp_path: Path
):
    tiles = tiles_of(write_tiles(tmp_path, scene(1)))
    with ModelServer(server.url) as client:
        answer = client.infer_tensor("land-b", tiles, ["logits", "class_id"])
    (logits,) = session_of(models_root / MODELS["land-b"][0]).run(None, {"bands": tiles})
    assert answer["logits"].dtype == np.float32 and answer["logits"].shape == logits.shape == (4, 3, TILE, TILE)
    np.testing.assert_allclose(answer["logits"], logits, rtol=1e-6, atol=1e-6)
    assert answer["class_id"].dtype == np.uint8
    np.testing.assert_array_equal(answer["class_id"], logits.argmax(axis=1))
    assert len(np.unique(answer["class_id"])) == 3, "every class should show on the scene"


def binary_body(tiles: np.ndarray, outputs: list[str]) -> tuple[bytes, dict[str, str]]:
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "bands",
                    "shape": list(tiles.shape),
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": tiles.nbytes},
                }
            ],
            "outputs": [{"name": name, "parameters": {"binary_data": True}} for name in outputs],
        }
    ).encode()
    return header + tiles.astype("<f4").tobytes(), {
        "Inference-Header-Content-Length": str(len(header)),
        "Content-Type": "application/octet-stream",
    }


def stats(http: httpx.Client, name: str) -> dict:
    return http.get(f"/v2/models/{name}/stats").json()["model_stats"][0]


def test_the_route_takes_and_answers_binary_tensors_and_counts_them(
    http: httpx.Client, models_root: Path, tmp_path: Path
):
    tiles = tiles_of(write_tiles(tmp_path, scene(2)))[:2]
    before = stats(http, "land-a")
    body, headers = binary_body(tiles, ["class_id"])
    answer = http.post("/v2/models/land-a/infer", content=body, headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/octet-stream"
    length = int(answer.headers["inference-header-content-length"])
    head = json.loads(answer.content[:length])
    (output,) = head["outputs"]
    assert (output["name"], output["datatype"], output["shape"]) == ("class_id", "UINT8", [2, TILE, TILE])
    assert "data" not in output and output["parameters"]["binary_data_size"] == 2 * TILE * TILE
    ids = np.frombuffer(answer.content[length:], dtype=np.uint8).reshape(2, TILE, TILE)
    (logits,) = session_of(models_root / MODELS["land-a"][0]).run(None, {"bands": tiles})
    np.testing.assert_array_equal(ids, logits.argmax(axis=1))
    # The same tiles as JSON numbers: the same answer, in JSON, counted apart.
    plain = http.post(
        "/v2/models/land-a/infer",
        json={
            "inputs": [
                {"name": "bands", "shape": list(tiles.shape), "datatype": "FP32", "data": tiles.ravel().tolist()}
            ],
            "outputs": [{"name": "class_id"}],
        },
    )
    assert plain.status_code == 200, plain.text
    assert plain.json()["outputs"][0]["data"] == ids.ravel().tolist()
    after = stats(http, "land-a")
    assert after["binary_requests"] - before["binary_requests"] == 1
    assert after["json_requests"] - before["json_requests"] == 1
    assert after["inference_count"] - before["inference_count"] == 4


@pytest.mark.parametrize(
    ("body", "headers", "status", "words"),
    [
        (
            b'{"inputs": [{"name": "bands", "shape": [1, 4, 2, 2], "datatype": "FP32", "parameters": '
            b'{"binary_data_size": 64}}]}' + b"\0" * 60,
            None,
            400,
            "binary_data_size 64, but only 60 bytes",
        ),
        (
            b'{"inputs": [{"name": "bands", "shape": [1, 4, 2, 2], "datatype": "FP32", "parameters": '
            b'{"binary_data_size": 60}}]}' + b"\0" * 60,
            None,
            400,
            "which is 64 bytes, but binary_data_size is 60",
        ),
        (
            b'{"inputs": [{"name": "bands", "shape": [1, 4, 2, 2], "datatype": "FP32", "parameters": '
            b'{"binary_data_size": 64}}]}' + b"\0" * 70,
            None,
            400,
            "70 bytes of binary data",
        ),
        (
            b'{"inputs": [{"name": "bands", "shape": [1, 4, 2, 2], "datatype": "FP32", "parameters": '
            b'{"binary_data_size": 64}}]}',
            {"Inference-Header-Content-Length": "9999"},
            422,
            "Inference-Header",
        ),
        (
            b'{"inputs": [{"name": "bands", "shape": [1, 4, 2, 2], "datatype": "FP32", "parameters": '
            b'{"binary_data_size": 64}}]}' + b"\0" * 64,
            {"Content-Type": "text/plain"},
            415,
            "octet-stream",
        ),
        (b'{"inputs": [{"name": "bands", "shape": [1, 4, 2, 2], "datatype": "FP32"}]}', None, 422, "has no data"),
        (
            b'{"inputs": [{"name": "bands", "shape": [1, 4, 2, 2], "datatype": "FP32", "parameters": '
            b'{"binary_data_size": 64}}], "outputs": [{"name": "nope"}]}' + b"\0" * 64,
            None,
            400,
            "'nope'",
        ),
    ],
)
def test_binary_requests_that_do_not_add_up_are_refused(
    http: httpx.Client, body: bytes, headers: dict | None, status: int, words: str
):
    length = body.index(b"]}") + 2 if b'"outputs"' not in body else body.index(b"}]}") + 3
    sent = {
        "Inference-Header-Content-Length": str(length),
        "Content-Type": "application/octet-stream",
        **(headers or {}),
    }
    answer = http.post("/v2/models/land-a/infer", content=body, headers=sent)
    assert answer.status_code == status, answer.text
    assert words in answer.json()["error"]


def test_a_binary_request_without_the_header_is_refused(http: httpx.Client):
    body = {
        "inputs": [{"name": "bands", "shape": [1, 4, 2, 2], "datatype": "FP32", "parameters": {"binary_data_size": 64}}]
    }
    answer = http.post("/v2/models/land-a/infer", json=body)
    assert answer.status_code == 400 and "Inference-Header-Content-Length" in answer.json()["error"]


# Class names, and what the model takes.


def test_labels_from_the_graphs_metadata_and_from_an_mlm_card(http: httpx.Client):
    land = http.get("/v2/models/land-a").json()
    assert land["platform"] == "onnxruntime" and land["task"] == "image-segmentation"
    assert land["parameters"]["labels"] == land["labels"] == list(LAND_COVER_LABELS)
    assert [(i["name"], i["datatype"], i["shape"]) for i in land["inputs"]] == [("bands", "FP32", [-1, 4, -1, -1])]
    assert [o["name"] for o in land["outputs"]] == ["logits", "class_id"]
    carded = http.get("/v2/models/carded").json()
    assert carded["parameters"]["labels"] == CARD_CLASSES
    assert carded["parameters"]["mlm:input"]["bands"] == ["nir", "red", "green", "blue"]
    assert labels_of(carded) == CARD_CLASSES
    # A Triton configuration's parameters are strings: the client reads the same labels from one.
    triton = {"parameters": {"labels": {"string_value": json.dumps(CARD_CLASSES)}}}
    assert labels_of(triton) == CARD_CLASSES
    fixed = http.get("/v2/models/land-fixed").json()
    assert fixed["inputs"][0]["shape"] == [-1, 4, TILE, TILE]


@pytest.mark.parametrize(
    ("source", "task", "words"),
    [
        ("scored-badly.onnx", "image-segmentation", ["names 2 classes", "scores 3"]),
        ("expression.onnx", "image-segmentation", ["expression.json", "expression"]),
        ("land-cover-a.onnx", "image-classification", ["[N, K]", "'logits'"]),
        ("scenes.onnx", "image-segmentation", ["[N, K, H, W]"]),
    ],
)
def test_models_that_do_not_fit_their_task_are_refused_at_load(
    http: httpx.Client, source: str, task: str, words: list[str]
):
    answer = http.post("/v2/repository/models/misfit/load", json={"parameters": {"source": source, "task": task}})
    assert answer.status_code == 400, answer.text
    assert all(w in answer.json()["error"] for w in words), answer.json()["error"]


def test_a_model_of_4_bands_refuses_3_saying_both(http: httpx.Client, server: ModelServerProcess, tmp_path: Path):
    three = np.zeros((1, 3, 8, 8), dtype=np.float32)
    body, headers = binary_body(three, ["class_id"])
    answer = http.post("/v2/models/land-a/infer", content=body, headers=headers)
    assert answer.status_code == 400 and "model expects 4 bands, data has 3" in answer.json()["error"]
    wrong_size = np.zeros((1, 4, TILE // 2, TILE), dtype=np.float32)
    body, headers = binary_body(wrong_size, ["class_id"])
    answer = http.post("/v2/models/land-fixed/infer", content=body, headers=headers)
    assert answer.status_code == 400 and f"{TILE}×{TILE}" in answer.json()["error"]
    # model_inference says it before sending anything, naming the tile.
    paths = write_tiles(tmp_path, scene(3, bands=3))
    with pytest.raises(OperationError, match=r"'tile_000_000.tif': model 'land-a' expects 4 bands, data has 3"):
        ops.model_inference(run_context(tmp_path, server), "land-a", FileList([FileRef(p.name, p) for p in paths]))


# The ops: import, deploy, infer; masks on the tiles' grid.


def run_context(tmp_path: Path, server: ModelServerProcess, data: Path | None = None) -> RunContext:
    workspace = Workspace(data_root=str(data or tmp_path), artifact_root=str(tmp_path / "art"))
    connection = ModelServerConnection(url=server.url, retry_attempts=1)
    return RunContext(run_dir=tmp_path / "run", resources=SimpleNamespace(workspace=workspace, model_server=connection))


def deploy(model: str, source: str, task: str = "image-segmentation") -> dict:
    return {"operation": "deploy_model", "parameters": {"model": model, "task": task, "source": source}}


def inference(model: str) -> dict:
    return {
        "operation": "model_inference",
        "parameters": {
            "model": model,
            "data": {"operation": "import_from_local", "parameters": {"path": "tiles"}},
            "batch_size": 3,
        },
    }


def test_two_models_segment_georeferenced_tiles_into_georeferenced_masks(
    server: ModelServerProcess, models_root: Path, tmp_path: Path, http: httpx.Client
):
    """import_from_local -> deploy_model x2 -> model_inference x2, run as a run runs them."""
    data = tmp_path / "data"
    values = scene(4)
    paths = write_tiles(data / "tiles", values)
    ctx = run_context(tmp_path, server, data)
    instructions = [
        deploy("run-a", "land-cover-a.onnx"),
        deploy("run-b", "nested/land-cover-b.onnx"),
        inference("run-a"),
        inference("run-b"),
    ]
    _, _, first, second = execute(build_plan(instructions, CATALOG), CATALOG, ctx)
    assert first.labels == list(LAND_COVER_LABELS) and first.task == "image-segmentation"
    disagree = []
    for predictions, source in ((first, "land-cover-a.onnx"), (second, "nested/land-cover-b.onnx")):
        session = session_of(models_root / source)
        by_name = {item["name"]: item for item in predictions.items}
        assert sorted(by_name) == sorted(p.name for p in paths)
        for path in paths:
            tile, facts = read(path)
            mask, written = read(Path(by_name[path.name]["mask"]))
            assert (written["count"], written["dtype"], written["nodata"]) == (1, "uint8", 255)
            assert written["crs"] == facts["crs"] and written["transform"] == facts["transform"]
            assert by_name[path.name]["crs"] == "EPSG:32633"
            assert by_name[path.name]["transform"] == list(facts["transform"])[:6]
            (logits,) = session.run(None, {"bands": tile[None].astype(np.float32)})
            expected = logits[0].argmax(axis=0).astype(np.uint8)
            nodata = (tile == NODATA).all(axis=0)
            expected[nodata] = 255
            np.testing.assert_array_equal(mask[0], expected)
            assert (mask[0][:3] == 255).all() if path.name.startswith("tile_000") else True
            disagree.append(mask[0])
    half = len(disagree) // 2
    differing = np.mean([np.mean(a != b) for a, b in zip(disagree[:half], disagree[half:], strict=True)])
    assert 0.02 < differing < 0.9, f"the two models should differ measurably, not wholly ({differing:.3f})"
    assert first.stats["inputs"] == len(paths) and first.stats["batches"] == 2  # batch_size 3: 3 tiles, then 1
    # The run let go of its models when it ended: the server unloaded them (no other holder).
    assert http.get("/v2/models/run-a").status_code == 404


def test_the_server_counts_the_pipelines_requests_as_binary(
    server: ModelServerProcess, http: httpx.Client, tmp_path: Path
):
    paths = write_tiles(tmp_path / "tiles", scene(5))
    before = stats(http, "land-a")
    predictions = ops.model_inference(
        run_context(tmp_path, server), "land-a", FileList([FileRef(p.name, p) for p in paths]), batch_size=2
    )
    after = stats(http, "land-a")
    assert len(predictions.items) == 4
    assert (after["binary_requests"] - before["binary_requests"], after["json_requests"] - before["json_requests"]) == (
        2,
        0,
    )


def card_scaled(bands: np.ndarray) -> np.ndarray:
    return (bands.astype(np.float32) - np.float32(MEANS)[:, None, None]) / np.float32(STDDEVS)[:, None, None]


def test_the_card_picks_bands_by_name_and_scales_them_unless_normalized(
    server: ModelServerProcess, models_root: Path, tmp_path: Path
):
    values = scene(6)
    paths = write_tiles(tmp_path / "tiles", values)
    refs = [FileRef(p.name, p) for p in paths]
    predictions = ops.model_inference(run_context(tmp_path, server), "carded", FileList(refs))
    assert predictions.labels == CARD_CLASSES
    session = session_of(models_root / "carded.onnx")

    def predicted(bands: np.ndarray) -> np.ndarray:
        (logits,) = session.run(None, {"bands": bands[None].astype(np.float32)})
        return logits[0].argmax(axis=0).astype(np.uint8)

    unscaled_differs = 0
    for path, item in zip(paths, sorted(predictions.items, key=lambda i: i["name"]), strict=True):
        tile, _ = read(path)
        expected = predicted(card_scaled(tile[::-1]))  # nir, red, green, blue; z-score
        valid = ~(tile == NODATA).all(axis=0)
        expected[~valid] = 255
        np.testing.assert_array_equal(read(Path(item["mask"]))[0][0], expected)
        unscaled_differs += int(np.sum((predicted(tile[::-1]) != expected) & valid))
    assert unscaled_differs > 100, "the scaling should change predictions, or this test shows nothing"
    # Tiles normalize_image made are not scaled again by the card: its statistics are kept with them.
    ctx = run_context(tmp_path / "again", server)
    normalized = ops.normalize_image(ctx, FileList(refs), mean=[500.0] * 4, std=[4.0] * 4)
    assert all(ref.meta.get("normalization") for ref in normalized)
    again = ops.model_inference(ctx, "carded", normalized)
    scaled_twice_differs = 0
    for ref in normalized:
        tile, _ = read(ref.path)
        expected = predicted(tile[::-1])
        valid = ~(tile == -9999).all(axis=0)
        expected[~valid] = 255
        item = next(i for i in again.items if i["name"] == ref.name)
        np.testing.assert_array_equal(read(Path(item["mask"]))[0][0], expected)
        scaled_twice_differs += int(np.sum((predicted(card_scaled(tile[::-1])) != expected) & valid))
    assert scaled_twice_differs > 100
    # Without their facts (a FileDict of them read afresh), the tag in the files says the same.
    bare = ops.model_inference(ctx, "carded", FileList([FileRef(r.name, r.path) for r in normalized]))
    assert [i["class_pixels"] for i in bare.items] == [i["class_pixels"] for i in again.items]
    # A tile without the card's bands is refused naming what it lacks and what it has.
    unnamed = write_tiles(tmp_path / "other", scene(7, bands=4), described=False)
    with rasterio.open(unnamed[0], "r+") as dataset:
        dataset.descriptions = ("blue", "green", "red", "swir")
    with pytest.raises(OperationError, match=r"has no 'nir' \(its bands: blue, green, red, swir\)"):
        ops.model_inference(
            run_context(tmp_path / "third", server), "carded", FileList([FileRef(unnamed[0].name, unnamed[0])])
        )


def test_the_cards_bands_are_found_by_any_of_their_names(server: ModelServerProcess, models_root: Path, tmp_path: Path):
    """A file from import_from_stac: descriptions are STAC's own names, the common names are band metadata."""
    paths = write_tiles(tmp_path / "tiles", scene(10))
    for path in paths:
        with rasterio.open(path, "r+") as dataset:
            dataset.descriptions = ("B02", "B03", "B04", "B08")
            for index, common in enumerate(BANDS, start=1):
                dataset.update_tags(index, name=dataset.descriptions[index - 1], common_name=common)
    predictions = ops.model_inference(
        run_context(tmp_path, server), "carded", FileList([FileRef(p.name, p) for p in paths])
    )
    session = session_of(models_root / "carded.onnx")
    for path, item in zip(paths, predictions.items, strict=True):
        tile, _ = read(path)
        (logits,) = session.run(None, {"bands": card_scaled(tile[::-1])[None]})
        expected = logits[0].argmax(axis=0).astype(np.uint8)
        expected[(tile == NODATA).all(axis=0)] = 255
        np.testing.assert_array_equal(read(Path(item["mask"]))[0][0], expected)


def test_tile_classification_keeps_each_tiles_place(server: ModelServerProcess, models_root: Path, tmp_path: Path):
    paths = write_tiles(tmp_path / "tiles", scene(8))
    predictions = ops.model_inference(
        run_context(tmp_path, server), "scenes", FileList([FileRef(p.name, p) for p in paths]), top_k=2
    )
    session = session_of(models_root / "scenes.onnx")
    for path, item in zip(paths, predictions.items, strict=True):
        tile, facts = read(path)
        (logits,) = session.run(None, {"bands": tile[None].astype(np.float32)})
        probabilities = np.exp(logits[0] - logits[0].max())
        probabilities /= probabilities.sum()
        assert item["labels"][0] == LAND_COVER_LABELS[int(probabilities.argmax())]
        assert item["scores"][0] == pytest.approx(float(probabilities.max()), rel=1e-5)
        assert item["crs"] == "EPSG:32633" and item["transform"] == list(facts["transform"])[:6]


def test_a_fixed_size_model_gets_edge_tiles_padded_and_masks_cut_back(server: ModelServerProcess, tmp_path: Path):
    values = scene(9)[:, :TILE, : TILE - 8]
    path = tmp_path / "edge.tif"
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=TILE - 8,
        height=TILE,
        count=4,
        dtype="uint16",
        crs="EPSG:32633",
        transform=from_origin(500000, 4650000, 10, 10),
        nodata=NODATA,
    ) as out:
        out.write(values)
    predictions = ops.model_inference(
        run_context(tmp_path, server), "land-fixed", FileList([FileRef("edge.tif", path)])
    )
    mask, facts = read(Path(predictions.items[0]["mask"]))
    assert mask.shape == (1, TILE, TILE - 8) and facts["transform"] == from_origin(500000, 4650000, 10, 10)


def test_deploying_a_tabular_graph_as_an_image_model_fails_before_inference(
    server: ModelServerProcess, models_root: Path, tmp_path: Path
):
    from tiny_models import make_tabular_classifier

    make_tabular_classifier(models_root / "rows.onnx")
    plan = build_plan(
        [
            {
                "operation": "deploy_model",
                "parameters": {"model": "rows", "task": "image-classification", "source": "rows.onnx"},
            }
        ],
        CATALOG,
    )
    with pytest.raises(InstructionFailed, match=r"\[N, C, H, W\].*load it as tabular-classification"):
        execute(plan, CATALOG, run_context(tmp_path, server))


BINARY_HEADERS = st.fixed_dictionaries(
    {
        "inputs": st.lists(
            st.fixed_dictionaries(
                {
                    "name": st.sampled_from(["bands", "image", ""]),
                    "shape": st.lists(st.integers(-2, 5) | st.sampled_from([2**40, 2**63]), max_size=5),
                    "datatype": st.sampled_from(["FP32", "FP64", "UINT8", "BYTES", "BOOL", "X"]),
                    "parameters": st.fixed_dictionaries(
                        {"binary_data_size": st.integers(-1, 600) | st.booleans() | st.sampled_from([2**70, "10"])}
                    ),
                }
            ),
            max_size=3,
        ),
    },
    optional={
        "outputs": st.lists(
            st.fixed_dictionaries(
                {
                    "name": st.sampled_from(["class_id", "logits", "x"]),
                    "parameters": st.fixed_dictionaries({"binary_data": st.booleans() | st.none()}),
                }
            ),
            max_size=3,
        ),
        "parameters": st.fixed_dictionaries({"binary_data_output": st.booleans()}),
    },
)


def test_random_binary_bodies_never_get_a_server_error(http: httpx.Client, server: ModelServerProcess):
    @settings(
        max_examples=60,
        deadline=None,
        derandomize=True,
        database=None,
        print_blob=False,
        suppress_health_check=list(HealthCheck),
    )
    @given(BINARY_HEADERS, st.binary(max_size=600), st.integers(-5, 5), st.sampled_from(["land-a", "scenes"]))
    def no_server_error(header: dict, tail: bytes, skew: int, model: str) -> None:
        head = json.dumps(header).encode()
        answer = http.post(
            f"/v2/models/{model}/infer",
            content=head + tail,
            headers={
                "Inference-Header-Content-Length": str(max(0, len(head) + skew)),
                "Content-Type": "application/octet-stream",
            },
        )
        assert answer.status_code < 500, (header, answer.text)

    no_server_error()
    assert "Traceback" not in server.log_text()
