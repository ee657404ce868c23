"""Sending a dataset through a model, one batch in memory at a time."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from orchestrator.data.datasets import FileRef
from orchestrator.data.model_server import ModelServer
from orchestrator.engine import OperationError


def classify_all(
    server: ModelServer,
    model_id: str,
    batches: Iterable[list[FileRef]],
    top_k: int,
    check_cancelled: Callable[[], None],
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One prediction per input, keyed by its name, and timing: total seconds and per batch."""
    items: list[dict[str, Any]] = []
    seen: set[str] = set()
    batch_seconds: list[float] = []
    for batch in batches:
        check_cancelled()
        for ref in batch:
            if ref.name in seen:
                raise OperationError(f"two inputs are named {ref.name!r}; predictions are keyed by name")
            seen.add(ref.name)
        images = [ref.path.read_bytes() for ref in batch]
        start = time.perf_counter()
        predicted = server.classify(model_id, images, top_k)
        batch_seconds.append(time.perf_counter() - start)
        items += [
            {"name": ref.name, "labels": [label for label, _ in ranked], "scores": [score for _, score in ranked]}
            for ref, ranked in zip(batch, predicted, strict=True)
        ]
    if not items:
        raise OperationError("there is nothing to run the model on: the data holds no files")
    stats = {"images": len(items), "seconds": sum(batch_seconds), "batches": len(batch_seconds),
             "batch_seconds": batch_seconds}
    return items, stats
