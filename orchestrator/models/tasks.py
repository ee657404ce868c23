"""The model tasks, written once: each task's name, the kind of input it reads, and how its predictions are compared.

The name is the task's name on an Open Inference Protocol server (what deploy_model's `task` sends): another
server needs only the names. deploy_model and model_inference take these names (ops.Task), model_inference
sends images or table rows by `reads` (inference.py), and compare_models picks its comparison and the truth
it needs by `compared_as` (compare/inputs.py, compare/truth.py). Our model server maps each name to its class
(model_server/tasks, which ships without this package: tests/engine/test_contract.py checks it serves these names).

Adding a task: a row here, the request and answer of its kind in inference.py if it is a new one, and a
class on our server.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Reads(StrEnum):
    """What a model of the task is given."""

    IMAGES = "images"  # image files (or tensors of a multi-band raster, tasks/onnx_image.py on our server)
    TABLE = "table"  # a table's rows (text in a column, or feature columns)


class ComparedAs(StrEnum):
    """The kind of comparison its predictions get (and so the kind of truth they are compared with)."""

    CLASSIFICATION = "classification"
    REGRESSION = "regression"
    DETECTION = "detection"
    SEGMENTATION = "segmentation"


@dataclass(frozen=True)
class Task:
    name: str
    reads: Reads
    compared_as: ComparedAs


# In the order the catalog lists them (deploy_model's and model_inference's `task`).
TASKS = (
    Task("image-classification", Reads.IMAGES, ComparedAs.CLASSIFICATION),
    Task("zero-shot-image-classification", Reads.IMAGES, ComparedAs.CLASSIFICATION),
    Task("object-detection", Reads.IMAGES, ComparedAs.DETECTION),
    Task("image-segmentation", Reads.IMAGES, ComparedAs.SEGMENTATION),
    Task("text-classification", Reads.TABLE, ComparedAs.CLASSIFICATION),
    Task("tabular-classification", Reads.TABLE, ComparedAs.CLASSIFICATION),
    Task("tabular-regression", Reads.TABLE, ComparedAs.REGRESSION),
)
BY_NAME = {task.name: task for task in TASKS}
NAMES = tuple(BY_NAME)


def names(*, reads: Reads | None = None, compared_as: ComparedAs | None = None) -> tuple[str, ...]:
    """The names of the tasks that read `reads` and are compared as `compared_as` (either may be left out)."""
    return tuple(t.name for t in TASKS if reads in (None, t.reads) and compared_as in (None, t.compared_as))
