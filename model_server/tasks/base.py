"""What every task's model does for the registry: load, describe its tensors, infer, close."""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from model_server.exceptions import InputMismatch, InvalidInput, ModelError
from model_server.protocol import InferInput, InferOutput, InferParameters, TensorMetadata

T = TypeVar("T")


@dataclass(frozen=True)
class InferLimits:
    """What one request may cost: images per forward pass, and pixels per image and per request.

    The pixel caps are checked on the images' headers before any image is decoded. Images are then
    decoded and preprocessed by `prepare_threads` threads (0: one per available CPU); with `overlap`,
    those of the next batch while the model runs this one. The images decoded at once hold no more
    than max_image_pixels together (each is dropped once preprocessed), and the preprocessed inputs
    held are at most two batches' worth (the one running and the next).

    `overlap` None: only when torch's threads and the preparation threads together fit in the CPUs
    available. Otherwise they would compete for the same CPUs, and a forward pass whose threads wait
    for each other at every step loses more than the overlap gains (bench/RESULTS.md section 10).
    """

    batch_size: int = 8
    max_image_pixels: int = 40_000_000
    max_request_pixels: int = 256_000_000
    prepare_threads: int = 0
    overlap: bool | None = None

    def preparation_threads(self) -> int:
        from model_server.cpus import available_cpus

        return self.prepare_threads if self.prepare_threads > 0 else available_cpus()

    def overlaps(self) -> bool:
        """Whether the next batch is prepared while the model runs this one."""
        if self.overlap is not None:
            return self.overlap
        from model_server.cpus import available_cpus, torch_ready

        return torch_ready() + self.preparation_threads() <= available_cpus()


@dataclass(frozen=True)
class InputSpec:
    """One input a model takes; `datatypes` are the ones accepted (the first is the one to send)."""

    name: str
    datatypes: tuple[str, ...]
    shape: tuple[int, ...]  # -1: any size
    what: str  # "base64 image files", ...

    def metadata(self) -> TensorMetadata:
        return TensorMetadata(name=self.name, datatype=self.datatypes[0], shape=list(self.shape))

    def describe(self) -> str:
        dims = ", ".join("N" if i == 0 and d == -1 else ("?" if d == -1 else str(d)) for i, d in enumerate(self.shape))
        return f"{self.name!r} {self.datatypes[0]} [{dims}] ({self.what})"


class TaskModel(ABC):
    """A loaded model of one task. The registry holds one per loaded name and calls it under the name's lock."""

    task: ClassVar[str]
    platform: ClassVar[str]

    def __init__(self, labels: list[str]):
        self.labels = labels  # class names by id; [] when the model has none of its own

    @classmethod
    @abstractmethod
    def load(cls, location: str, device: str | None) -> TaskModel:
        """Load from a folder or Hugging Face id (transformers) or a file path (ONNX); LoadFailed says why not."""

    @property
    @abstractmethod
    def input_specs(self) -> list[InputSpec]: ...

    @property
    @abstractmethod
    def outputs(self) -> list[TensorMetadata]: ...

    @abstractmethod
    def infer(self, inputs: list[InferInput], parameters: InferParameters, limits: InferLimits) -> list[InferOutput]:
        """The outputs for the request's inputs; InputMismatch when they are not the ones this model takes."""

    @abstractmethod
    def close(self) -> None:
        """Drop every reference to the library's model, so that its memory can be given back."""

    @abstractmethod
    def memory_bytes(self) -> int:
        """The bytes its weights take in memory (what the cap on loaded models' memory counts)."""

    @property
    def inputs(self) -> list[TensorMetadata]:
        return [spec.metadata() for spec in self.input_specs]

    def metadata_parameters(self) -> dict[str, Any] | None:
        """The model's metadata `parameters`: its labels, where a Triton model configuration would carry them."""
        return {"labels": self.labels} if self.labels else None

    def describe_inputs(self) -> str:
        return " and ".join(spec.describe() for spec in self.input_specs)

    def take(self, inputs: list[InferInput]) -> dict[str, InferInput]:
        """The request's inputs by name, when they are exactly the ones this model takes, of the right datatypes."""
        wanted = {spec.name: spec for spec in self.input_specs}
        sent = [i.name for i in inputs]
        if len(set(sent)) != len(sent):
            raise InputMismatch(f"the request names an input twice ({', '.join(map(repr, sent))})")
        if set(sent) != set(wanted):
            missing, unexpected = sorted(set(wanted) - set(sent)), sorted(set(sent) - set(wanted))
            problems = ([f"missing {', '.join(map(repr, missing))}"] if missing else []) + (
                [f"unexpected {', '.join(map(repr, unexpected))}"] if unexpected else []
            )
            raise InputMismatch(f"the request sent {', '.join(map(repr, sent))}: {'; '.join(problems)}")
        for item in inputs:
            spec = wanted[item.name]
            if item.datatype not in spec.datatypes:
                raise InputMismatch(
                    f"input {item.name!r} has datatype {item.datatype!r}; expected "
                    f"{' or '.join(map(repr, spec.datatypes))}"
                )
            if len(spec.shape) == 1 and not (len(item.shape) == 1 or (len(item.shape) == 2 and item.shape[1] == 1)):
                raise InputMismatch(f"input {item.name!r} has shape {item.shape}; expected one dimension, [N]")
        return {i.name: i for i in inputs}


def library_call(what: str, call: Callable[[], T]) -> T:
    """Run the library on the inputs: its errors on inputs it cannot process are InvalidInput, not a crash."""
    try:
        return call()
    except ModelError:
        raise
    except Exception as exc:  # the libraries raise many types; their message is what the user needs
        raise InvalidInput(f"the model could not process {what}: {type(exc).__name__}: {exc}") from None


_pools: dict[int, ThreadPoolExecutor] = {}
_pools_guard = threading.Lock()


def preparation_pool(threads: int) -> ThreadPoolExecutor:
    """The process's threads that decode and preprocess inputs (one pool per size, made on first use)."""
    with _pools_guard:
        pool = _pools.get(threads)
        if pool is None:
            pool = _pools[threads] = ThreadPoolExecutor(threads, thread_name_prefix="prepare")
        return pool


def batches(count: int, size: int) -> Iterator[range]:
    for start in range(0, count, size):
        yield range(start, min(start + size, count))


def ranked_outputs(results: list[list[tuple[str, float]]], k: int) -> list[InferOutput]:
    """`label` BYTES [N, k] and `score` FP32 [N, k], best first."""
    shape = [len(results), k]
    return [
        InferOutput(name="label", shape=shape, datatype="BYTES", data=[label for row in results for label, _ in row]),
        InferOutput(name="score", shape=shape, datatype="FP32", data=[score for row in results for _, score in row]),
    ]


RANKED = [
    TensorMetadata(name="label", datatype="BYTES", shape=[-1, -1]),
    TensorMetadata(name="score", datatype="FP32", shape=[-1, -1]),
]


def ranked(answer: Any, k: int) -> list[tuple[str, float]]:
    """A pipeline's answer for one input (a dict, or a list of dicts best first) as k (label, score) pairs."""
    answer = [answer] if isinstance(answer, dict) else answer
    return [(str(a["label"]), float(a["score"])) for a in answer[:k]]
