"""ONNX image models over any number of bands: image-classification and image-segmentation of float tensors.

The graph takes one float tensor [N, C, H, W] (C bands of H rows by W columns per tile) and answers
its own outputs as Triton's ONNX Runtime backend would, plus what the task adds: classification,
`label` BYTES [N, k] and `score` FP32 [N, k] (softmax of the first output unless it already holds
probabilities); segmentation, `class_id` UINT8 [N, H, W] (the argmax over the classes of the first
output [N, K, H, W], or that output itself when it holds class ids), so that a client that asks only
for it receives a byte per pixel instead of K floats.

Class names come from the graph's metadata_props `labels` (a JSON list indexed by class id) or from a
STAC MLM (Machine Learning Model extension) item next to the model (`<model>.json`,
`<model>.onnx.json` or `mlm.json`), whose `mlm:output` classes name the ids. The card's `mlm:input`
(bands, shape, value scaling) is answered in the model's metadata (parameters["mlm:input"]) for the
client to apply: bands are chosen and scaled where the data is, before the tensor travels.
"""

from __future__ import annotations

import json
import logging
import os
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from model_server.exceptions import ImageTooLarge, InputMismatch, LoadFailed
from model_server.protocol import InferInput, InferOutput, InferParameters, TensorMetadata
from model_server.tasks.base import InferLimits, InputSpec, TaskModel, library_call
from model_server.tasks.tabular import DATATYPES, providers

log = logging.getLogger(__name__)
FLOAT_INPUTS = {"tensor(float)"}
INTEGER_TYPES = {"tensor(int64)", "tensor(int32)", "tensor(int16)", "tensor(int8)", "tensor(uint8)", "tensor(uint16)"}
# The value scalings of MLM's Value Scaling Object that a client applies (processing expressions are not run).
SCALINGS = {
    "min-max": ("minimum", "maximum"),
    "z-score": ("mean", "stddev"),
    "clip": ("minimum", "maximum"),
    "clip-min": ("minimum",),
    "clip-max": ("maximum",),
    "offset": ("value",),
    "scale": ("value",),
}
MAX_CARD_BYTES = 4 * 1024 * 1024


def _dim(value: Any) -> int:
    """A graph dimension: its size, or -1 when it is symbolic (any size)."""
    return value if isinstance(value, int) and value > 0 else -1


