"""Open Inference Protocol (KServe V2 REST) messages, and Triton's repository-extension bodies.

A request's tensors are checked here only for what holds for any model: a known datatype, a
shape that matches the data (flat row-major, or nested), strings in BYTES tensors. Which inputs a
model takes is its task's business (model_server/tasks/).

The binary tensor data extension (Triton's and KServe's): a tensor's values may travel after the
JSON header of the body, little-endian and row-major, its size in `parameters.binary_data_size`
(BYTES elements: a 4-byte little-endian length, then the bytes). `split_binary` reads such a body;
outputs made from NumPy arrays (`InferOutput.of_array`) are answered either way without a Python
list in between when they go in binary.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import struct
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from model_server.exceptions import InputMismatch, InvalidInput

DEFAULT_TOP_K = 5
# A lease holder: any visible ASCII (a run id, "host:pid", ...).
LEASE_PATTERN = r"^[\x21-\x7e]{1,200}$"
DATATYPES = (
    "BOOL",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "FP16",
    "FP32",
    "FP64",
    "BYTES",
)
Datatype = Literal[
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64", "BYTES"
]
# The protocol's datatypes as NumPy's, little-endian (the binary extension's byte order).
NUMPY_TYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype("?"),
    "UINT8": np.dtype("u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
DATATYPE_OF = {(dtype.kind, dtype.itemsize): name for name, dtype in NUMPY_TYPES.items()}
BINARY_HEADER = "inference-header-content-length"
# The most values a tensor's shape may describe: NumPy refuses an array (even an empty one, a shape with a 0)
# whose other dimensions multiply past its index type's range in bytes, at 8 bytes a value (the widest datatype).
MAX_ELEMENTS = int(np.iinfo(np.intp).max) // 8


class _Message(BaseModel):
    # The protocol lets clients add fields (e.g. `outputs`, extra parameters); we ignore them.
    model_config = ConfigDict(extra="ignore")


class InferInput(_Message):
    name: str
    shape: list[int]
    datatype: str
    data: list[Any] | None = None  # None: its values come in binary after the JSON (parameters.binary_data_size)
    parameters: dict[str, Any] = Field(default_factory=dict)
    _flat: list[Any] | None = PrivateAttr(default=None)
    _array: np.ndarray | None = PrivateAttr(default=None)  # a binary input's values (BYTES: None, see _blobs)
    _blobs: list[bytes] | None = PrivateAttr(default=None)  # a binary BYTES input's elements

    @model_validator(mode="after")
    def _shape_fits_data(self) -> InferInput:
        if self.datatype not in DATATYPES:
            raise ValueError(
                f"input {self.name!r} has datatype {self.datatype!r}; the protocol's datatypes are "
                f"{', '.join(DATATYPES)}"
            )
        if any(dim < 0 for dim in self.shape):
            raise ValueError(f"input {self.name!r} has shape {self.shape}; dimensions cannot be negative")
        if math.prod(dim for dim in self.shape if dim) > MAX_ELEMENTS:
            # Only a shape with a 0 gets this far with such sizes (no body holds that many values), and NumPy cannot
            # make even an empty array of it.
            raise ValueError(
                f"input {self.name!r} has shape {self.shape}; its non-zero dimensions multiply to more than "
                f"{MAX_ELEMENTS} values, more than an array can hold"
            )
        size = self.parameters.get("binary_data_size")
        if self.data is None:
            if type(size) is not int or size < 0:
                raise ValueError(
                    f"input {self.name!r} has no data: send `data`, or its values in binary after the "
                    "JSON with parameters.binary_data_size (their bytes) and the "
                    "Inference-Header-Content-Length header"
                )
            return self
        if size is not None:
            raise ValueError(f"input {self.name!r} has both `data` and parameters.binary_data_size; send one")
        self._flat = flatten(self.data)
        if math.prod(self.shape) != len(self._flat):
            expected = (
                f"expected shape [{len(self._flat)}]"
                if len(self.shape) <= 1
                else f"which is {math.prod(self.shape)} values"
            )
            raise ValueError(f"input {self.name!r} has shape {self.shape} but {len(self._flat)} items; {expected}")
        if self.datatype == "BYTES":
            for index, item in enumerate(self._flat):
                if not isinstance(item, str):
                    raise ValueError(f"input {self.name!r} data item {index} is {type(item).__name__}, not a string")
        return self

    @property
    def binary_size(self) -> int | None:
        """The bytes of its values after the JSON header; None when they are in `data`."""
        return self.parameters.get("binary_data_size") if self.data is None else None

    def attach(self, raw: bytes | memoryview) -> None:
        """Take its values from the body's binary part (little-endian, row-major); InputMismatch when they do not
        fit its shape and datatype."""
        count = math.prod(self.shape)
        if self.datatype == "BYTES":
            blobs: list[bytes] = []
            offset = 0
            while offset < len(raw):
                if offset + 4 > len(raw):
                    raise InputMismatch(f"input {self.name!r}: its binary BYTES data ends inside an element's length")
                (length,) = struct.unpack_from("<I", raw, offset)
                if offset + 4 + length > len(raw):
                    raise InputMismatch(
                        f"input {self.name!r}: BYTES element {len(blobs)} says {length} bytes but "
                        f"{len(raw) - offset - 4} are left"
                    )
                blobs.append(bytes(raw[offset + 4 : offset + 4 + length]))
                offset += 4 + length
            if len(blobs) != count:
                raise InputMismatch(
                    f"input {self.name!r} has shape {self.shape} but its binary data holds {len(blobs)} elements"
                )
            self._blobs = blobs
            return
        dtype = NUMPY_TYPES[self.datatype]
        if len(raw) != count * dtype.itemsize:
            raise InputMismatch(
                f"input {self.name!r} has shape {self.shape} and datatype {self.datatype}, which is "
                f"{count * dtype.itemsize} bytes, but binary_data_size is {len(raw)}"
            )
        self._array = np.frombuffer(raw, dtype=dtype).reshape(self.shape)

    @property
    def flat(self) -> list[Any]:
        """The data, row-major, whatever its nesting (binary data too, as Python values)."""
        if self._flat is None:
            if self._blobs is not None:
                try:
                    self._flat = [blob.decode("utf-8") for blob in self._blobs]
                except UnicodeDecodeError as exc:
                    raise InvalidInput(f"input {self.name!r} has a BYTES element that is not UTF-8: {exc}") from None
            elif self._array is not None:
                self._flat = self._array.ravel().tolist()
            else:
                raise InputMismatch(f"input {self.name!r}: its binary data was not in the request body")
        return self._flat

    def array(self, datatype: str) -> np.ndarray:
        """Its values in its shape as `datatype` (a number type): binary data as it came, JSON numbers converted;
        InputMismatch names an item that is not a number or does not fit."""
        dtype = NUMPY_TYPES[datatype]
        if self._array is not None:
            return self._array if self._array.dtype == dtype else self._array.astype(dtype)
        if self.datatype == "BYTES":
            raise InputMismatch(f"input {self.name!r} is BYTES; send numbers ({datatype})")
        flat = self.flat
        if not set(map(type, flat)) <= {int, float}:  # one pass in C; the loop only to name the value
            for index, value in enumerate(flat):
                if type(value) not in (int, float):
                    raise InputMismatch(f"input {self.name!r} item {index} is {value!r:.40}, not a number")
        try:
            values = np.array(flat, dtype=np.float64)
        except OverflowError:
            raise InputMismatch(f"input {self.name!r} holds an integer too large for a float") from None
        # Each value fits the datatype the request declares and the one the model takes (a cast would wrap an
        # integer or turn a float into inf without a word).
        for name in dict.fromkeys((self.datatype, datatype)):
            bad, what = misfits(values, NUMPY_TYPES[name])
            if bad.size:
                raise InputMismatch(
                    f"input {self.name!r} item {int(bad[0])} is {flat[int(bad[0])]!r:.40}, not {what} in the range "
                    f"of {name}"
                )
        return values.astype(dtype).reshape(self.shape)

    def images(self) -> list[bytes]:
        """The decoded image files; InvalidInput names the item that is not base64."""
        if self._blobs is not None:  # binary BYTES: the files themselves
            return list(self._blobs)
        content_type = self.parameters.get("content_type", "base64")
        if content_type != "base64":
            raise InputMismatch(
                f"input {self.name!r} has content_type {content_type!r}; images are sent as "
                "base64 image files (content_type 'base64')"
            )
        decoded = []
        for index, item in enumerate(self.flat):
            try:
                decoded.append(base64.b64decode(item, validate=True))
            except (binascii.Error, ValueError) as exc:
                raise InvalidInput(f"input {self.name!r} item {index} is not valid base64: {exc}") from None
        return decoded

    def strings(self) -> list[str]:
        """Plain UTF-8 strings (content_type 'str', the default), or base64 of UTF-8 (content_type 'base64')."""
        content_type = self.parameters.get("content_type", "str")
        if content_type == "str" or self._blobs is not None:
            return list(self.flat)
        if content_type != "base64":
            raise InputMismatch(
                f"input {self.name!r} has content_type {content_type!r}; send plain strings "
                "(content_type 'str') or base64 of UTF-8 ('base64')"
            )
        try:
            return [base64.b64decode(item, validate=True).decode("utf-8") for item in self.flat]
        except (binascii.Error, ValueError) as exc:
            raise InvalidInput(f"input {self.name!r} is not base64 of UTF-8 text: {exc}") from None


def misfits(values: np.ndarray, dtype: np.dtype[Any]) -> tuple[np.ndarray, str]:
    """The indexes of `values` (float64) that `dtype` cannot hold as they are, and what it holds."""
    if dtype.kind == "f":
        return np.flatnonzero(~(np.abs(values) <= float(np.finfo(dtype).max))), "a finite number"
    if dtype.kind in "iu":
        info = np.iinfo(dtype)  # max + 1 is a power of two: exact as a float, unlike max for 64 bits
        fits = (values >= info.min) & (values < float(info.max) + 1) & (values == np.trunc(values))
        return np.flatnonzero(~fits), "a whole number"
    return np.flatnonzero(~np.isin(values, (0, 1))), "0 or 1"


def flatten(data: list[Any]) -> list[Any]:
    """Nested lists to one row-major list, without recursion (no nesting depth can overflow the stack)."""
    if not any(issubclass(kind, list) for kind in set(map(type, data))):  # a pass in C over the items' types
        return data
    flat: list[Any] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            flat.append(item)
        else:
            stack.pop()
    return flat


class InferParameters(_Message):
    top_k: int = Field(DEFAULT_TOP_K, ge=1, description="labels per input, capped at the labels there are")
    binary_data_output: bool = Field(
        False,
        description="answer every output in binary after the JSON (the binary "
        "tensor data extension), unless an output says otherwise",
    )
    threshold: float | None = Field(
        None, ge=0, le=1, description="object detection: the least score kept (default 0.5)"
    )
    lease: str | None = Field(None, pattern=LEASE_PATTERN, description="renews this holder's lease on the model")


class RequestedOutput(_Message):
    name: str
    parameters: dict[str, Any] = Field(default_factory=dict)

    @property
    def binary(self) -> bool | None:
        """parameters.binary_data: True or False when it says, None when it leaves it to the request."""
        value = self.parameters.get("binary_data")
        return value if isinstance(value, bool) else None


class InferRequest(_Message):
    id: str | None = None
    inputs: list[InferInput] = Field(min_length=1, max_length=16)
    outputs: list[RequestedOutput] | None = Field(
        None, max_length=64, description="the outputs to answer (default: all)"
    )
    parameters: InferParameters = Field(default_factory=InferParameters)

    @field_validator("parameters", mode="before")
    @classmethod
    def _null_is_default(cls, value: Any) -> Any:
        return {} if value is None else value


def split_binary(body: bytes | memoryview, header_length: str) -> tuple[bytes, memoryview]:
    """A binary-extension body: its JSON header (the first `header_length` bytes) and the binary data after it (a
    view, not a copy)."""
    digits = header_length.strip()
    # ASCII digits only: str.isdigit() also takes '²' (a header is Latin-1), which int() refuses.
    if not (digits.isascii() and digits.isdigit()) or int(digits) > len(body):
        raise InvalidInput(
            f"Inference-Header-Content-Length is {header_length[:40]!r}; it must be the byte length "
            f"of the JSON at the start of the body (at most {len(body)})"
        )
    length = int(digits)
    view = memoryview(body)
    return bytes(view[:length]), view[length:]


def attach_binary(request: InferRequest, binary: bytes | memoryview) -> None:
    """Give each binary input its bytes, in the order of the inputs; InputMismatch when the sizes do not add up."""
    offset = 0
    for item in request.inputs:
        size = item.binary_size
        if size is None:
            continue
        if offset + size > len(binary):
            raise InputMismatch(
                f"input {item.name!r} says binary_data_size {size}, but only {len(binary) - offset} "
                "bytes of binary data are left in the body"
            )
        item.attach(binary[offset : offset + size])
        offset += size
    if offset != len(binary):
        raise InputMismatch(
            f"the body holds {len(binary)} bytes of binary data but the inputs' binary_data_size add up to {offset}"
        )


class InferOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: Datatype
    data: list[Any]  # row-major
    parameters: dict[str, Any] | None = None
    _array: np.ndarray | None = PrivateAttr(default=None)

    @classmethod
    def of_array(cls, name: str, array: np.ndarray) -> InferOutput:
        """An output of numbers held as an array: its list is made only if it is answered in JSON."""
        array = np.ascontiguousarray(array)
        datatype = DATATYPE_OF[(array.dtype.kind, array.dtype.itemsize)]
        output = cls(name=name, shape=list(array.shape), datatype=datatype, data=[])
        output._array = array.astype(NUMPY_TYPES[datatype], copy=False)  # little-endian, as the extension says
        return output

    @property
    def array(self) -> np.ndarray | None:
        return self._array

    def as_json(self) -> InferOutput:
        """With its values in `data` (made from its array, if it has one)."""
        if self._array is not None and not self.data:
            self.data = self._array.ravel().tolist()
        return self

    def binary(self) -> tuple[dict[str, Any], bytes]:
        """Its JSON description (no data; parameters.binary_data_size) and its bytes, for the binary extension."""
        if self._array is not None:
            raw = self._array.tobytes()
        elif self.datatype == "BYTES":
            items = [v if isinstance(v, bytes) else str(v).encode("utf-8") for v in self.data]
            raw = b"".join(struct.pack("<I", len(item)) + item for item in items)
        else:
            raw = np.asarray(self.data, dtype=NUMPY_TYPES[self.datatype]).tobytes()
        described = self.model_dump(exclude={"data"}, exclude_none=True)
        described["parameters"] = {**(self.parameters or {}), "binary_data_size": len(raw)}
        return described, raw


def binary_response(
    model_name: str, request_id: str | None, outputs: list[InferOutput], binary: list[bool]
) -> tuple[bytes, int]:
    """A binary-extension answer: the JSON header then each binary output's bytes; and the header's length."""
    described: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for output, in_binary in zip(outputs, binary, strict=True):
        if in_binary:
            described_output, raw = output.binary()
            described.append(described_output)
            chunks.append(raw)
        else:
            described.append(output.as_json().model_dump(exclude_none=True))
    answer: dict[str, Any] = {"model_name": model_name, "outputs": described}
    if request_id is not None:
        answer["id"] = request_id
    header = json.dumps(answer, separators=(",", ":")).encode()
    return header + b"".join(chunks), len(header)


class InferResponse(BaseModel):
    model_name: str
    id: str | None = None
    outputs: list[InferOutput]


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(BaseModel):
    name: str
    versions: list[str] = ["1"]
    platform: str
    task: str
    source: str
    labels: list[str]
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]
    # `labels` again (where a Triton model configuration's parameters would put them), and what a model card
    # next to the model says of its input (the STAC MLM `mlm:input`).
    parameters: dict[str, Any] | None = None


class ServerMetadata(BaseModel):
    name: str = "constellation-model-server"
    version: str = "0.1.0"
    extensions: list[str] = ["model_repository", "binary_tensor_data", "statistics"]


class LoadParameters(_Message):
    source: str | None = Field(
        None,
        description="a Hugging Face id, a folder under the models root, or (tabular "
        "tasks) an .onnx file under the models root; default: the name",
    )
    task: str = "image-classification"
    lease: str | None = Field(
        None,
        pattern=LEASE_PATTERN,
        description="hold the model for this holder (e.g. a run id) until it unloads with the "
        "same lease or the lease expires; none: hold it until a plain unload",
    )
    lease_ttl_s: float | None = Field(
        None,
        gt=0,
        description="seconds the lease lasts unless renewed (default: "
        "the server's CONSTELLATION_MODEL_SERVER_LEASE_TTL_S)",
    )


class LoadRequest(_Message):
    parameters: LoadParameters = Field(default_factory=LoadParameters)


class LeaseParameters(_Message):
    lease: str | None = Field(None, pattern=LEASE_PATTERN, description="the holder whose lease this is")
    lease_ttl_s: float | None = Field(None, gt=0, description="renew: the lease's new length in seconds")


class UnloadRequest(_Message):
    parameters: LeaseParameters = Field(default_factory=LeaseParameters)


class RenewRequest(_Message):
    parameters: LeaseParameters


class IndexRequest(_Message):
    ready: bool = Field(False, description="list only the models that are ready")


class IndexEntry(BaseModel):
    name: str
    state: str
    reason: str


class LoadResponse(BaseModel):
    name: str
    state: str
    source: str
    task: str
    leases: int = Field(description="holders whose lease keeps the model loaded")
    pinned: bool = Field(description="loaded without a lease: stays until a plain unload")
    weight_bytes: int = Field(description="its weights in memory (shared by every name loaded from this source)")


class CheckResponse(BaseModel):
    name: str
    source: str
    task: str
    loadable: bool = Field(description="whether a load with these parameters would find its model and may start")
    found_in: str | None = Field(
        None, description="where it would be read from: models root, Hugging Face cache or Hugging Face Hub"
    )
    error: str | None = Field(None, description="why it would not load")


class UnloadResponse(BaseModel):
    name: str
    state: str
    leases: int = Field(0, description="holders still holding it (it stays loaded while any does)")
    resident_bytes_before: int | None
    resident_bytes_after: int | None


class RenewResponse(BaseModel):
    name: str
    lease: str
    expires_in_s: float


class ReadyResponse(BaseModel):
    name: str
    ready: bool
