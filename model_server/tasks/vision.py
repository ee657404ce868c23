"""Image tasks: classification, zero-shot classification, object detection, semantic segmentation.

Each runs the request's images through its transformers pipeline in batches: the preparation
threads decode and preprocess a batch's images in parallel, the next batch's while the model runs
this one when they have CPUs of their own (ImageModel.answers),
within a budget of decoded pixels (a request's compressed images may be far smaller than their
pixels); the forward pass and the answers are the pipeline's own (TransformersModel.run_batch).
"""

from __future__ import annotations

import base64
import io
import threading
from collections.abc import Iterator
from concurrent.futures import Future, wait
from contextlib import contextmanager
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from model_server.exceptions import ImageTooLarge, InputMismatch, InvalidInput, LoadFailed
from model_server.protocol import InferInput, InferOutput, InferParameters, TensorMetadata
from model_server.tasks.base import (
    RANKED,
    InferLimits,
    InputSpec,
    library_call,
    preparation_pool,
    ranked,
    ranked_outputs,
)
from model_server.tasks.hf import TransformersModel, open_image

IMAGE = InputSpec("image", ("BYTES",), (-1,), "base64 image files")
DEFAULT_THRESHOLD = 0.5


def image_sizes(images: list[bytes], limits: InferLimits) -> list[tuple[int, int]]:
    """Each image's (width, height), from its header alone (nothing is decoded); ImageTooLarge past the caps."""
    sizes = []
    for index, data in enumerate(images):
        try:
            with Image.open(io.BytesIO(data)) as image:  # reads the header only
                width, height = image.size
        except UnidentifiedImageError:
            raise InvalidInput(f"input 'image' item {index} is not an image in a format Pillow reads") from None
        except Image.DecompressionBombError as exc:  # Pillow's own cap, at twice its default: far past ours
            raise ImageTooLarge(
                f"input 'image' item {index} has too many pixels ({exc}); the limit is "
                f"{limits.max_image_pixels:,} pixels per image "
                "(CONSTELLATION_MODEL_SERVER_MAX_IMAGE_PIXELS)"
            ) from None
        except (OSError, ValueError) as exc:
            raise InvalidInput(f"input 'image' item {index} is not a decodable image: {exc}") from None
        if width * height > limits.max_image_pixels:
            raise ImageTooLarge(
                f"input 'image' item {index} is {width}x{height} = {width * height:,} pixels; the "
                f"limit is {limits.max_image_pixels:,} pixels per image "
                "(CONSTELLATION_MODEL_SERVER_MAX_IMAGE_PIXELS): resize or tile it first"
            )
        sizes.append((width, height))
    total = sum(width * height for width, height in sizes)
    if total > limits.max_request_pixels:
        raise ImageTooLarge(
            f"the request's {len(images)} images hold {total:,} pixels together; the limit is "
            f"{limits.max_request_pixels:,} pixels per request "
            "(CONSTELLATION_MODEL_SERVER_MAX_REQUEST_PIXELS): send fewer images per request"
        )
    return sizes


def pixel_batches(pixels: list[int], batch_size: int, budget: int) -> Iterator[range]:
    """Consecutive ranges of at most batch_size images and, unless one image alone is more, `budget` pixels."""
    start, held = 0, 0
    for index, count in enumerate(pixels):
        if index > start and (index - start == batch_size or held + count > budget):
            yield range(start, index)
            start, held = index, 0
        held += count
    if start < len(pixels):
        yield range(start, len(pixels))


class PixelBudget:
    """Pixels of the images decoded at once: a thread waits until its image fits (one larger than the whole
    budget, which the caps refuse before, would wait until nothing else is held)."""

    def __init__(self, pixels: int):
        self.total = self.free = pixels
        self.changed = threading.Condition()

    @contextmanager
    def held(self, pixels: int) -> Iterator[None]:
        need = min(pixels, self.total)
        with self.changed:
            self.changed.wait_for(lambda: self.free >= need)
            self.free -= need
        try:
            yield
        finally:
            with self.changed:
                self.free += need
                self.changed.notify_all()