class OnnxImageModel(TaskModel):
    platform = "onnxruntime"

    def __init__(self, session: Any, labels: list[str], card_input: dict[str, Any] | None, location: str):
        super().__init__(labels)
        self.session = session
        graph_input = session.get_inputs()[0]
        self.input_name = graph_input.name
        self.batch, self.bands, self.height, self.width = (_dim(d) for d in graph_input.shape)
        self.card_input = card_input
        if card_input is not None:
            self._fill_from_card(card_input, location)
        self.graph_outputs = session.get_outputs()
        self.weight_bytes = os.path.getsize(location)

    def _fill_from_card(self, card_input: dict[str, Any], location: str) -> None:
        """The card's input shape fills the graph's symbolic dimensions; one that contradicts the graph is refused."""
        shape = (card_input.get("input") or {}).get("shape")
        if not (isinstance(shape, list) and len(shape) == 4 and all(type(d) is int for d in shape)):
            return
        for attribute, given, what in (
            ("bands", shape[1], "bands"),
            ("height", shape[2], "rows"),
            ("width", shape[3], "columns"),
        ):
            held = getattr(self, attribute)
            if given > 0 and held > 0 and given != held:
                raise LoadFailed(
                    f"the model card next to {Path(location).name} says its input has {given} {what} but "
                    f"the graph takes {held}"
                )
            if given > 0:
                setattr(self, attribute, given)
        bands = card_input.get("bands")
        if isinstance(bands, list) and bands and self.bands > 0 and len(bands) != self.bands:
            raise LoadFailed(
                f"the model card next to {Path(location).name} lists {len(bands)} bands but the graph "
                f"takes {self.bands}"
            )

    @classmethod
    def load(cls, location: str, device: str | None) -> TaskModel:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only: ONNX Runtime's warnings would flood the log
        session = onnxruntime.InferenceSession(location, options, providers=providers(device))
        inputs = session.get_inputs()
        if len(inputs) != 1 or inputs[0].type not in FLOAT_INPUTS or len(inputs[0].shape) != 4:
            described = ", ".join(f"{i.name!r} {i.type} {i.shape}" for i in inputs)
            tabular = (
                " (a graph of rows [N, F] is tabular: load it as tabular-classification or tabular-regression)"
                if len(inputs) == 1 and len(inputs[0].shape) == 2
                else ""
            )
            raise LoadFailed(
                f"the graph takes {described}; {cls.task} of an .onnx file serves graphs of one float "
                f"input [N, C, H, W] (tiles of C bands, H rows, W columns){tabular}"
            )
        card = model_card(Path(location))
        labels = graph_labels(session, location) or (card.labels if card else [])
        model = cls(session, labels, card.input if card else None, location)
        model.check_outputs()
        return model

    def check_outputs(self) -> None:
        raise NotImplementedError

    @property
    def input_specs(self) -> list[InputSpec]:
        bands = "bands" if self.bands == -1 else f"{self.bands} bands"
        return [
            InputSpec(
                self.input_name,
                ("FP32",),
                (-1, self.bands, self.height, self.width),
                f"tiles of {bands} × rows × columns, float32",
            )
        ]

    def metadata_parameters(self) -> dict[str, Any] | None:
        parameters: dict[str, Any] = {"labels": self.labels}
        if self.card_input is not None:
            parameters["mlm:input"] = self.card_input
        return parameters

    def close(self) -> None:
        self.session = None

    def memory_bytes(self) -> int:
        return self.weight_bytes  # ONNX Runtime holds the graph's initializers: about the file's size

    def graph_metadata(self) -> list[TensorMetadata]:
        return [
            TensorMetadata(name=o.name, datatype=DATATYPES.get(o.type, o.type), shape=[_dim(d) for d in o.shape])
            for o in self.graph_outputs
        ]

    def tiles(self, inputs: list[InferInput], limits: InferLimits) -> np.ndarray:
        """The request's tiles as float32 [N, C, H, W]; InputMismatch says which dimension does not fit and how."""
        given = self.take(inputs)[self.input_name]
        if len(given.shape) != 4:
            raise InputMismatch(
                f"input {given.name!r} has shape {given.shape}; expected [N, C, H, W], N tiles of C "
                "bands, H rows and W columns"
            )
        count, bands, height, width = given.shape
        if self.bands != -1 and bands != self.bands:
            raise InputMismatch(f"model expects {self.bands} bands, data has {bands} (input shape {given.shape})")
        if (self.height != -1 and height != self.height) or (self.width != -1 and width != self.width):
            raise InputMismatch(
                f"model expects tiles of {_size(self.height)}×{_size(self.width)} pixels (rows × "
                f"columns), data has {height}×{width}: tile the data to the model's size"
            )
        if height * width > limits.max_image_pixels:
            raise ImageTooLarge(
                f"tiles of {height}×{width} = {height * width:,} pixels; the limit is "
                f"{limits.max_image_pixels:,} pixels per tile "
                "(CONSTELLATION_MODEL_SERVER_MAX_IMAGE_PIXELS): tile the data smaller"
            )
        if count * height * width > limits.max_request_pixels:
            raise ImageTooLarge(
                f"the request's {count} tiles hold {count * height * width:,} pixels together; the "
                f"limit is {limits.max_request_pixels:,} pixels per request "
                "(CONSTELLATION_MODEL_SERVER_MAX_REQUEST_PIXELS): send fewer tiles per request"
            )
        return given.array("FP32")

    def run(self, tiles: np.ndarray, limits: InferLimits) -> list[np.ndarray]:
        """The graph's outputs for every tile, run a batch at a time (a graph of fixed N, N at a time)."""
        step = self.batch if self.batch != -1 else limits.batch_size
        if len(tiles) and len(tiles) % step and self.batch != -1:
            raise InputMismatch(
                f"the graph takes batches of exactly {self.batch} tiles; send a multiple of "
                f"{self.batch}, not {len(tiles)}"
            )
        parts: list[list[np.ndarray]] = []
        for start in range(0, len(tiles), step):
            chunk = tiles[start : start + step]
            what = f"tiles {start}-{start + len(chunk) - 1}"
            parts.append(library_call(what, partial(self.session.run, None, {self.input_name: chunk})))
        if not parts:
            return [
                np.zeros([0, *[max(_dim(d), 0) for d in o.shape[1:]]], dtype=np.float32) for o in self.graph_outputs
            ]
        if len(parts) == 1:  # one batch: its arrays as they are, no copy
            return [np.asarray(value) for value in parts[0]]
        return [np.concatenate([np.asarray(part[i]) for part in parts]) for i in range(len(self.graph_outputs))]

    def graph_answer(self, results: list[np.ndarray]) -> list[InferOutput]:
        return [InferOutput.of_array(o.name, value) for o, value in zip(self.graph_outputs, results, strict=True)]


