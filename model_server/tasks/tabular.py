"""Tabular tasks: an ONNX graph (scikit-learn by skl2onnx, XGBoost, LightGBM, ...) run by ONNX Runtime.

The graph takes one float tensor [N, F] of rows. The answer holds the graph's own outputs as Triton
would return them (a ZipMap's sequence of {class: probability} maps becomes FP32 [N, C]), plus
`label` BYTES [N] (classification: each row's class as a string) or `value` FP32 [N] (regression).
onnxruntime and onnx are imported only when a tabular model is loaded.

Rows may come as JSON numbers or in binary (the binary tensor data extension): binary rows of the
graph's float type go to ONNX Runtime as the body holds them, and outputs of numbers are kept as
arrays, so an answer in binary makes no Python list of them.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np

from model_server.exceptions import InputMismatch, InvalidInput, LoadFailed
from model_server.protocol import NUMPY_TYPES, InferInput, InferOutput, InferParameters, TensorMetadata, misfits
from model_server.tasks.base import InferLimits, InputSpec, TaskModel, library_call

log = logging.getLogger(__name__)
DATATYPES = {
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(float16)": "FP16",
    "tensor(int64)": "INT64",
    "tensor(int32)": "INT32",
    "tensor(int16)": "INT16",
    "tensor(int8)": "INT8",
    "tensor(uint8)": "UINT8",
    "tensor(string)": "BYTES",
    "tensor(bool)": "BOOL",
}
LABEL_TYPES = {"tensor(int64)", "tensor(int32)", "tensor(string)"}
FLOAT_TYPES = {"tensor(float)", "tensor(double)"}
NUMBERS = ("FP32", "FP64", "FP16", "INT64", "INT32", "INT16", "INT8", "UINT64", "UINT32", "UINT16", "UINT8")


class OnnxModel(TaskModel):
    platform = "onnxruntime"

    def __init__(self, session: Any, labels: list[str]):
        super().__init__(labels)
        self.session = session
        graph_input = session.get_inputs()[0]
        self.input_name, self.input_type = graph_input.name, graph_input.type
        self.features = graph_input.shape[1] if isinstance(graph_input.shape[1], int) else -1
        self.graph_outputs = session.get_outputs()
        self.weight_bytes = 0  # the graph file's size, set by load()

    @classmethod
    def load(cls, location: str, device: str | None) -> TaskModel:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only: ONNX Runtime's warnings would flood the log
        # After each run ONNX Runtime's threads spin waiting for the next one, which here comes a request later:
        # they keep the CPUs from the answer, the HTTP and the client meanwhile. Off, 10,000 rows of gradient
        # boosting took 78 ms instead of 149 ms through the server on a busy 2-CPU machine (bench/RESULTS.md,
        # "Tabular inference in binary").
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = onnxruntime.InferenceSession(location, options, providers=providers(device))
        inputs = session.get_inputs()
        if len(inputs) != 1 or inputs[0].type not in FLOAT_TYPES or len(inputs[0].shape) != 2:
            described = ", ".join(f"{i.name!r} {i.type} {i.shape}" for i in inputs)
            raise LoadFailed(
                f"the graph takes {described}; {cls.task} serves graphs of one float input [N, F] "
                "(convert with a single FloatTensorType input)"
            )
        model = cls.checked(session, location)
        # ONNX Runtime holds the graph's initializers (its weights): about the file's size.
        model.weight_bytes = os.path.getsize(location)
        return model

    @classmethod
    def checked(cls, session: Any, location: str) -> OnnxModel:
        raise NotImplementedError

    @property
    def input_specs(self) -> list[InputSpec]:
        features = "features per row" if self.features == -1 else f"{self.features} features per row"
        # The first datatype is the one to send: the graph's own, which then needs no conversion.
        first = self.datatype
        return [InputSpec(self.input_name, (first, *[n for n in NUMBERS if n != first]), (-1, self.features), features)]

    @property
    def datatype(self) -> str:
        """The protocol's name of the graph's input type: FP32, or FP64 for a graph of doubles."""
        return "FP32" if self.input_type == "tensor(float)" else "FP64"

    def close(self) -> None:
        self.session = None

    def memory_bytes(self) -> int:
        return self.weight_bytes

    def rows(self, inputs: list[InferInput]) -> np.ndarray:
        """The request's rows as the graph's float array; InputMismatch names a wrong shape or value."""
        given = self.take(inputs)[self.input_name]
        if len(given.shape) != 2:
            raise InputMismatch(
                f"input {given.name!r} has shape {given.shape}; expected [N, F], N rows of "
                f"{'F' if self.features == -1 else self.features} features"
            )
        count, width = given.shape
        if self.features != -1 and width != self.features:
            raise InputMismatch(f"expected {self.features} features per row, got {width} (shape {given.shape})")
        if given.binary_size is not None:
            # Binary rows: already numbers; in the graph's type they are used in place (no copy).
            with np.errstate(over="ignore"):  # a value beyond the graph's type becomes inf, named below
                values = given.array(self.datatype)
            bad = np.flatnonzero(~np.isfinite(values.ravel()))
            if bad.size:
                index = int(bad[0])
                sent = given.array(given.datatype).ravel()[index]
                raise InputMismatch(
                    f"input {given.name!r} row {index // width} column {index % width} is "
                    f"{sent.item()!r:.40}, not a finite number in the range of {self.datatype}"
                )
            return values
        flat = given.flat
        if not set(map(type, flat)) <= {int, float}:  # one pass in C; the loop below only to name the value
            for index, value in enumerate(flat):
                if type(value) not in (int, float):
                    raise InputMismatch(
                        f"input {given.name!r} row {index // width} column {index % width} is "
                        f"{value!r:.40}, not a number"
                    )
        try:
            values = np.array(flat, dtype=np.float64)
        except OverflowError:
            raise InputMismatch(f"input {given.name!r} holds an integer too large for a float") from None
        for name in dict.fromkeys((given.datatype, self.datatype)):  # declared, and the graph's (a cast says nothing)
            bad, what = misfits(values, NUMPY_TYPES[name])
            if bad.size:
                index = int(bad[0])
                raise InputMismatch(
                    f"input {given.name!r} row {index // width} column {index % width} is "
                    f"{given.flat[index]!r:.40}, not {what} in the range of {name}"
                )
        return values.astype(np.float32 if self.input_type == "tensor(float)" else np.float64).reshape(count, width)

    def run(self, rows: np.ndarray) -> list[Any]:
        return library_call(f"{len(rows)} rows", lambda: self.session.run(None, {self.input_name: rows}))

    def graph_outputs_metadata(self) -> list[TensorMetadata]:
        metadata = []
        for output in self.graph_outputs:
            if output.type.startswith("seq(map("):
                metadata.append(TensorMetadata(name=output.name, datatype="FP32", shape=[-1, len(self.labels) or -1]))
            else:
                shape = [d if isinstance(d, int) else -1 for d in output.shape]
                metadata.append(
                    TensorMetadata(name=output.name, datatype=DATATYPES.get(output.type, output.type), shape=shape)
                )
        return metadata


class TabularClassifier(OnnxModel):
    label_output: str  # the graph output that holds the class labels (set by checked)
    task = "tabular-classification"

    @classmethod
    def checked(cls, session: Any, location: str) -> OnnxModel:
        labels = [o for o in session.get_outputs() if o.type in LABEL_TYPES]
        if not labels:
            described = ", ".join(f"{o.name!r} {o.type}" for o in session.get_outputs())
            raise LoadFailed(
                f"the graph's outputs ({described}) hold no class labels (an INT64 or STRING tensor); "
                "a graph with only float outputs is a regressor: load it as tabular-regression"
            )
        model = cls(session, class_labels(location, labels[0].name))
        model.label_output = labels[0].name
        return model

    @property
    def outputs(self) -> list[TensorMetadata]:
        return [o for o in self.graph_outputs_metadata() if o.name != "label"] + [
            TensorMetadata(name="label", datatype="BYTES", shape=[-1])
        ]

    def infer(self, inputs: list[InferInput], parameters: InferParameters, limits: InferLimits) -> list[InferOutput]:
        rows = self.rows(inputs)
        results = dict(zip((o.name for o in self.graph_outputs), self.run(rows), strict=True))
        outputs = [tensor(name, value, self.labels) for name, value in results.items() if name != "label"]
        classes = strings(np.asarray(results[self.label_output]).ravel())
        return [*outputs, InferOutput(name="label", shape=[len(classes)], datatype="BYTES", data=classes)]


class TabularRegressor(OnnxModel):
    value_output: str  # the graph output that holds the predicted values (set by checked)
    task = "tabular-regression"

    @classmethod
    def checked(cls, session: Any, location: str) -> OnnxModel:
        outputs = session.get_outputs()
        labels = [o for o in outputs if o.type in LABEL_TYPES]
        values = [o for o in outputs if o.type in FLOAT_TYPES]
        if labels or not values:
            described = ", ".join(f"{o.name!r} {o.type}" for o in outputs)
            why = (
                "holds class labels, so it is a classifier: load it as tabular-classification"
                if labels
                else "has no float tensor of predicted values"
            )
            raise LoadFailed(f"the graph's outputs ({described}): {(labels or outputs)[0].name!r} {why}")
        shape = values[0].shape
        if len(shape) > 2 or (len(shape) == 2 and isinstance(shape[1], int) and shape[1] != 1):
            raise LoadFailed(
                f"the graph's output {values[0].name!r} has shape {shape}; {cls.task} serves one value "
                "per row ([N] or [N, 1])"
            )
        model = cls(session, [])
        model.value_output = values[0].name
        return model

    @property
    def outputs(self) -> list[TensorMetadata]:
        return [o for o in self.graph_outputs_metadata() if o.name != "value"] + [
            TensorMetadata(name="value", datatype="FP32", shape=[-1])
        ]

    def infer(self, inputs: list[InferInput], parameters: InferParameters, limits: InferLimits) -> list[InferOutput]:
        rows = self.rows(inputs)
        results = dict(zip((o.name for o in self.graph_outputs), self.run(rows), strict=True))
        outputs = [tensor(name, value, self.labels) for name, value in results.items() if name != "value"]
        values = np.asarray(results[self.value_output], dtype=np.float64).ravel()
        if values.size != len(rows):
            raise InvalidInput(
                f"the graph gave {values.size} values for {len(rows)} rows; {self.task} serves one value per row"
            )
        return [*outputs, InferOutput.of_array("value", values.astype(np.float32))]


def tensor(name: str, value: Any, labels: list[str]) -> InferOutput:
    """One graph output as the protocol's tensor; a ZipMap's list of {class: p} maps becomes FP32 [N, C].

    Numbers stay an array (made a list only if answered in JSON, where the route refuses NaN and infinities,
    which JSON cannot carry)."""
    if isinstance(value, list):
        columns = list(value[0]) if value else labels
        value = np.array([[row[c] for c in columns] for row in value], dtype=np.float32).reshape(-1, len(columns))
    array = np.asarray(value)
    if array.dtype.kind in "OSU":
        return InferOutput(name=name, shape=list(array.shape), datatype="BYTES", data=strings(array.ravel()))
    return InferOutput.of_array(name, array)


def strings(array: np.ndarray) -> list[str]:
    """A string or integer tensor's items as text, converted by NumPy (no Python call per item)."""
    if array.dtype.kind == "O":  # ONNX Runtime's strings: Python str objects already, taken as they are
        items = array.tolist()
        if set(map(type, items)) <= {str}:
            return items
    if array.dtype.kind == "S":
        array = np.char.decode(array, "utf-8", "replace")
    return array.astype(str).tolist()