class ImageModel(TransformersModel):
    def model_input(self, image: Image.Image) -> Any:
        """What the pipeline's preprocess takes for a decoded image."""
        return image

    def answers(
        self, images: list[bytes], limits: InferLimits, **call: Any
    ) -> Iterator[tuple[range, list[Any], list[tuple[int, int]]]]:
        """Per batch: its indexes, the pipeline's answer for each image (what `self.pipeline(batch, **call)`
        answers) and each image's (width, height), upright.

        Every header is checked against the caps first. Then the preparation threads decode and preprocess
        the images (with limits.overlaps(), those of the next batch while the model runs this one); each
        image is dropped once preprocessed, and the images being decoded hold no more than max_image_pixels
        together.
        """
        pixels = [width * height for width, height in image_sizes(images, limits)]
        chunks = list(pixel_batches(pixels, limits.batch_size, limits.max_image_pixels))
        preprocess, forward, postprocess = self.parameters(**call)
        budget = PixelBudget(limits.max_image_pixels)
        pool = preparation_pool(limits.preparation_threads())
        ahead = 2 if limits.overlaps() else 1  # batches submitted: this one, and the next while this one runs

        def prepare(index: int) -> tuple[Any, tuple[int, int]]:
            with budget.held(pixels[index]):
                image = open_image(images[index], index)
                item = self.model_input(image)
                return library_call(f"image {index}", lambda: self.preprocess(item, preprocess)), image.size

        if len(pixels) == 1:  # nothing to share out or to overlap: no hand-off to another thread and back
            item, size = prepare(0)
            answers = library_call("images 0-0", lambda: self.run_batch([item], forward, postprocess))
            yield range(1), answers, [size]
            return
        pending: dict[int, Future[Any]] = {}
        try:
            for number, chunk in enumerate(chunks):
                for following in chunks[number : number + ahead]:
                    pending.update((i, pool.submit(prepare, i)) for i in following if i not in pending)
                items, sizes = zip(*[pending.pop(i).result() for i in chunk], strict=True)

                def run(items: tuple[Any, ...] = items) -> list[Any]:
                    return self.run_batch(list(items), forward, postprocess)

                answers = library_call(f"images {chunk.start}-{chunk.stop - 1}", run)
                yield chunk, answers, list(sizes)
        finally:  # an error, or the caller stopped: nothing of this request goes on running
            for future in pending.values():
                future.cancel()
            wait(pending.values())


class ImageClassifier(ImageModel):
    task = "image-classification"
    input_specs = [IMAGE]
    outputs = RANKED

    def infer(self, inputs: list[InferInput], parameters: InferParameters, limits: InferLimits) -> list[InferOutput]:
        k, results = self.classify(self.take(inputs)["image"].images(), parameters.top_k, limits)
        return ranked_outputs(results, k)

    def model_input(self, image: Image.Image) -> Any:
        # Its preprocess takes an array as it is, where a PIL image would be turned (a copy) and converted to RGB
        # (another) again, then made an array by the image processor all the same.
        return np.asarray(image)

    def classify(
        self, images: list[bytes], top_k: int, limits: InferLimits
    ) -> tuple[int, list[list[tuple[str, float]]]]:
        """Top-k (label, score) per image, best first; k is top_k capped at the number of labels."""
        k = min(top_k, len(self.labels))
        results: list[list[tuple[str, float]]] = []
        for _, answers, _ in self.answers(images, limits, top_k=k):
            results.extend(ranked(answer, k) for answer in answers)
        return k, results