class OnnxImageClassifier(OnnxImageModel):
    task = "image-classification"

    def check_outputs(self) -> None:
        first = self.graph_outputs[0]
        if first.type not in ("tensor(float)", "tensor(double)") or len(first.shape) != 2:
            raise LoadFailed(
                f"the graph's first output is {first.name!r} {first.type} {first.shape}; "
                f"{self.task} takes scores per class [N, K] from it"
            )
        classes = _dim(first.shape[1])
        if classes != -1 and self.labels and len(self.labels) != classes:
            raise LoadFailed(
                f"the model names {len(self.labels)} classes but its output {first.name!r} scores {classes}"
            )

    @property
    def outputs(self) -> list[TensorMetadata]:
        return [
            *self.graph_metadata(),
            TensorMetadata(name="label", datatype="BYTES", shape=[-1, -1]),
            TensorMetadata(name="score", datatype="FP32", shape=[-1, -1]),
        ]

    def infer(self, inputs: list[InferInput], parameters: InferParameters, limits: InferLimits) -> list[InferOutput]:
        results = self.run(self.tiles(inputs, limits), limits)
        probabilities = as_probabilities(np.asarray(results[0], dtype=np.float64))
        classes = probabilities.shape[1]
        names = self.labels if len(self.labels) == classes else [str(i) for i in range(classes)]
        k = min(parameters.top_k, classes)
        order = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
        labels = [names[i] for row in order.tolist() for i in row]
        scores = np.take_along_axis(probabilities, order, axis=1).astype(np.float32)
        shape = [len(probabilities), k]
        return [
            *self.graph_answer(results),
            InferOutput(name="label", shape=shape, datatype="BYTES", data=labels),
            InferOutput.of_array("score", scores),
        ]


class OnnxImageSegmenter(OnnxImageModel):
    task = "image-segmentation"

    def check_outputs(self) -> None:
        first = self.graph_outputs[0]
        scores = first.type in ("tensor(float)", "tensor(double)") and len(first.shape) == 4
        ids = first.type in INTEGER_TYPES and len(first.shape) in (3, 4)
        if not (scores or ids):
            raise LoadFailed(
                f"the graph's first output is {first.name!r} {first.type} {first.shape}; {self.task} "
                "takes class scores [N, K, H, W] or class ids [N, H, W] from it"
            )
        classes = _dim(first.shape[1]) if scores else -1
        if classes != -1 and self.labels and len(self.labels) != classes:
            raise LoadFailed(
                f"the model names {len(self.labels)} classes but its output {first.name!r} scores {classes}"
            )
        self.scores = scores

    @property
    def outputs(self) -> list[TensorMetadata]:
        return [*self.graph_metadata(), TensorMetadata(name="class_id", datatype="UINT8", shape=[-1, -1, -1])]

    def infer(self, inputs: list[InferInput], parameters: InferParameters, limits: InferLimits) -> list[InferOutput]:
        results = self.run(self.tiles(inputs, limits), limits)
        first = np.asarray(results[0])
        if self.scores:
            ids = best_class(first)
        else:
            ids = first[:, 0] if first.ndim == 4 else first
            most = max(len(self.labels), int(ids.max(initial=0)) + 1)
            ids = ids.astype(np.uint8 if most <= 256 else np.uint16)
        return [*self.graph_answer(results), InferOutput.of_array("class_id", ids)]