def class_labels(location: str, label_output: str) -> list[str]:
    """The class names by index, as the graph's classifier node (or ZipMap) lists them; [] when it cannot tell."""
    try:
        import onnx

        graph = onnx.load(location, load_external_data=False).graph
    except Exception as exc:  # no onnx package, or a graph ONNX Runtime reads and onnx does not: no names
        log.info("class names of %s not read: %s", location, exc)
        return []

    def names(node: Any) -> list[str]:
        for attribute in node.attribute:
            if attribute.name == "classlabels_strings" and attribute.strings:
                return [s.decode("utf-8", "replace") for s in attribute.strings]
            if attribute.name in ("classlabels_ints", "classlabels_int64s") and attribute.ints:
                return [str(i) for i in attribute.ints]
        return []

    producer = {output: node for node in graph.node for output in node.output}
    name = label_output
    for _ in range(16):  # back from the label output, through Identity, Cast, ..., to the classifier
        node = producer.get(name)
        if node is None or not node.input:
            break
        if found := names(node):
            return found
        name = node.input[0]
    zipmaps = [found for node in graph.node if node.op_type == "ZipMap" and (found := names(node))]
    candidates = {tuple(found) for node in graph.node if (found := names(node))}
    return zipmaps[-1] if zipmaps else list(next(iter(candidates))) if len(candidates) == 1 else []


def providers(device: str | None) -> list[Any]:
    """CPU, or CUDA first where ONNX Runtime has it and the device is a GPU (or unset)."""
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers() and (device or "cuda").startswith("cuda"):
        index = int(device.split(":", 1)[1]) if device and ":" in device else 0
        return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]
