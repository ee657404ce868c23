"""Open Inference Protocol (KServe V2 REST) messages, and Triton's repository-extension bodies.

Only what image classification needs: one BYTES input `image` of base64 image files, two
outputs `label` (BYTES) and `score` (FP32) of shape [N, k].
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from model_server.registry import InvalidInput

INPUT_NAME = "image"
DEFAULT_TOP_K = 5


class _Message(BaseModel):
    # The protocol lets clients add fields (e.g. `outputs`, extra parameters); we ignore them.
    model_config = ConfigDict(extra="ignore")


class InferInput(_Message):
    name: str
    shape: list[int]
    datatype: str
    data: list[str]
    parameters: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_image_per_item(self) -> InferInput:
        if self.name != INPUT_NAME:
            raise ValueError(f"input {self.name!r} is not expected; send one input named {INPUT_NAME!r}")
        if self.datatype != "BYTES":
            raise ValueError(f"input {self.name!r} has datatype {self.datatype!r}; expected 'BYTES'")
        if self.shape != [len(self.data)]:
            raise ValueError(f"input {self.name!r} has shape {self.shape} but {len(self.data)} items; "
                             f"expected shape [{len(self.data)}]")
        content_type = self.parameters.get("content_type", "base64")
        if content_type != "base64":
            raise ValueError(f"input {self.name!r} has content_type {content_type!r}; only 'base64' is supported")
        return self

    def images(self) -> list[bytes]:
        """The decoded image files; InvalidInput names the item that is not base64."""
        decoded = []
        for index, item in enumerate(self.data):
            try:
                decoded.append(base64.b64decode(item, validate=True))
            except (binascii.Error, ValueError) as exc:
                raise InvalidInput(f"input {self.name!r} item {index} is not valid base64: {exc}") from None
        return decoded


class InferParameters(_Message):
    top_k: int = Field(DEFAULT_TOP_K, ge=1, description="labels per image, capped at the model's label count")


class InferRequest(_Message):
    id: str | None = None
    inputs: list[InferInput] = Field(min_length=1, max_length=1)
    parameters: InferParameters = Field(default_factory=InferParameters)

    @field_validator("parameters", mode="before")
    @classmethod
    def _null_is_default(cls, value: Any) -> Any:
        return {} if value is None else value


class InferOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: Literal["BYTES", "FP32"]
    data: list[Any]  # labels (BYTES) or scores (FP32), row-major


class InferResponse(BaseModel):
    model_name: str
    id: str | None = None
    outputs: list[InferOutput]

    @classmethod
    def of(cls, name: str, request_id: str | None, k: int, results: list[list[tuple[str, float]]]) -> InferResponse:
        shape = [len(results), k]
        return cls(
            model_name=name,
            id=request_id,
            outputs=[
                InferOutput(name="label", shape=shape, datatype="BYTES", data=[lb for row in results for lb, _ in row]),
                InferOutput(name="score", shape=shape, datatype="FP32", data=[sc for row in results for _, sc in row]),
            ],
        )


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(BaseModel):
    name: str
    versions: list[str] = ["1"]
    platform: str = "transformers"
    task: str
    source: str
    labels: list[str]
    inputs: list[TensorMetadata] = [TensorMetadata(name=INPUT_NAME, datatype="BYTES", shape=[-1])]
    outputs: list[TensorMetadata] = [
        TensorMetadata(name="label", datatype="BYTES", shape=[-1, -1]),
        TensorMetadata(name="score", datatype="FP32", shape=[-1, -1]),
    ]


class ServerMetadata(BaseModel):
    name: str = "constellation-model-server"
    version: str = "0.1.0"
    extensions: list[str] = ["model_repository"]


class LoadParameters(_Message):
    source: str | None = Field(None, description="a Hugging Face id, or a folder under the models root; "
                                                 "default: the model's name")
    task: str = "image-classification"


class LoadRequest(_Message):
    parameters: LoadParameters = Field(default_factory=LoadParameters)


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


class UnloadResponse(BaseModel):
    name: str
    state: str
    resident_bytes_before: int | None
    resident_bytes_after: int | None


class ReadyResponse(BaseModel):
    name: str
    ready: bool