def best_class(scores: np.ndarray) -> np.ndarray:
    """argmax over the classes of [N, K, H, W] scores (the first class on ties), as uint8 (uint16 past 256 classes).

    A pass per class over contiguous planes: NumPy's argmax along axis 1 strides across them and took about 1.6x
    as long on 16 tiles of 256x256 (36 vs 22 ms), as long as the forward pass of a small model."""
    classes = scores.shape[1]
    ids = np.zeros((scores.shape[0], *scores.shape[2:]), dtype=np.uint8 if classes <= 256 else np.uint16)
    best = scores[:, 0].copy()
    higher = np.empty(best.shape, dtype=bool)
    for k in range(1, classes):
        np.greater(scores[:, k], best, out=higher)
        np.copyto(ids, ids.dtype.type(k), where=higher)
        np.maximum(best, scores[:, k], out=best)
    return ids


def as_probabilities(scores: np.ndarray) -> np.ndarray:
    """Rows of probabilities as they are; anything else (logits) through a softmax."""
    if scores.size and (scores >= 0).all() and np.allclose(scores.sum(axis=1), 1.0, atol=1e-3):
        return scores
    shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def _size(dim: int) -> str:
    return "any" if dim == -1 else str(dim)


def graph_labels(session: Any, location: str) -> list[str]:
    """The class names of the graph's metadata_props `labels` (a JSON list indexed by class id); [] when absent."""
    text = session.get_modelmeta().custom_metadata_map.get("labels")
    if text is None:
        return []
    try:
        labels = json.loads(text)
    except ValueError as exc:
        raise LoadFailed(f"the metadata_props 'labels' of {Path(location).name} is not JSON: {exc}") from None
    if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
        raise LoadFailed(
            f"the metadata_props 'labels' of {Path(location).name} is not a JSON list of class names "
            "indexed by class id"
        )
    return labels


class Card:
    """What a STAC MLM item says of a model: class names by id, and its (first) input."""

    def __init__(self, labels: list[str], input: dict[str, Any] | None):
        self.labels = labels
        self.input = input


def model_card(model: Path) -> Card | None:
    """The STAC MLM item next to the model (`<stem>.json`, `<name>.json`, then `mlm.json` when it describes this
    file), or None when there is none; LoadFailed names what a card has wrong."""
    for candidate in (model.with_suffix(".json"), model.with_name(model.name + ".json"), model.with_name("mlm.json")):
        if not candidate.is_file():
            continue
        raw = read_card(candidate)
        if raw is None or (candidate.name == "mlm.json" and not describes(raw, model)):
            continue
        return card_of(raw, candidate.name)
    return None


def read_card(path: Path) -> dict[str, Any] | None:
    """The STAC item (as a dict) of an MLM card: None when the JSON is not a STAC item with MLM fields."""
    import pystac

    if path.stat().st_size > MAX_CARD_BYTES:
        raise LoadFailed(f"the model card {path.name} is larger than {MAX_CARD_BYTES} bytes")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise LoadFailed(f"the model card {path.name} is not JSON: {exc}") from None
    if not isinstance(raw, dict) or raw.get("type") != "Feature":
        return None
    try:
        item = pystac.Item.from_dict(raw, preserve_dict=True)
    except Exception as exc:  # pystac raises several kinds; its message says what is missing
        raise LoadFailed(f"the model card {path.name} is not a STAC item: {type(exc).__name__}: {exc}") from None
    if "mlm:input" not in item.properties and "mlm:output" not in item.properties:
        return None
    return item.to_dict(include_self_link=False, transform_hrefs=False)


