"""Every task of the model server over HTTP, as a real process, against the same model run in this process.

What a user would notice: the answer through the protocol is the answer of the transformers pipeline
or the ONNX Runtime session itself, in the protocol's tensors (names, datatypes, shapes); a model
loaded for the wrong task, or sent inputs that are not its own, is refused with a message naming
the model, the task and what it takes; nothing answers 500. tests/model_server/test_model_server_client.py runs the
client over the same kind of server.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from hypothesis import strategies as st
from PIL import Image
from test_model_server import ModelServerProcess, image_file, load_models, running_server

from tiny_models import (
    DETECTION_LABELS,
    FIRE_LABELS,
    IRIS_LABELS,
    SEGMENTATION_LABELS,
    SENTIMENT_LABELS,
    make_image_classifier,
    make_object_detector,
    make_semantic_segmenter,
    make_tabular_classifier,
    make_tabular_regressor,
    make_text_classifier,
    make_zero_shot_classifier,
    tabular_data,
)

BATCH_SIZE = 3
# name: (source under the models root, task)
MODELS = {
    "vit": ("vit", "image-classification"),
    "clip": ("clip", "zero-shot-image-classification"),
    "yolos": ("yolos", "object-detection"),
    "segformer": ("segformer", "image-segmentation"),
    "bert": ("bert", "text-classification"),
    "iris": ("tabular/iris.onnx", "tabular-classification"),
    "iris-zipmap": ("iris-zipmap.onnx", "tabular-classification"),
    "iris-int": ("iris-int.onnx", "tabular-classification"),
    "reg": ("reg.onnx", "tabular-regression"),
}
CANDIDATES = ["fire", "smoke", "a quiet road"]
TEXTS = ["the movie is good", "awful day!!", "", "Ünïcödé ✓ fire", " ".join(["smoke"] * 400)]


@pytest.fixture(scope="module")
def models_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("task_models")
    make_image_classifier(root / "vit", seed=3)
    make_zero_shot_classifier(root / "clip", seed=4)
    make_object_detector(root / "yolos", seed=5)
    make_semantic_segmenter(root / "segformer", seed=6)
    make_text_classifier(root / "bert", seed=7)
    make_tabular_classifier(root / "tabular" / "iris.onnx")
    make_tabular_classifier(root / "iris-zipmap.onnx", zipmap=True)
    x, y = tabular_data(seed=1)
    make_tabular_classifier(root / "iris-int.onnx", data=(x, [int(v) for v in y]), zipmap=True)
    make_tabular_regressor(root / "reg.onnx")
    (root / "broken.onnx").write_bytes(b"this is not an ONNX graph")
    (root / "notes.txt").write_text("not a model")
    return root


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, models_root: Path) -> Iterator[ModelServerProcess]:
    home = tmp_path_factory.mktemp("hf_home")
    env = {
        "HF_HOME": str(home),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "CONSTELLATION_MODELS_ROOT": str(models_root),
        "CONSTELLATION_MODEL_SERVER_BATCH_SIZE": str(BATCH_SIZE),
        # One model of every task (and three ONNX variants), loaded at once: past the default cap of 8.
        "CONSTELLATION_MODEL_SERVER_MAX_MODELS": str(len(MODELS) + 2),
        "CONSTELLATION_MODEL_SERVER_TOKEN": "",
    }
    with running_server(env, tmp_path_factory.mktemp("task_server") / "server.log") as running:
        load_models(running, MODELS)
        yield running


@pytest.fixture
def http(server: ModelServerProcess) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


@cache
def pipeline_of(folder: str, task: str) -> Any:
    """The same model, in this process, as the server loads it."""
    from transformers import pipeline

    return pipeline(task, model=folder)


@cache
def session_of(path: str) -> Any:
    import onnxruntime

    return onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])


def local(models_root: Path, name: str) -> Any:
    source, task = MODELS[name]
    if source.endswith(".onnx"):
        return session_of(str(models_root / source))
    return pipeline_of(str(models_root / source), task)


def images(count: int) -> list[bytes]:
    return [image_file(i, "JPEG" if i % 2 else "PNG") for i in range(count)]


def pictures(files: list[bytes]) -> list[Image.Image]:
    return [Image.open(io.BytesIO(f)).convert("RGB") for f in files]


def image_input(files: list[bytes]) -> dict:
    return {
        "name": "image",
        "shape": [len(files)],
        "datatype": "BYTES",
        "data": [base64.b64encode(f).decode("ascii") for f in files],
        "parameters": {"content_type": "base64"},
    }


def strings_input(name: str, strings: list[str]) -> dict:
    return {"name": name, "shape": [len(strings)], "datatype": "BYTES", "data": strings}


def rows_input(rows: np.ndarray, name: str = "float_input", nested: bool = False) -> dict:
    data = rows.tolist() if nested else rows.ravel().tolist()
    return {"name": name, "shape": list(rows.shape), "datatype": "FP32", "data": data}


def infer(http: httpx.Client, name: str, inputs: list[dict], **parameters: Any) -> dict[str, dict]:
    answer = http.post(f"/v2/models/{name}/infer", json={"id": "r", "inputs": inputs, "parameters": parameters})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["model_name"], body["id"]) == (name, "r")
    return {o["name"]: o for o in body["outputs"]}


def tensors(outputs: dict[str, dict]) -> list[tuple[str, str, list[int]]]:
    return [(o["name"], o["datatype"], o["shape"]) for o in outputs.values()]


def rows_of(ranked_outputs: dict[str, dict]) -> list[list[tuple[str, float]]]:
    labels, scores = ranked_outputs["label"], ranked_outputs["score"]
    count, k = labels["shape"]
    return [
        list(zip(labels["data"][i * k : (i + 1) * k], scores["data"][i * k : (i + 1) * k], strict=True))
        for i in range(count)
    ]


def same_ranking(got: list[list[tuple[str, float]]], expected: list) -> None:
    assert len(got) == len(expected)
    for row, answer in zip(got, expected, strict=True):
        answer = [answer] if isinstance(answer, dict) else answer
        assert [label for label, _ in row] == [a["label"] for a in answer[: len(row)]]
        assert [score for _, score in row] == pytest.approx([a["score"] for a in answer[: len(row)]], abs=1e-5)


def class_mask(pipe: Any, picture: Image.Image, segments: list[dict]) -> np.ndarray:
    ids = {label: i for i, label in sorted(pipe.model.config.id2label.items(), reverse=True)}
    mask = np.zeros((picture.height, picture.width), dtype=np.uint8)
    for segment in segments:
        mask[np.asarray(segment["mask"]) > 0] = ids[segment["label"]]
    return mask


# What each model says it is.


@pytest.mark.parametrize(
    ("name", "platform", "labels", "inputs", "outputs"),
    [
        ("vit", "transformers", list(FIRE_LABELS), [("image", "BYTES", [-1])], ["label", "score"]),
        (
            "clip",
            "transformers",
            [],
            [("image", "BYTES", [-1]), ("candidate_labels", "BYTES", [-1])],
            ["label", "score"],
        ),
        (
            "yolos",
            "transformers",
            list(DETECTION_LABELS),
            [("image", "BYTES", [-1])],
            ["image_index", "label", "score", "box"],
        ),
        ("segformer", "transformers", list(SEGMENTATION_LABELS), [("image", "BYTES", [-1])], ["mask"]),
        ("bert", "transformers", list(SENTIMENT_LABELS), [("text", "BYTES", [-1])], ["label", "score"]),
        ("iris", "onnxruntime", list(IRIS_LABELS), [("float_input", "FP32", [-1, 4])], ["probabilities", "label"]),
        (
            "iris-zipmap",
            "onnxruntime",
            list(IRIS_LABELS),
            [("float_input", "FP32", [-1, 4])],
            ["output_label", "output_probability", "label"],
        ),
        (
            "iris-int",
            "onnxruntime",
            ["0", "1", "2"],
            [("float_input", "FP32", [-1, 4])],
            ["output_label", "output_probability", "label"],
        ),
        ("reg", "onnxruntime", [], [("float_input", "FP32", [-1, 4])], ["variable", "value"]),
    ],
)
def test_metadata_names_platform_task_labels_and_tensors(
    http: httpx.Client, name: str, platform: str, labels: list[str], inputs: list, outputs: list[str]
):
    metadata = http.get(f"/v2/models/{name}").json()
    assert (metadata["name"], metadata["platform"]) == (name, platform)
    assert (metadata["source"], metadata["task"]) == MODELS[name]
    assert metadata["labels"] == labels
    assert [(i["name"], i["datatype"], i["shape"]) for i in metadata["inputs"]] == inputs
    assert [o["name"] for o in metadata["outputs"]] == outputs


def test_tabular_metadata_gives_the_probability_table_its_class_count(http: httpx.Client):
    for name, table in (("iris", "probabilities"), ("iris-zipmap", "output_probability")):
        outputs = {o["name"]: o for o in http.get(f"/v2/models/{name}").json()["outputs"]}
        assert (outputs[table]["datatype"], outputs[table]["shape"]) == ("FP32", [-1, 3])
        assert (outputs["label"]["datatype"], outputs["label"]["shape"]) == ("BYTES", [-1])


# Each task's answer is the library's own.


def test_image_classification_is_the_pipeline(http: httpx.Client, models_root: Path):
    files = images(5)
    outputs = infer(http, "vit", [image_input(files)], top_k=2)
    assert tensors(outputs) == [("label", "BYTES", [5, 2]), ("score", "FP32", [5, 2])]
    expected = local(models_root, "vit")(pictures(files), top_k=2, batch_size=BATCH_SIZE)
    same_ranking(rows_of(outputs), expected)


def test_zero_shot_classification_ranks_the_candidate_labels_as_the_pipeline(http: httpx.Client, models_root: Path):
    files = images(5)
    outputs = infer(http, "clip", [image_input(files), strings_input("candidate_labels", CANDIDATES)], top_k=2)
    assert tensors(outputs) == [("label", "BYTES", [5, 2]), ("score", "FP32", [5, 2])]
    expected = local(models_root, "clip")(pictures(files), candidate_labels=CANDIDATES, batch_size=BATCH_SIZE)
    same_ranking(rows_of(outputs), expected)
    assert len({tuple(label for label, _ in row) for row in rows_of(outputs)}) > 1, "every image ranked alike"
    everything = infer(http, "clip", [image_input(files[:1]), strings_input("candidate_labels", CANDIDATES)])
    assert everything["label"]["shape"] == [1, 3]  # top_k (default 5) is capped at the candidates
    assert sum(everything["score"]["data"]) == pytest.approx(1, abs=1e-5)


def test_object_detection_is_the_pipeline_with_boxes_in_image_pixels(http: httpx.Client, models_root: Path):
    files = images(4)
    outputs = infer(http, "yolos", [image_input(files)], threshold=0.4)
    count = len(outputs["label"]["data"])
    assert tensors(outputs) == [
        ("image_index", "INT32", [count]),
        ("label", "BYTES", [count]),
        ("score", "FP32", [count]),
        ("box", "FP32", [count, 4]),
    ]
    answers = local(models_root, "yolos")(pictures(files), threshold=0.4, batch_size=BATCH_SIZE)
    expected = [
        (i, d["label"], d["score"], [d["box"][k] for k in ("xmin", "ymin", "xmax", "ymax")])
        for i, found in enumerate(answers)
        for d in found
    ]
    got = [
        (
            outputs["image_index"]["data"][j],
            outputs["label"]["data"][j],
            outputs["score"]["data"][j],
            outputs["box"]["data"][4 * j : 4 * j + 4],
        )
        for j in range(count)
    ]
    assert [(i, label) for i, label, _, _ in got] == [(i, label) for i, label, _, _ in expected]
    assert [s for _, _, s, _ in got] == pytest.approx([s for _, _, s, _ in expected], abs=1e-5)
    assert [b for *_, b in got] == [b for *_, b in expected]
    assert 0 < count < 4 * 6, "the threshold should keep some detections and drop others"
    everything = infer(http, "yolos", [image_input(files)], threshold=0.0)
    assert everything["image_index"]["data"] == [i for i in range(4) for _ in range(6)]  # 6 detection tokens
    default = infer(http, "yolos", [image_input(files)])
    assert all(score > 0.5 for score in default["score"]["data"])


def test_semantic_segmentation_is_one_class_id_png_per_image_at_its_size(http: httpx.Client, models_root: Path):
    files = images(4)
    outputs = infer(http, "segformer", [image_input(files)])
    assert tensors(outputs) == [("mask", "BYTES", [4])]
    assert outputs["mask"]["parameters"] == {"content_type": "base64"}
    pipe = local(models_root, "segformer")
    answers = pipe(pictures(files), subtask="semantic", batch_size=BATCH_SIZE)
    seen: set[int] = set()
    for encoded, picture, segments in zip(outputs["mask"]["data"], pictures(files), answers, strict=True):
        mask = Image.open(io.BytesIO(base64.b64decode(encoded)))
        assert (mask.format, mask.mode, mask.size) == ("PNG", "L", picture.size)
        ids = np.asarray(mask)
        np.testing.assert_array_equal(ids, class_mask(pipe, picture, segments))
        seen |= set(np.unique(ids).tolist())
    assert len(seen) > 1 and seen <= set(range(len(SEGMENTATION_LABELS)))


def test_text_classification_is_the_pipeline_and_long_texts_are_cut(http: httpx.Client, models_root: Path):
    outputs = infer(http, "bert", [strings_input("text", TEXTS)], top_k=2)
    assert tensors(outputs) == [("label", "BYTES", [5, 2]), ("score", "FP32", [5, 2])]
    expected = local(models_root, "bert")(TEXTS, top_k=2, truncation=True, batch_size=BATCH_SIZE)
    same_ranking(rows_of(outputs), expected)
    encoded = {**strings_input("text", TEXTS[:2]), "parameters": {"content_type": "base64"}}
    encoded["data"] = [base64.b64encode(t.encode()).decode() for t in TEXTS[:2]]
    assert rows_of(infer(http, "bert", [encoded], top_k=2)) == rows_of(outputs)[:2]


def test_tabular_classification_answers_the_graphs_outputs_and_the_class_names(http: httpx.Client, models_root: Path):
    rows, _ = tabular_data(rows=7, seed=9)
    outputs = infer(http, "iris", [rows_input(rows, nested=True)])
    assert tensors(outputs) == [("probabilities", "FP32", [7, 3]), ("label", "BYTES", [7])]
    label, probabilities = local(models_root, "iris").run(None, {"float_input": rows})
    assert outputs["label"]["data"] == label.tolist()
    np.testing.assert_allclose(np.array(outputs["probabilities"]["data"]).reshape(7, 3), probabilities, atol=1e-6)
    assert set(label.tolist()) > {label.tolist()[0]}, "every row got the same class"
    assert infer(http, "iris", [rows_input(rows)]) == outputs  # flat row-major data is the same request


def test_a_zipmap_becomes_a_probability_table(http: httpx.Client, models_root: Path):
    rows, _ = tabular_data(rows=5, seed=9)
    outputs = infer(http, "iris-zipmap", [rows_input(rows)])
    assert tensors(outputs) == [
        ("output_label", "BYTES", [5]),
        ("output_probability", "FP32", [5, 3]),
        ("label", "BYTES", [5]),
    ]
    label, maps = local(models_root, "iris-zipmap").run(None, {"float_input": rows})
    assert outputs["label"]["data"] == outputs["output_label"]["data"] == label.tolist()
    expected = [[row[c] for c in IRIS_LABELS] for row in maps]
    np.testing.assert_allclose(np.array(outputs["output_probability"]["data"]).reshape(5, 3), expected, atol=1e-6)


def test_integer_classes_keep_their_int64_tensor_and_get_string_labels(http: httpx.Client, models_root: Path):
    rows, _ = tabular_data(rows=6, seed=2)
    outputs = infer(http, "iris-int", [rows_input(rows)])
    assert tensors(outputs) == [
        ("output_label", "INT64", [6]),
        ("output_probability", "FP32", [6, 3]),
        ("label", "BYTES", [6]),
    ]
    label, maps = local(models_root, "iris-int").run(None, {"float_input": rows})
    assert outputs["output_label"]["data"] == label.tolist()
    assert outputs["label"]["data"] == [str(v) for v in label.tolist()]
    np.testing.assert_allclose(
        np.array(outputs["output_probability"]["data"]).reshape(6, 3),
        [[row[c] for c in (0, 1, 2)] for row in maps],
        atol=1e-6,
    )


def test_tabular_regression_answers_the_graphs_output_and_value(http: httpx.Client, models_root: Path):
    rows, _ = tabular_data(rows=6, seed=4)
    outputs = infer(http, "reg", [rows_input(rows)])
    assert tensors(outputs) == [("variable", "FP32", [6, 1]), ("value", "FP32", [6])]
    (expected,) = local(models_root, "reg").run(None, {"float_input": rows})
    np.testing.assert_allclose(outputs["value"]["data"], expected.ravel(), rtol=1e-6)
    assert outputs["variable"]["data"] == outputs["value"]["data"]


def binary_rows(
    rows: np.ndarray, outputs: dict[str, bool], datatype: str = "FP32", shape: list[int] | None = None
) -> tuple[bytes, dict[str, str]]:
    """An inference request whose rows follow the JSON in binary (the binary tensor data extension); `outputs`: the
    outputs asked for, each in binary or not."""
    raw = rows.astype({"FP32": "<f4", "FP64": "<f8"}[datatype]).tobytes()
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "float_input",
                    "shape": shape or list(rows.shape),
                    "datatype": datatype,
                    "parameters": {"binary_data_size": len(raw)},
                }
            ],
            "outputs": [{"name": name, "parameters": {"binary_data": binary}} for name, binary in outputs.items()],
        }
    ).encode()
    return header + raw, {
        "Inference-Header-Content-Length": str(len(header)),
        "Content-Type": "application/octet-stream",
    }


def binary_answer(answer: httpx.Response) -> dict[str, Any]:
    """Each output of a binary answer: an array for the binary ones (by their datatype), `data` for the others."""
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/octet-stream"
    length = int(answer.headers["inference-header-content-length"])
    found, offset = {}, length
    for output in json.loads(answer.content[:length])["outputs"]:
        size = (output.get("parameters") or {}).get("binary_data_size")
        if size is None:
            found[output["name"]] = output["data"]
            continue
        assert "data" not in output
        dtype = {"FP32": "<f4", "INT64": "<i8"}[output["datatype"]]
        found[output["name"]] = np.frombuffer(answer.content[offset : offset + size], dtype).reshape(output["shape"])
        offset += size
    assert offset == len(answer.content)
    return found


def test_binary_rows_get_a_binary_answer_equal_to_onnxruntime_in_process(http: httpx.Client, models_root: Path):
    rows, _ = tabular_data(rows=500, seed=11)
    before = http.get("/v2/models/iris/stats").json()["model_stats"][0]
    body, headers = binary_rows(rows, {"label": False, "probabilities": True})
    outputs = binary_answer(http.post("/v2/models/iris/infer", content=body, headers=headers))
    label, probabilities = local(models_root, "iris").run(None, {"float_input": rows})
    assert outputs["label"] == label.tolist()
    binary_probabilities = outputs["probabilities"]
    assert binary_probabilities.shape == (500, 3)
    np.testing.assert_allclose(binary_probabilities, probabilities, rtol=1e-6, atol=1e-7)
    # Rows of doubles are taken as well (converted to the graph's floats), and every output in binary.
    body, headers = binary_rows(rows.astype(np.float64), {"value": True, "variable": True}, datatype="FP64")
    outputs = binary_answer(http.post("/v2/models/reg/infer", content=body, headers=headers))
    (expected,) = local(models_root, "reg").run(None, {"float_input": rows})
    np.testing.assert_allclose(outputs["value"], expected.ravel(), rtol=1e-6)
    np.testing.assert_array_equal(outputs["variable"], expected)
    after = http.get("/v2/models/iris/stats").json()["model_stats"][0]
    assert (
        after["binary_requests"] - before["binary_requests"],
        after["inference_count"] - before["inference_count"],
    ) == (1, 500)
    # The same rows as JSON numbers: the same labels and probabilities, in JSON.
    plain = infer(http, "iris", [rows_input(rows)])
    assert plain["label"]["data"] == label.tolist()
    np.testing.assert_array_equal(
        np.array(plain["probabilities"]["data"], dtype=np.float32).reshape(500, 3), binary_probabilities
    )


@pytest.mark.parametrize(
    ("rows", "shape", "words"),
    [
        (np.ones((2, 3), np.float32), None, ["'iris'", "expected 4 features per row, got 3", "shape [2, 3]"]),
        (np.array([[1, 2, 3, 4], [1, 2, np.nan, 4]], np.float32), None, ["row 1 column 2 is nan", "not a finite"]),
        (np.array([[1, 2, 3, np.inf]], np.float32), None, ["row 0 column 3 is inf"]),
        (np.ones((2, 4), np.float32), [4, 2], ["expected 4 features per row, got 2"]),
    ],
)
def test_binary_rows_that_do_not_fit_are_refused_saying_why(
    http: httpx.Client, rows: np.ndarray, shape: list[int] | None, words: list[str]
):
    body, headers = binary_rows(rows, {"label": False}, shape=shape)
    answer = http.post("/v2/models/iris/infer", content=body, headers=headers)
    assert answer.status_code == 400, answer.text
    message = answer.json()["error"]
    assert all(w in message for w in words), message


def test_rows_of_doubles_beyond_fp32_are_refused_naming_the_value(http: httpx.Client):
    body, headers = binary_rows(np.array([[1, 2, 3, 1e39]]), {"label": False}, datatype="FP64")
    answer = http.post("/v2/models/iris/infer", content=body, headers=headers)
    assert answer.status_code == 400, answer.text
    assert "row 0 column 3 is 1e+39, not a finite number in the range of FP32" in answer.json()["error"]


# A model loaded for a task it does not do: refused at load, naming the model, the task and why.


@pytest.mark.parametrize(
    ("source", "task", "words"),
    [
        ("vit", "object-detection", ["ViTForImageClassification", "a model for image-classification"]),
        ("vit", "zero-shot-image-classification", ["ViTForImageClassification", "image-classification"]),
        ("clip", "image-classification", ["CLIPModel", "a model for zero-shot-image-classification"]),
        ("segformer", "image-classification", ["SegformerForSemanticSegmentation", "image-segmentation"]),
        ("yolos", "image-segmentation", ["YolosForObjectDetection", "a model for object-detection"]),
        ("bert", "image-classification", ["BertForSequenceClassification", "text-classification"]),
        ("vit", "text-classification", ["ViTForImageClassification", "image-classification"]),
        ("tabular/iris.onnx", "tabular-regression", ["class labels", "load it as tabular-classification"]),
        ("reg.onnx", "tabular-classification", ["'variable' tensor(float)", "load it as tabular-regression"]),
        ("reg.onnx", "image-classification", ["[N, C, H, W]", "load it as tabular-classification"]),
        ("reg.onnx", "object-detection", ["is a file", "tabular-classification", "image-segmentation"]),
        ("vit", "tabular-classification", ["is a folder", ".onnx file"]),
        ("notes.txt", "tabular-regression", ["not an .onnx file"]),
        ("broken.onnx", "tabular-classification", ["broken.onnx", "INVALID_PROTOBUF"]),
    ],
)
def test_a_model_loaded_for_the_wrong_task_is_refused(http: httpx.Client, source: str, task: str, words: list[str]):
    name = "wrong-task"
    answer = http.post(f"/v2/repository/models/{name}/load", json={"parameters": {"source": source, "task": task}})
    assert answer.status_code == 400, answer.text
    message = answer.json()["error"]
    assert all(w in message for w in [repr(name), source, task, *words]), message
    if "is a" not in message and "not an .onnx" not in message:  # refused once read, not for its kind of source
        index = {m["name"]: m for m in http.post("/v2/repository/index").json()}
        assert index[name]["state"] == "UNAVAILABLE" and task in index[name]["reason"]
    assert http.get(f"/v2/models/{name}").status_code == 404


@pytest.mark.parametrize("source", ["../reg.onnx", "/etc/passwd.onnx", "tabular/../../x.onnx"])
def test_an_onnx_source_outside_the_models_root_is_refused(http: httpx.Client, source: str):
    answer = http.post(
        "/v2/repository/models/escape/load", json={"parameters": {"source": source, "task": "tabular-regression"}}
    )
    assert answer.status_code == 400, answer.text
    assert source in answer.json()["error"]


def test_a_missing_onnx_file_is_not_found(http: httpx.Client):
    answer = http.post(
        "/v2/repository/models/absent/load",
        json={"parameters": {"source": "tabular/absent.onnx", "task": "tabular-classification"}},
    )
    assert answer.status_code == 404, answer.text
    assert "tabular/absent.onnx" in answer.json()["error"]


# Inputs that are not the model's: 400 naming the model, its task and what it takes.

PNG = base64.b64encode(image_file(1)).decode()
ROW = [5.1, 3.5, 1.4, 0.2]


def fp32(data: list, shape: list[int] | None = None, name: str = "float_input", datatype: str = "FP32") -> dict:
    return {"name": name, "shape": shape or [len(data) // 4, 4], "datatype": datatype, "data": data}


@pytest.mark.parametrize(
    ("name", "inputs", "words"),
    [
        ("vit", [strings_input("text", ["hello"])], ["'vit'", "image-classification", "'image' BYTES [N]", "'text'"]),
        ("bert", [image_input([image_file(0)])], ["'bert'", "text-classification", "'text' BYTES [N]", "'image'"]),
        (
            "clip",
            [image_input([image_file(0)])],
            ["'clip'", "zero-shot-image-classification", "missing 'candidate_labels'"],
        ),
        ("clip", [image_input([image_file(0)]), strings_input("candidate_labels", [])], ["candidate_labels", "empty"]),
        ("yolos", [image_input([image_file(0)]), image_input([image_file(1)])], ["'image'", "twice"]),
        ("segformer", [{**image_input([image_file(0)]), "parameters": {"content_type": "str"}}], ["content_type"]),
        (
            "iris",
            [fp32(ROW[:3] * 2, [2, 3])],
            ["'iris'", "tabular-classification", "'float_input' FP32 [N, 4]", "expected 4 features per row, got 3"],
        ),
        ("reg", [fp32(ROW[:3] * 2, [2, 3])], ["tabular-regression", "expected 4 features per row, got 3"]),
        ("iris", [fp32([*ROW[:3], "abc"])], ["row 0 column 3", "'abc'", "not a number"]),
        ("iris", [fp32([*ROW[:3], True])], ["row 0 column 3", "True", "not a number"]),
        ("iris", [fp32([*ROW, *ROW[:3], None])], ["row 1 column 3", "None", "not a number"]),
        ("iris", [fp32([*ROW[:3], 1e39])], ["row 0 column 3", "not a finite number"]),
        ("iris", [fp32([*ROW[:3], {"x": 1}])], ["not a number"]),
        ("iris", [fp32(ROW, name="x")], ["'float_input'", "unexpected 'x'"]),
        ("iris", [fp32(ROW, [4])], ["shape [4]", "[N, F]"]),
        ("iris", [fp32(["a", "b", "c", "d"], datatype="BYTES")], ["datatype 'BYTES'"]),
        ("reg", [image_input([image_file(0)])], ["'reg'", "tabular-regression", "'float_input' FP32"]),
    ],
)
def test_inputs_that_do_not_fit_the_model_are_refused(
    http: httpx.Client, name: str, inputs: list[dict], words: list[str]
):
    answer = http.post(f"/v2/models/{name}/infer", json={"inputs": inputs})
    assert answer.status_code == 400, answer.text
    message = answer.json()["error"]
    assert all(w in message for w in words), message


@pytest.mark.parametrize(
    ("name", "content", "status", "words"),
    [
        (
            "iris",
            b'{"inputs": [{"name": "float_input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 1'
            + b"0" * 400
            + b"]}]}",
            400,
            "too large",
        ),
        (
            "iris",
            b'{"inputs": [{"name": "float_input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 1e400]}]}',
            400,
            "not a finite number",
        ),
        (
            "iris",
            b'{"inputs": [{"name": "float_input", "shape": [2, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}',
            422,
            "shape [2, 4]",
        ),
        (
            "iris",
            b'{"inputs": [{"name": "float_input", "shape": [1, -4], "datatype": "FP32", "data": []}]}',
            422,
            "negative",
        ),
        (
            "iris",
            b'{"inputs": [{"name": "float_input", "shape": [1, 4], "datatype": "FP99", "data": [1, 2, 3, 4]}]}',
            422,
            "FP99",
        ),
        (
            "yolos",
            json.dumps({"inputs": [image_input([image_file(0)])], "parameters": {"threshold": 2}}).encode(),
            422,
            "threshold",
        ),
        (
            "bert",
            b'{"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["%%%"], '
            b'"parameters": {"content_type": "base64"}}]}',
            422,
            "base64",
        ),
    ],
)
def test_malformed_tensors(http: httpx.Client, name: str, content: bytes, status: int, words: str):
    answer = http.post(f"/v2/models/{name}/infer", content=content, headers={"content-type": "application/json"})
    assert answer.status_code == status, answer.text
    assert words in answer.json()["error"]


def test_nested_and_empty_requests(http: httpx.Client):
    # Nesting deeper than any recursion limit: refused or read, never a crash.
    deep = (
        b'{"inputs": [{"name": "float_input", "shape": [1, 4], "datatype": "FP32", "data": '
        + b"[" * 3000
        + b"5.1, 3.5, 1.4, 0.2"
        + b"]" * 3000
        + b"}]}"
    )
    answer = http.post("/v2/models/iris/infer", content=deep, headers={"content-type": "application/json"})
    assert answer.status_code in (200, 400, 422), answer.text
    empty = http.post("/v2/models/iris/infer", json={"inputs": [fp32([], [0, 4])]})
    assert empty.status_code in (200, 422), empty.text
    none = http.post("/v2/models/bert/infer", json={"inputs": [strings_input("text", [])]})
    assert none.status_code == 200 and none.json()["outputs"][0]["shape"] == [0, 2]


# Random bodies, from nonsense to nearly right, against a model of every task: never a 5xx.

VALUES = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from([10**400, -(2**63), 1e308, -0.0])
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6)
    | st.sampled_from([PNG, "", "%%"])
)
DATA = st.recursive(VALUES, lambda inner: st.lists(inner, max_size=5), max_leaves=12)
TENSORS = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["image", "text", "candidate_labels", "float_input", "x"]),
        "shape": st.lists(st.integers(-1, 5) | st.sampled_from([2**40, 10**20]), max_size=3),
        "datatype": st.sampled_from(["BYTES", "FP32", "FP64", "INT64", "BOOL", "fp32"]),
        "data": st.lists(DATA, max_size=8),
    },
    optional={
        "parameters": st.fixed_dictionaries({}, optional={"content_type": st.sampled_from(["base64", "str", "x"])})
    },
)


@st.composite
def fitting_tensors(draw: st.DrawFn) -> dict:
    """Tensors whose shape fits their data: they get past the protocol, to the model's own checks."""
    count, width = draw(st.integers(0, 3)), draw(st.integers(1, 5))
    values = draw(st.lists(VALUES | st.floats(-10, 10), min_size=count * width, max_size=count * width))
    return {
        "name": draw(st.sampled_from(["image", "text", "candidate_labels", "float_input"])),
        "shape": [count, width] if draw(st.booleans()) else [count * width],
        "datatype": draw(st.sampled_from(["BYTES", "FP32", "INT64"])),
        "data": values,
    }


