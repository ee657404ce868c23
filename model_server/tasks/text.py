"""Text classification: top-k labels per text, through a transformers pipeline."""

from __future__ import annotations

from typing import Any

from model_server.protocol import InferInput, InferOutput, InferParameters
from model_server.tasks.base import RANKED, InferLimits, InputSpec, batches, library_call, ranked, ranked_outputs
from model_server.tasks.hf import TransformersModel


class TextClassifier(TransformersModel):
    task = "text-classification"
    input_specs = [InputSpec("text", ("BYTES",), (-1,), "plain UTF-8 strings")]
    outputs = RANKED

    def infer(self, inputs: list[InferInput], parameters: InferParameters, limits: InferLimits) -> list[InferOutput]:
        texts = self.take(inputs)["text"].strings()
        k = min(parameters.top_k, len(self.labels))
        # Longer texts than the model reads are cut to its length, as the pipeline's tokenizer does when asked.
        preprocess, forward, postprocess = self.parameters(top_k=k, truncation=True)
        results: list[list[tuple[str, float]]] = []
        for indexes in batches(len(texts), limits.batch_size):

            def run(indexes: range = indexes) -> list[Any]:
                return self.run_batch([self.preprocess(texts[i], preprocess) for i in indexes], forward, postprocess)

            answers = library_call(f"texts {indexes.start}-{indexes.stop - 1}", run)
            results.extend(ranked(answer, k) for answer in answers)
        return ranked_outputs(results, k)