def describes(item: dict[str, Any], model: Path) -> bool:
    """Whether an `mlm.json` shared by a folder is this model's: its `mlm:model` asset (if it has one) names this
    file."""
    hrefs = [
        str(asset.get("href", ""))
        for asset in (item.get("assets") or {}).values()
        if isinstance(asset, dict) and "mlm:model" in (asset.get("roles") or [])
    ]
    return not hrefs or any(href.rsplit("/", 1)[-1] == model.name for href in hrefs)


def card_of(item: dict[str, Any], name: str) -> Card:
    properties = item.get("properties") or {}
    labels: list[str] = []
    outputs = properties.get("mlm:output") or []
    if isinstance(outputs, list) and outputs and isinstance(outputs[0], dict):
        classes = outputs[0].get("classification:classes") or []
        by_id: dict[int, str] = {}
        for index, found in enumerate(classes if isinstance(classes, list) else []):
            if (
                not isinstance(found, dict)
                or type(found.get("value")) is not int
                or found["value"] < 0
                or not isinstance(found.get("name"), str)
            ):
                raise LoadFailed(
                    f"the model card {name}: mlm:output class {index} is not {{'value': id, 'name': text}}"
                )
            by_id[found["value"]] = found["name"]
        if by_id:
            labels = [by_id.get(i, str(i)) for i in range(max(by_id) + 1)]
    inputs = properties.get("mlm:input") or []
    first = inputs[0] if isinstance(inputs, list) and inputs and isinstance(inputs[0], dict) else None
    return Card(labels, model_input(first, name) if first is not None else None)


def model_input(given: dict[str, Any], name: str) -> dict[str, Any]:
    """The card's input as the client applies it: band names, the input structure, and value scaling (MLM 1.3+'s
    `value_scaling`, or the `norm_type`/`statistics` of earlier versions turned into it)."""
    bands = []
    for index, band in enumerate(given.get("bands") or []):
        if isinstance(band, dict) and (band.get("expression") is not None or band.get("format") is not None):
            raise LoadFailed(
                f"the model card {name}: input band {index} is an expression; derived bands are not "
                "computed here, give the model the bands it reads"
            )
        band_name = band.get("name") if isinstance(band, dict) else band
        if not isinstance(band_name, str) or not band_name:
            raise LoadFailed(f"the model card {name}: input band {index} has no name")
        bands.append(band_name)
    scaling = given.get("value_scaling")
    if scaling is None and given.get("norm_type"):
        scaling = legacy_scaling(given, name)
    if scaling is not None:
        if not isinstance(scaling, list) or not scaling:
            raise LoadFailed(f"the model card {name}: value_scaling is not a list of Value Scaling Objects")
        for index, step in enumerate(scaling):
            kind = step.get("type") if isinstance(step, dict) else None
            if kind is None and isinstance(step, dict):
                continue  # `type: null`: this band is not scaled
            if kind not in SCALINGS:
                raise LoadFailed(
                    f"the model card {name}: value_scaling {index} is of type {kind!r}; applied here: "
                    f"{', '.join(SCALINGS)} (processing expressions are not run)"
                )
            missing = [p for p in SCALINGS[kind] if not isinstance(step.get(p), int | float)]
            if missing:
                raise LoadFailed(f"the model card {name}: value_scaling {index} ({kind}) lacks {', '.join(missing)}")
    structure = given.get("input") if isinstance(given.get("input"), dict) else {}
    return {"name": given.get("name"), "bands": bands, "input": structure, "value_scaling": scaling}


def legacy_scaling(given: dict[str, Any], name: str) -> list[dict[str, Any]]:
    """MLM before 1.3: `norm_type` with per-band (or one) `statistics` objects."""
    kind = given["norm_type"]
    statistics = given.get("statistics") or []
    if kind not in ("z-score", "min-max") or not isinstance(statistics, list) or not statistics:
        raise LoadFailed(
            f"the model card {name}: norm_type {kind!r} with statistics {str(statistics)[:80]}; applied "
            "here: z-score (mean, stddev) or min-max (minimum, maximum) statistics"
        )
    keys = SCALINGS[kind]
    return [{"type": kind, **{k: s.get(k) for k in keys}} for s in statistics if isinstance(s, dict)]
