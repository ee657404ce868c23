"""Open Inference Protocol (KServe V2 REST) messages, and Triton's repository-extension bodies.

A request's tensors are checked here only for what holds for any model: a known datatype, a
shape that matches the data (flat row-major, or nested), strings in BYTES tensors. Which inputs a
model takes is its task's business (model_server/tasks/).
"""

from __future__ import annotations

import base64
import binascii
import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from model_server.exceptions import InputMismatch, InvalidInput

DEFAULT_TOP_K = 5
# A lease holder: any visible ASCII (a run id, "host:pid", ...).
LEASE_PATTERN = r"^[\x21-\x7e]{1,200}$"
DATATYPES = ("BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32",
             "FP64", "BYTES")
Datatype = Literal["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32",
                   "FP64", "BYTES"]


class _Message(BaseModel):
    # The protocol lets clients add fields (e.g. `outputs`, extra parameters); we ignore them.
    model_config = ConfigDict(extra="ignore")


class InferInput(_Message):
    name: str
    shape: list[int]
    datatype: str
    data: list[Any]
    parameters: dict[str, Any] = Field(default_factory=dict)
    _flat: list[Any] = PrivateAttr(default_factory=list)

    @model_validator(mode="after")
    def _shape_fits_data(self) -> InferInput:
        if self.datatype not in DATATYPES:
            raise ValueError(f"input {self.name!r} has datatype {self.datatype!r}; the protocol's datatypes are "
                             f"{', '.join(DATATYPES)}")
        if any(dim < 0 for dim in self.shape):
            raise ValueError(f"input {self.name!r} has shape {self.shape}; dimensions cannot be negative")
        self._flat = flatten(self.data)
        if math.prod(self.shape) != len(self._flat):
            expected = f"expected shape [{len(self._flat)}]" if len(self.shape) <= 1 else \
                f"which is {math.prod(self.shape)} values"
            raise ValueError(f"input {self.name!r} has shape {self.shape} but {len(self._flat)} items; {expected}")
        if self.datatype == "BYTES":
            for index, item in enumerate(self._flat):
                if not isinstance(item, str):
                    raise ValueError(f"input {self.name!r} data item {index} is {type(item).__name__}, not a string")
        return self

    @property
    def flat(self) -> list[Any]:
        """The data, row-major, whatever its nesting."""
        return self._flat

    def images(self) -> list[bytes]:
        """The decoded image files; InvalidInput names the item that is not base64."""
        content_type = self.parameters.get("content_type", "base64")
        if content_type != "base64":
            raise InputMismatch(f"input {self.name!r} has content_type {content_type!r}; images are sent as "
                                "base64 image files (content_type 'base64')")
        decoded = []
        for index, item in enumerate(self._flat):
            try:
                decoded.append(base64.b64decode(item, validate=True))
            except (binascii.Error, ValueError) as exc:
                raise InvalidInput(f"input {self.name!r} item {index} is not valid base64: {exc}") from None
        return decoded

    def strings(self) -> list[str]:
        """Plain UTF-8 strings (content_type 'str', the default), or base64 of UTF-8 (content_type 'base64')."""
        content_type = self.parameters.get("content_type", "str")
        if content_type == "str":
            return list(self._flat)
        if content_type != "base64":
            raise InputMismatch(f"input {self.name!r} has content_type {content_type!r}; send plain strings "
                                "(content_type 'str') or base64 of UTF-8 ('base64')")
        try:
            return [base64.b64decode(item, validate=True).decode("utf-8") for item in self._flat]
        except (binascii.Error, ValueError) as exc:
            raise InvalidInput(f"input {self.name!r} is not base64 of UTF-8 text: {exc}") from None


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
    threshold: float | None = Field(None, ge=0, le=1, description="object detection: the least score kept "
                                                                  "(default 0.5)")
    lease: str | None = Field(None, pattern=LEASE_PATTERN, description="renews this holder's lease on the model")


class InferRequest(_Message):
    id: str | None = None
    inputs: list[InferInput] = Field(min_length=1, max_length=16)
    parameters: InferParameters = Field(default_factory=InferParameters)

    @field_validator("parameters", mode="before")
    @classmethod
    def _null_is_default(cls, value: Any) -> Any:
        return {} if value is None else value


class InferOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: Datatype
    data: list[Any]  # row-major
    parameters: dict[str, Any] | None = None


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


class ServerMetadata(BaseModel):
    name: str = "constellation-model-server"
    version: str = "0.1.0"
    extensions: list[str] = ["model_repository"]


class LoadParameters(_Message):
    source: str | None = Field(None, description="a Hugging Face id, a folder under the models root, or (tabular "
                                                 "tasks) an .onnx file under the models root; default: the name")
    task: str = "image-classification"
    lease: str | None = Field(None, pattern=LEASE_PATTERN,
                              description="hold the model for this holder (e.g. a run id) until it unloads with the "
                                          "same lease or the lease expires; none: hold it until a plain unload")
    lease_ttl_s: float | None = Field(None, gt=0, description="seconds the lease lasts unless renewed (default: "
                                                              "the server's CONSTELLATION_MODEL_SERVER_LEASE_TTL_S)")


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