BODIES = st.fixed_dictionaries(
    {"inputs": st.lists(TENSORS | fitting_tensors(), min_size=1, max_size=3)},
    optional={
        "parameters": st.fixed_dictionaries(
            {},
            optional={
                "top_k": st.integers(-2, 10) | st.sampled_from([2**63, 10**30]),
                "threshold": st.floats(-1, 2) | st.sampled_from([1e308, "x", None]),
            },
        )
    },
)


def test_random_bodies_never_get_a_server_error(http: httpx.Client):
    from hypothesis import HealthCheck, given, settings

    answers: set[int] = set()

    @settings(
        max_examples=150,
        deadline=None,
        derandomize=True,
        database=None,
        print_blob=False,
        suppress_health_check=list(HealthCheck),
    )
    @given(st.sampled_from(list(MODELS)), BODIES)
    def no_server_error(name: str, body: dict) -> None:
        answer = http.post(f"/v2/models/{name}/infer", json=body)
        assert answer.status_code < 500, (name, body, answer.text)
        assert "error" in answer.json() or answer.status_code == 200
        answers.add(answer.status_code)

    no_server_error()
    assert {400, 422} <= answers, answers  # both kinds of refusal were exercised, and none was a 5xx


def test_no_internal_error_was_logged(server: ModelServerProcess):
    log = server.log_text()
    assert "Traceback" not in log and " 500 " not in log, log[-3000:]
