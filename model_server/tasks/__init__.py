"""The tasks the model server serves, one class per task behind TaskModel's interface (tasks/base.py).

transformers pipelines: image-classification, zero-shot-image-classification, object-detection,
image-segmentation (semantic) and text-classification; ONNX Runtime: tabular-classification and
tabular-regression, and image-classification and image-segmentation of an .onnx file (float tensors
[N, C, H, W] of any number of bands, tasks/onnx_image.py). docs/architecture.md#routes and the
README's table of tasks say what each takes and answers.
"""

from __future__ import annotations

from model_server.tasks.base import InputSpec, TaskModel
from model_server.tasks.onnx_image import OnnxImageClassifier, OnnxImageSegmenter
from model_server.tasks.tabular import OnnxModel, TabularClassifier, TabularRegressor
from model_server.tasks.text import TextClassifier
from model_server.tasks.vision import ImageClassifier, ObjectDetector, SemanticSegmenter, ZeroShotImageClassifier

TASKS: dict[str, type[TaskModel]] = {
    model.task: model
    for model in (
        ImageClassifier,
        ZeroShotImageClassifier,
        ObjectDetector,
        SemanticSegmenter,
        TextClassifier,
        TabularClassifier,
        TabularRegressor,
    )
}
SUPPORTED_TASKS = tuple(TASKS)
# Tasks whose source may also be an .onnx file, served by ONNX Runtime instead of a transformers pipeline.
ONNX_IMAGE_TASKS: dict[str, type[TaskModel]] = {
    model.task: model for model in (OnnxImageClassifier, OnnxImageSegmenter)
}


def is_onnx(source: str | None) -> bool:
    return source is not None and source.lower().endswith(".onnx")


def reads_a_file(task: str, source: str | None = None) -> bool:
    """Whether the task's source is a model file under the models root (ONNX) rather than a folder or an id:
    always for the tabular tasks, for image tasks when the source is an .onnx file."""
    return issubclass(TASKS[task], OnnxModel) or (task in ONNX_IMAGE_TASKS and is_onnx(source))


def model_class(task: str, location: str) -> type[TaskModel]:
    """The class that loads `location` for `task`."""
    return ONNX_IMAGE_TASKS[task] if task in ONNX_IMAGE_TASKS and is_onnx(location) else TASKS[task]


__all__ = ["ONNX_IMAGE_TASKS", "SUPPORTED_TASKS", "TASKS", "InputSpec", "TaskModel", "model_class", "reads_a_file"]