class ZeroShotImageClassifier(ImageModel):
    task = "zero-shot-image-classification"
    own_labels = False
    input_specs = [IMAGE, InputSpec("candidate_labels", ("BYTES",), (-1,), "the labels to choose from, plain strings")]
    outputs = RANKED

    def infer(self, inputs: list[InferInput], parameters: InferParameters, limits: InferLimits) -> list[InferOutput]:
        given = self.take(inputs)
        candidates = given["candidate_labels"].strings()
        if not candidates:
            raise InputMismatch("input 'candidate_labels' is empty; send at least one label")
        images = given["image"].images()
        k = min(parameters.top_k, len(candidates))
        results: list[list[tuple[str, float]]] = []
        for _, answers, _ in self.answers(images, limits, candidate_labels=candidates):
            results.extend(ranked(answer, k) for answer in answers)
        return ranked_outputs(results, k)


class ObjectDetector(ImageModel):
    task = "object-detection"
    input_specs = [IMAGE]
    outputs = [
        TensorMetadata(name="image_index", datatype="INT32", shape=[-1]),
        TensorMetadata(name="label", datatype="BYTES", shape=[-1]),
        TensorMetadata(name="score", datatype="FP32", shape=[-1]),
        TensorMetadata(name="box", datatype="FP32", shape=[-1, 4]),
    ]

    def infer(self, inputs: list[InferInput], parameters: InferParameters, limits: InferLimits) -> list[InferOutput]:
        images = self.take(inputs)["image"].images()
        threshold = DEFAULT_THRESHOLD if parameters.threshold is None else parameters.threshold
        index: list[int] = []
        labels: list[str] = []
        scores: list[float] = []
        boxes: list[float] = []
        for indexes, answers, _ in self.answers(images, limits, threshold=threshold):
            for image_index, found in zip(indexes, answers, strict=True):
                for detection in found:
                    box = detection["box"]
                    index.append(image_index)
                    labels.append(str(detection["label"]))
                    scores.append(float(detection["score"]))
                    boxes.extend(float(box[side]) for side in ("xmin", "ymin", "xmax", "ymax"))
        return [
            InferOutput(name="image_index", shape=[len(index)], datatype="INT32", data=index),
            InferOutput(name="label", shape=[len(index)], datatype="BYTES", data=labels),
            InferOutput(name="score", shape=[len(index)], datatype="FP32", data=scores),
            InferOutput(name="box", shape=[len(index), 4], datatype="FP32", data=boxes),
        ]


class SemanticSegmenter(ImageModel):
    """One PNG per image, at the image's size, each pixel its class id: mode "L", or "I;16" past 256 classes."""

    task = "image-segmentation"
    input_specs = [IMAGE]
    outputs = [TensorMetadata(name="mask", datatype="BYTES", shape=[-1])]

    def __init__(self, pipeline):
        super().__init__(pipeline)
        if not hasattr(pipeline.image_processor, "post_process_semantic_segmentation"):
            raise LoadFailed(
                f"{type(pipeline.model).__name__} does not do semantic segmentation (its image "
                "processor has no post_process_semantic_segmentation); only semantic masks are served"
            )
        # The pipeline names each mask by label; back to ids, the lowest id where two share a name.
        self.ids = {label: i for i, label in reversed(list(enumerate(self.labels)))}
        self.dtype = np.uint8 if len(self.labels) <= 256 else np.uint16

    def infer(self, inputs: list[InferInput], parameters: InferParameters, limits: InferLimits) -> list[InferOutput]:
        images = self.take(inputs)["image"].images()
        masks: list[str] = []
        for _, answers, sizes in self.answers(images, limits, subtask="semantic"):
            masks.extend(self.class_mask(size, found) for size, found in zip(sizes, answers, strict=True))
        return [
            InferOutput(
                name="mask", shape=[len(masks)], datatype="BYTES", data=masks, parameters={"content_type": "base64"}
            )
        ]

    def class_mask(self, size: tuple[int, int], segments: list[dict]) -> str:
        width, height = size
        ids = np.zeros((height, width), dtype=self.dtype)
        for segment in segments:
            ids[np.asarray(segment["mask"]) > 0] = self.ids[segment["label"]]
        out = io.BytesIO()
        Image.fromarray(ids).save(out, format="PNG")
        return base64.b64encode(out.getvalue()).decode("ascii")
