"""The tasks the model server serves, one class per task behind TaskModel's interface (tasks/base.py).

transformers pipelines: image-classification, zero-shot-image-classification, object-detection,
image-segmentation (semantic) and text-classification; ONNX Runtime: tabular-classification and
tabular-regression. DESIGN.md §4 and the protocol table in the README say what each takes and answers.
"""

from __future__ import annotations

from model_server.tasks.base import InputSpec, TaskModel
from model_server.tasks.tabular import OnnxModel, TabularClassifier, TabularRegressor
from model_server.tasks.text import TextClassifier
from model_server.tasks.vision import ImageClassifier, ObjectDetector, SemanticSegmenter, ZeroShotImageClassifier

TASKS: dict[str, type[TaskModel]] = {
    model.task: model
    for model in (ImageClassifier, ZeroShotImageClassifier, ObjectDetector, SemanticSegmenter, TextClassifier,
                  TabularClassifier, TabularRegressor)
}
SUPPORTED_TASKS = tuple(TASKS)


def reads_a_file(task: str) -> bool:
    """Whether the task's source is a model file under the models root (ONNX) rather than a folder or an id."""
    return issubclass(TASKS[task], OnnxModel)


__all__ = ["SUPPORTED_TASKS", "TASKS", "InputSpec", "TaskModel", "reads_a_file"]
