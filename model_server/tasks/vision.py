"""Image tasks: classification, zero-shot classification, object detection, semantic segmentation.

Each decodes the request's images one batch at a time (a request's compressed images may be far
smaller than their pixels) and runs the pipeline on that batch.
"""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

from model_server.exceptions import InputMismatch, LoadFailed
from model_server.protocol import InferInput, InferOutput, InferParameters, TensorMetadata
from model_server.tasks.base import RANKED, InputSpec, batches, library_call, ranked, ranked_outputs
from model_server.tasks.hf import TransformersModel, open_image

IMAGE = InputSpec("image", ("BYTES",), (-1,), "base64 image files")
DEFAULT_THRESHOLD = 0.5


class ImageModel(TransformersModel):
    def decoded(self, images: list[bytes], batch_size: int):
        """(batch of decoded images, their indexes) per batch."""
        for indexes in batches(len(images), batch_size):
            yield [open_image(images[i], i) for i in indexes], indexes


class ImageClassifier(ImageModel):
    task = "image-classification"
    input_specs = [IMAGE]
    outputs = RANKED

    def infer(self, inputs: list[InferInput], parameters: InferParameters, batch_size: int) -> list[InferOutput]:
        k, results = self.classify(self.take(inputs)["image"].images(), parameters.top_k, batch_size)
        return ranked_outputs(results, k)

    def classify(self, images: list[bytes], top_k: int, batch_size: int) -> tuple[int, list[list[tuple[str, float]]]]:
        """Top-k (label, score) per image, best first; k is top_k capped at the number of labels."""
        k = min(top_k, len(self.labels))
        results: list[list[tuple[str, float]]] = []
        for batch, indexes in self.decoded(images, batch_size):
            answers = library_call(f"images {indexes.start}-{indexes.stop - 1}",
                                   lambda batch=batch: self.pipeline(batch, top_k=k, batch_size=batch_size))
            results.extend(ranked(answer, k) for answer in answers)
        return k, results


class ZeroShotImageClassifier(ImageModel):
    task = "zero-shot-image-classification"
    own_labels = False
    input_specs = [IMAGE, InputSpec("candidate_labels", ("BYTES",), (-1,), "the labels to choose from, "
                                                                             "plain strings")]
    outputs = RANKED

    def infer(self, inputs: list[InferInput], parameters: InferParameters, batch_size: int) -> list[InferOutput]:
        given = self.take(inputs)
        candidates = given["candidate_labels"].strings()
        if not candidates:
            raise InputMismatch("input 'candidate_labels' is empty; send at least one label")
        images = given["image"].images()
        k = min(parameters.top_k, len(candidates))
        results: list[list[tuple[str, float]]] = []
        for batch, indexes in self.decoded(images, batch_size):
            answers = library_call(
                f"images {indexes.start}-{indexes.stop - 1}",
                lambda batch=batch: self.pipeline(batch, candidate_labels=candidates, batch_size=batch_size))
            results.extend(ranked(answer, k) for answer in answers)
        return ranked_outputs(results, k)


class ObjectDetector(ImageModel):
    task = "object-detection"
    input_specs = [IMAGE]
    outputs = [TensorMetadata(name="image_index", datatype="INT32", shape=[-1]),
               TensorMetadata(name="label", datatype="BYTES", shape=[-1]),
               TensorMetadata(name="score", datatype="FP32", shape=[-1]),
               TensorMetadata(name="box", datatype="FP32", shape=[-1, 4])]

    def infer(self, inputs: list[InferInput], parameters: InferParameters, batch_size: int) -> list[InferOutput]:
        images = self.take(inputs)["image"].images()
        threshold = DEFAULT_THRESHOLD if parameters.threshold is None else parameters.threshold
        index, labels, scores, boxes = [], [], [], []
        for batch, indexes in self.decoded(images, batch_size):
            answers = library_call(
                f"images {indexes.start}-{indexes.stop - 1}",
                lambda batch=batch: self.pipeline(batch, threshold=threshold, batch_size=batch_size))
            for image_index, found in zip(indexes, answers, strict=True):
                for detection in found:
                    box = detection["box"]
                    index.append(image_index)
                    labels.append(str(detection["label"]))
                    scores.append(float(detection["score"]))
                    boxes.extend(float(box[side]) for side in ("xmin", "ymin", "xmax", "ymax"))
        return [InferOutput(name="image_index", shape=[len(index)], datatype="INT32", data=index),
                InferOutput(name="label", shape=[len(index)], datatype="BYTES", data=labels),
                InferOutput(name="score", shape=[len(index)], datatype="FP32", data=scores),
                InferOutput(name="box", shape=[len(index), 4], datatype="FP32", data=boxes)]


class SemanticSegmenter(ImageModel):
    """One PNG per image, at the image's size, each pixel its class id: mode "L", or "I;16" past 256 classes."""

    task = "image-segmentation"
    input_specs = [IMAGE]
    outputs = [TensorMetadata(name="mask", datatype="BYTES", shape=[-1])]

    def __init__(self, pipeline):
        super().__init__(pipeline)
        if not hasattr(pipeline.image_processor, "post_process_semantic_segmentation"):
            raise LoadFailed(f"{type(pipeline.model).__name__} does not do semantic segmentation (its image "
                             "processor has no post_process_semantic_segmentation); only semantic masks are served")
        # The pipeline names each mask by label; back to ids, the lowest id where two share a name.
        self.ids = {label: i for i, label in reversed(list(enumerate(self.labels)))}
        self.dtype = np.uint8 if len(self.labels) <= 256 else np.uint16

    def infer(self, inputs: list[InferInput], parameters: InferParameters, batch_size: int) -> list[InferOutput]:
        images = self.take(inputs)["image"].images()
        masks: list[str] = []
        for batch, indexes in self.decoded(images, batch_size):
            answers = library_call(f"images {indexes.start}-{indexes.stop - 1}",
                                   lambda batch=batch: self.pipeline(batch, subtask="semantic", batch_size=batch_size))
            masks.extend(self.class_mask(image, found) for image, found in zip(batch, answers, strict=True))
        return [InferOutput(name="mask", shape=[len(masks)], datatype="BYTES", data=masks,
                            parameters={"content_type": "base64"})]

    def class_mask(self, image: Image.Image, segments: list[dict]) -> str:
        ids = np.zeros((image.height, image.width), dtype=self.dtype)
        for segment in segments:
            ids[np.asarray(segment["mask"]) > 0] = self.ids[segment["label"]]
        out = io.BytesIO()
        Image.fromarray(ids).save(out, format="PNG")
        return base64.b64encode(out.getvalue()).decode("ascii")
