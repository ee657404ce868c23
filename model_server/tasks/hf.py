"""Models served through a Hugging Face `transformers` pipeline, and the check that a model fits its task.

transformers builds a pipeline from nearly any model and fails (or, worse, answers with a
freshly initialised head) only when it runs. So a load first reads the model's config and
refuses a model whose architectures are not the task's (a ViT classifier as object-detection, a
CLIPModel as image-classification), saying which task the model is for; then it checks the class
the pipeline actually built.
"""

from __future__ import annotations

import io
import logging
import threading
from contextlib import nullcontext
from functools import cache
from typing import Any, ClassVar

from PIL import Image, ImageOps, UnidentifiedImageError

from model_server.cpus import torch_ready
from model_server.exceptions import InvalidInput, LoadFailed
from model_server.tasks.base import TaskModel

log = logging.getLogger(__name__)

# The auto-model mappings (transformers.models.auto.modeling_auto) each task's pipeline loads from.
MAPPINGS = {
    "image-classification": ("MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES",),
    "zero-shot-image-classification": ("MODEL_FOR_ZERO_SHOT_IMAGE_CLASSIFICATION_MAPPING_NAMES",),
    "object-detection": ("MODEL_FOR_OBJECT_DETECTION_MAPPING_NAMES",),
    "image-segmentation": (
        "MODEL_FOR_IMAGE_SEGMENTATION_MAPPING_NAMES",
        "MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES",
        "MODEL_FOR_INSTANCE_SEGMENTATION_MAPPING_NAMES",
        "MODEL_FOR_UNIVERSAL_SEGMENTATION_MAPPING_NAMES",
    ),
    "text-classification": ("MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES",),
}


@cache
def model_classes(task: str) -> frozenset[str]:
    """The model class names transformers' pipeline for `task` takes."""
    from transformers.models.auto import modeling_auto

    names: set[str] = set()
    for mapping in MAPPINGS[task]:
        for value in getattr(modeling_auto, mapping, {}).values():
            names.update([value] if isinstance(value, str) else value)
    return frozenset(names)


def tasks_of(architectures: list[str]) -> list[str]:
    return [task for task in MAPPINGS if model_classes(task) & set(architectures)]


class TransformersModel(TaskModel):
    """A transformers pipeline for one of MAPPINGS' tasks."""

    platform = "transformers"
    own_labels: ClassVar[bool] = True  # False: the model's id2label means nothing (zero-shot)

    def __init__(self, pipeline: Any):
        config = pipeline.model.config
        super().__init__(labels_by_id(config.id2label) if self.own_labels else [])
        self.pipeline = pipeline
        # A fast tokenizer is not safe to call from two threads at once; an image processor is.
        self.preprocess_lock = threading.Lock() if getattr(pipeline, "tokenizer", None) is not None else nullcontext()

    def parameters(self, **call: Any) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        """The pipeline's preprocess, forward and postprocess parameters for a call with `call`, as its __call__
        splits them (the pipeline's own defaults, then the call's)."""
        pipe = self.pipeline
        preprocess, forward, postprocess = pipe._sanitize_parameters(**call)
        return (
            {**pipe._preprocess_params, **preprocess},
            {**pipe._forward_params, **forward},
            {**pipe._postprocess_params, **postprocess},
        )

    def preprocess(self, item: Any, parameters: dict[str, Any]) -> Any:
        """One input through the pipeline's preprocessing (any thread)."""
        with self.preprocess_lock:
            return self.pipeline.preprocess(item, **parameters)

    def run_batch(self, items: list[Any], forward: dict[str, Any], postprocess: dict[str, Any]) -> list[Any]:
        """Preprocessed inputs as one forward pass, and each one's answer: what the pipeline does with a batch of
        them (the same collation, forward and unbatching), under torch.inference_mode rather than no_grad."""
        import torch
        from transformers.pipelines.base import pad_collate_fn
        from transformers.pipelines.pt_utils import PipelineIterator

        pipe = self.pipeline
        with torch.inference_mode():
            if len(items) == 1:
                batch, size = items[0], None
            else:
                processor = pipe.feature_extractor if pipe.feature_extractor is not None else pipe.image_processor
                batch, size = pad_collate_fn(pipe.tokenizer, processor)(items), len(items)
            outputs = PipelineIterator([batch], pipe.forward, forward, loader_batch_size=size)
            return [pipe.postprocess(output, **postprocess) for output in outputs]

    @classmethod
    def load(cls, location: str, device: str | None) -> TaskModel:
        # transformers and torch are imported by the first model that needs them: a server of ONNX models
        # starts in a second and never holds them (tasks/onnx_image.py, tasks/tabular.py).
        torch_ready()
        from transformers import AutoConfig, pipeline
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # progress bars would flood the server's log with every load
        config = AutoConfig.from_pretrained(location)
        architectures = list(getattr(config, "architectures", None) or [])
        if architectures and not model_classes(cls.task) & set(architectures):
            fits = tasks_of(architectures)
            what = (
                f"a model for {' and '.join(fits)}, not {cls.task}"
                if fits
                else f"which the {cls.task} pipeline does not take"
            )
            raise LoadFailed(
                f"its config names {', '.join(architectures)}, {what}; {cls.task} takes models such as "
                f"{examples(cls.task)}"
            )
        # transformers' overloads of pipeline() each take one task name as a Literal and leave out the
        # implementation's `task: str`; cls.task is a str (one of those names), so no overload matches.
        loaded = pipeline(cls.task, model=location, **({"device": device} if device else {}))  # type: ignore[call-overload]
        built = type(loaded.model).__name__
        if built not in model_classes(cls.task):
            raise LoadFailed(
                f"transformers built a {built} from it, not a model for {cls.task}; {cls.task} takes "
                f"models such as {examples(cls.task)}"
            )
        return cls(loaded)

    def close(self) -> None:
        self.pipeline = None

    def memory_bytes(self) -> int:
        """Parameters and buffers of the pipeline's model, as loaded (dtype and all)."""
        model = getattr(self.pipeline, "model", None)
        if model is None:
            return 0
        tensors = [*model.parameters(), *model.buffers()]
        return sum(t.numel() * t.element_size() for t in tensors)


def examples(task: str, count: int = 4) -> str:
    names = sorted(model_classes(task))
    return ", ".join(names[:count]) + (f" ({len(names)} in all)" if len(names) > count else "")


def labels_by_id(id2label: dict[Any, str]) -> list[str]:
    """Class names indexed by id; a gap in the ids gets the id itself as its name."""
    by_id = {int(i): str(label) for i, label in id2label.items()}
    return [by_id.get(i, str(i)) for i in range(max(by_id, default=-1) + 1)]


def open_image(data: bytes, index: int) -> Image.Image:
    """Decode one image, upright (its EXIF orientation applied) and RGB, as the pipelines' load_image makes it,
    without the copies that takes when there is nothing to turn or convert; InvalidInput names its index."""
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
        ImageOps.exif_transpose(image, in_place=True)
        return image if image.mode == "RGB" else image.convert("RGB")
    except UnidentifiedImageError:
        raise InvalidInput(f"input 'image' item {index} is not an image in a format Pillow reads") from None
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise InvalidInput(f"input 'image' item {index} is not a decodable image: {exc}") from None
