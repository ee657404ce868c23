"""Sending a dataset through a model, one batch in memory at a time, for every task.

Each task turns a batch of inputs into one prediction item per input (contract: the `name`
of the input, then the task's own fields); `run_batches` times every request, so that the
comparison can report throughput and latency percentiles.

A tabular model's rows are the exception: the table's feature columns are read at once into one
float64 array (8 bytes a value, less than the predictions kept for the same rows), sent in binary
thousands of rows per request, and the answers' arrays made into items without a Python call per
value.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from PIL import Image

from orchestrator.datasets import FileRef, Table
from orchestrator.engine import OperationError
from orchestrator.models import tasks, tensors
from orchestrator.models.client import ModelServer, TabularAnswer
from orchestrator.models.tensors import TensorModel
from orchestrator.transforms.tables import features_of, keyed_rows, require_columns

IMAGE_TASKS = tasks.names(reads=tasks.Reads.IMAGES)
TABLE_TASKS = tasks.names(reads=tasks.Reads.TABLE)
TASKS = IMAGE_TASKS + TABLE_TASKS


@dataclass
class ImageOptions:
    top_k: int = 3
    candidate_labels: list[str] | None = None
    threshold: float = 0.5
    mask_dir: Path | None = None
    max_samples: int | None = None  # a raster tile's width × height × bands, checked from its header


#: Inputs per request when model_inference is given no batch_size. Each image or text costs the model a forward
#: pass, so a request of 16 costs far more than its HTTP; a tabular model runs 16 rows in microseconds, and
#: thousands of rows per request keep the request's own cost (milliseconds) small beside the model's
#: (bench/RESULTS.md, "Tabular inference in binary").
BATCH_SIZE = 16
TABULAR_BATCH_SIZE = 4096
MAX_IMAGE_BATCH = 1024  # images per request at most: each request holds its images' files in memory
TABULAR_TASKS = ("tabular-classification", "tabular-regression")


@dataclass
class TableOptions:
    top_k: int = 3
    features: list[str] | None = None
    key: str | None = None
    text: str | None = None
    batch_size: int | None = None  # None: TABULAR_BATCH_SIZE for tabular models, BATCH_SIZE for text


@dataclass
class FeatureRows:
    """A table's rows as a tabular model takes them: each row's name (its key, or its number) and its feature
    values, float64 [rows, features] in the model's order."""

    names: list[str]
    values: Any  # np.ndarray
    columns: list[str]


@dataclass
class Timing:
    batch_seconds: list[float] = field(default_factory=list)
    batch_sizes: list[int] = field(default_factory=list)

    def stats(self, inputs: int, unit: str) -> dict[str, Any]:
        return {
            "inputs": inputs,
            unit: inputs,
            "seconds": sum(self.batch_seconds),
            "batches": len(self.batch_seconds),
            "batch_seconds": self.batch_seconds,
            "batch_sizes": self.batch_sizes,
        }


def _timed(timing: Timing, size: int, call: Callable[[], Any]) -> Any:
    start = time.perf_counter()
    answer = call()
    timing.batch_seconds.append(time.perf_counter() - start)
    timing.batch_sizes.append(size)
    return answer


def predict_images(
    server: ModelServer,
    model_id: str,
    task: str,
    batches: Iterable[list[FileRef]],
    options: ImageOptions,
    check_cancelled: Callable[[], None],
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One prediction per image, keyed by its name, and the timing of every request."""
    items: list[dict[str, Any]] = []
    seen: set[str] = set()
    timing = Timing()
    for batch in batches:
        check_cancelled()
        for ref in batch:
            if ref.name in seen:
                raise OperationError(f"two inputs are named {ref.name!r}; predictions are keyed by name")
            seen.add(ref.name)
        images = [ref.path.read_bytes() for ref in batch]
        items += _image_batch(server, model_id, task, batch, images, options, timing)
    if not items:
        raise OperationError("there is nothing to run the model on: the data holds no files")
    return items, timing.stats(len(items), "images")


def _image_batch(
    server: ModelServer,
    model_id: str,
    task: str,
    batch: list[FileRef],
    images: list[bytes],
    options: ImageOptions,
    timing: Timing,
) -> list[dict[str, Any]]:
    size = len(batch)
    if task in ("image-classification", "zero-shot-image-classification"):
        labels = options.candidate_labels if task == "zero-shot-image-classification" else None
        ranked = _timed(timing, size, lambda: server.classify(model_id, images, options.top_k, labels))
        return [_ranked(ref.name, r) for ref, r in zip(batch, ranked, strict=True)]
    if task == "object-detection":
        found = _timed(timing, size, lambda: server.detect(model_id, images, options.threshold))
        items = []
        for ref, detections in zip(batch, found, strict=True):
            width, height = _image_size(ref)
            items.append({"name": ref.name, "width": width, "height": height, "detections": detections})
        return items
    if task == "image-segmentation":
        masks = _timed(timing, size, lambda: server.segment(model_id, images))
        assert options.mask_dir is not None
        items = []
        for index, (ref, png) in enumerate(zip(batch, masks, strict=True)):
            path = options.mask_dir / f"{len(timing.batch_sizes):06d}-{index:04d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(png)
            items.append({"name": ref.name, "mask": str(path)})
        return items
    raise OperationError(f"model {model_id!r} serves {task!r}, which does not take images")


def predict_tiles(
    server: ModelServer,
    model: TensorModel,
    batches: Iterable[list[FileRef]],
    options: ImageOptions,
    check_cancelled: Callable[[], None],
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One prediction per tile of a model that takes float tensors [N, C, H, W] (tensors.py): a class-id GeoTIFF
    per tile (segmentation) or top-k labels (classification), each keeping the tile's place.

    Three stages overlap: the next batch's tiles are read while this one is sent, and the last one's masks are
    written meanwhile (threads: rasterio, NumPy and the socket let go of the GIL). So two requests may be under
    way at once: the server reads one while its model runs on the other."""
    items: list[dict[str, Any]] = []
    seen: set[str] = set()
    timing = Timing()
    wanted = model.output_wanted()

    def read(batch: list[FileRef]) -> list[tensors.Tile]:
        for ref in batch:
            if ref.name in seen:
                raise OperationError(f"two inputs are named {ref.name!r}; predictions are keyed by name")
            seen.add(ref.name)
        return [tensors.read_tile(ref, model, options.max_samples) for ref in batch]

    def infer(tiles: list[tensors.Tile]) -> list[tuple[list[tensors.Tile], Any, float]]:
        # A model of any tile size takes each size as it is (one request per size in the batch); one of a fixed
        # size gets smaller tiles padded to it (the padding is not valid, and is cut off the masks).
        groups: dict[tuple[int, int], list[tensors.Tile]] = {}
        for tile in tiles:
            key = (0, 0) if model.height != -1 and model.width != -1 else tile.size
            groups.setdefault(key, []).append(tile)
        answers = []
        for group in groups.values():
            stacked = tensors.stack(group, model)
            started = time.perf_counter()
            answer = server.infer_tensor(model.model_id, stacked, [wanted])[wanted]
            if len(answer) != len(group):
                raise OperationError(f"{model.model_id}: sent {len(group)} tiles but the answer has {len(answer)}")
            answers.append((group, answer, time.perf_counter() - started))
        return answers

    def write(batch: list[FileRef], number: int, answers: list[tuple[list[tensors.Tile], Any, float]]) -> None:
        by_name: dict[str, dict[str, Any]] = {}
        for part, (group, answer, seconds) in enumerate(answers):
            timing.batch_seconds.append(seconds)
            timing.batch_sizes.append(len(group))
            by_name.update(_tile_items(group, answer, model, options, f"{number:06d}-{part:02d}"))
        items.extend(by_name[ref.name] for ref in batch)

    queue = enumerate(batches)
    with ThreadPoolExecutor(3, thread_name_prefix="tiles") as pool:  # a read and two requests
        current = next(queue, None)
        reading = pool.submit(read, current[1]) if current is not None else None
        sent: tuple[list[FileRef], int, Future[Any]] | None = None
        while current is not None and reading is not None:
            check_cancelled()
            tiles = reading.result()
            (number, batch), current = current, next(queue, None)
            reading = pool.submit(read, current[1]) if current is not None else None
            sending = pool.submit(infer, tiles)
            if sent is not None:  # the previous batch's answer, written while this one travels
                write(sent[0], sent[1], sent[2].result())
            sent = (batch, number, sending)
        if sent is not None:
            write(sent[0], sent[1], sent[2].result())
    if not items:
        raise OperationError("there is nothing to run the model on: the data holds no files")
    return items, timing.stats(len(items), "images")


def _tile_items(
    group: list[tensors.Tile], answer: Any, model: TensorModel, options: ImageOptions, request: str
) -> dict[str, dict[str, Any]]:
    if model.task == "image-segmentation":
        assert options.mask_dir is not None
        ids = tensors.class_ids(answer, model)
        classes = len(model.labels) or (int(answer.shape[1]) if answer.ndim == 4 else 0)
        found = {}
        for index, tile in enumerate(group):
            target = options.mask_dir / f"{request}-{index:04d}.tif"
            found[tile.ref.name] = {"name": tile.ref.name, **tensors.write_mask(tile, ids[index], target, classes)}
        return found
    if model.task == "image-classification":
        ranked = tensors.ranked(answer, model.labels, options.top_k)
        return {
            tile.ref.name: {**_ranked(tile.ref.name, r), **tile.place} for tile, r in zip(group, ranked, strict=True)
        }
    raise OperationError(
        f"model {model.model_id!r} serves {model.task!r}; a model of float tensors [N, C, H, W] "
        "serves image-classification or image-segmentation"
    )


def _image_size(ref: FileRef) -> tuple[int, int]:
    try:
        with Image.open(ref.path) as image:  # reads the header only
            return image.size
    except (OSError, ValueError) as exc:
        raise OperationError(f"{ref.name!r} is not an image: {exc}") from None


def _ranked(name: str, ranked: Sequence[tuple[str, float]]) -> dict[str, Any]:
    return {"name": name, "labels": [label for label, _ in ranked], "scores": [float(s) for _, s in ranked]}


def predict_table(
    server: ModelServer,
    model_id: str,
    task: str,
    table: Table,
    options: TableOptions,
    check_cancelled: Callable[[], None],
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One prediction per row, keyed by the key column (or the row number)."""
    where = f"model_inference with {model_id!r} ({task})"
    if options.key is not None:
        require_columns(table, [options.key], where)
    if task == "text-classification":
        if not options.text:
            raise OperationError(
                f"{where}: name the table's text column with `text` (columns: {', '.join(table.columns[:30])})"
            )
        require_columns(table, [options.text], where)
    elif task in TABULAR_TASKS:
        if not options.features:
            raise OperationError(
                f"{where}: list the feature columns in the model's order with `features` "
                f"(columns: {', '.join(table.columns[:30])})"
            )
        require_columns(table, options.features, where)
        return predict_features(
            server, model_id, task, read_features(table, options.features, options.key), options, check_cancelled
        )
    else:
        raise OperationError(
            f"model {model_id!r} serves {task!r}, which takes images, not a table; give it files (e.g. from an import)"
        )
    items: list[dict[str, Any]] = []
    timing = Timing()
    for chunk in _chunks(keyed_rows(table, options.key), options.batch_size or BATCH_SIZE):
        check_cancelled()
        items += _text_batch(server, model_id, chunk, options, timing)
    if not items:
        raise OperationError("there is nothing to run the model on: the table holds no rows")
    return items, timing.stats(len(items), "rows")


def _text_batch(
    server: ModelServer, model_id: str, chunk: list[tuple[str, dict[str, Any]]], options: TableOptions, timing: Timing
) -> list[dict[str, Any]]:
    names = [name for name, _ in chunk]
    texts = [_text_of(row, options.text or "", name) for name, row in chunk]
    ranked = _timed(timing, len(chunk), lambda: server.classify_texts(model_id, texts, options.top_k))
    return [_ranked(name, r) for name, r in zip(names, ranked, strict=True)]


def read_features(table: Table, features: list[str], key: str | None) -> FeatureRows:
    """The table's feature columns as one float64 array, and each row's name; OperationError names the row and
    column of a value that is not a number, and a key that is missing or repeated.

    The JSON Lines are read by pyarrow, the columns it was told are numbers (and the key) only, straight into
    arrays: no Python object per value. A table pyarrow cannot read that way (numbers written as text, a key of
    mixed types, a missing value...) is read row by row, as it always was, which also names what is wrong."""
    import numpy as np

    found = _arrow_features(table, features, key)
    if found is not None:
        return found
    names, values = [], []
    for name, row in keyed_rows(table, key):
        names.append(name)
        values.append(features_of(row, features, name))
    return FeatureRows(names, np.array(values, dtype=np.float64).reshape(len(names), len(features)), list(features))


def _arrow_features(table: Table, features: list[str], key: str | None) -> FeatureRows | None:
    """read_features by pyarrow's JSON reader; None when the table is not plainly numbers with a text or integer
    key (the row-by-row reading then says what is wrong, or takes what pyarrow would read otherwise)."""
    import json

    import numpy as np
    import pyarrow as pa
    from pyarrow import json as pa_json

    with table.path.open() as lines:
        first = lines.readline()
    try:
        sample = json.loads(first) if first.strip() else None
    except ValueError:
        return None
    if not isinstance(sample, dict):
        return None
    fields = {column: pa.float64() for column in features}
    if key is not None:
        value = sample.get(key)
        # Keys named as keyed_rows names them (str(value)): text as it is, integers as pyarrow writes them.
        kind = pa.string() if isinstance(value, str) else pa.int64() if type(value) is int else None
        if kind is None or key in fields:
            return None
        fields[key] = kind
    options = pa_json.ParseOptions(explicit_schema=pa.schema(list(fields.items())), unexpected_field_behavior="ignore")
    try:
        read = pa_json.read_json(table.path, parse_options=options)
    except (pa.ArrowException, OSError):  # a value of another type than told (ArrowInvalid), ...
        return None
    columns = [read.column(column) for column in features]
    keys = read.column(key) if key is not None else None
    if any(column.null_count for column in columns) or (keys is not None and keys.null_count):
        return None
    values = np.empty((read.num_rows, len(features)), dtype=np.float64)
    for index, column in enumerate(columns):
        values[:, index] = column.to_numpy()
    if keys is None:
        names = [str(number) for number in range(read.num_rows)]
    else:
        names = keys.cast(pa.string()).to_pylist()
        if "" in names or len(set(names)) != len(names):
            return None
    return FeatureRows(names, values, list(features))


def predict_features(
    server: ModelServer,
    model_id: str,
    task: str,
    rows: FeatureRows,
    options: TableOptions,
    check_cancelled: Callable[[], None],
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One prediction per row of a tabular model, `batch_size` rows per request (sent and answered in binary)."""
    if not rows.names:
        raise OperationError("there is nothing to run the model on: the table holds no rows")
    size = options.batch_size or TABULAR_BATCH_SIZE
    items: list[dict[str, Any]] = []
    timing = Timing()
    for start in range(0, len(rows.names), size):
        check_cancelled()
        names = rows.names[start : start + size]
        batch = rows.values[start : start + size]
        answer = _timed(timing, len(names), partial(server.predict_array, model_id, batch, task, names, rows.columns))
        items += _tabular_items(names, answer, options.top_k)
    return items, timing.stats(len(items), "rows")


def _tabular_items(names: list[str], answer: TabularAnswer, top_k: int) -> list[dict[str, Any]]:
    """Each row's prediction: its value (regression), or its labels and scores best first, the model's label first
    (its class, even where the scores tie or put another first), `top_k` of them."""
    with _collector_paused():
        return _tabular_items_of(names, answer, top_k)


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cycle collector off while thousands of small dicts and lists (no cycles among them) are made: it
    would otherwise run every 700 of them, and now and then over every object of the process, the items made so
    far included. Items of 100,000 rows took 109 ms with it, 45 ms without (10,000 rows: 3.2 and 2.8 ms;
    bench/RESULTS.md, "Tabular inference in binary")."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _tabular_items_of(names: list[str], answer: TabularAnswer, top_k: int) -> list[dict[str, Any]]:
    import numpy as np

    if answer.values is not None:
        return [{"name": name, "value": value} for name, value in zip(names, answer.values.tolist(), strict=True)]
    assert answer.labels is not None
    k = max(1, top_k)
    if answer.scores is None:
        return [
            {"name": name, "labels": [label], "scores": [1.0]} for name, label in zip(names, answer.labels, strict=True)
        ]
    # Best first, the first class on ties (as a stable sort of the scores would).
    order = np.argsort(-answer.scores, axis=1, kind="stable")[:, :k]
    best = np.asarray(answer.classes, dtype=object)[order]
    ranked = best.tolist()
    scores = np.take_along_axis(answer.scores, order, axis=1).tolist()
    items = [
        {"name": name, "labels": labels, "scores": values}
        for name, labels, values in zip(names, ranked, scores, strict=True)
    ]
    for index in np.flatnonzero(best[:, 0] != np.asarray(answer.labels, dtype=object)).tolist():
        # The model's label leads (a tie, or a label that is not its best score), then the others by score.
        label, labels, values = answer.labels[index], ranked[index], scores[index]
        by_label = dict(zip(labels, values, strict=True))
        labels = [label] + [other for other in labels if other != label]
        items[index]["labels"] = labels[:k]
        items[index]["scores"] = [by_label.get(other, 0.0) for other in labels[:k]]
    return items


def _text_of(row: dict[str, Any], column: str, name: str) -> str:
    value = row.get(column)
    if not isinstance(value, str) or not value.strip():
        raise OperationError(f"row {name!r}: text column {column!r} holds {value!r}, not text")
    return value


def _chunks(rows: Iterator[tuple[str, dict[str, Any]]], size: int) -> Iterator[list[tuple[str, dict[str, Any]]]]:
    chunk: list[tuple[str, dict[str, Any]]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


#: Classifiers with at most this many classes keep every class's score (`scores_all`): a comparison's
#: calibration, ROC and precision-recall curves need them, and the top-k alone cannot give them.
ALL_SCORES_MAX = 100
CLASSIFIERS = tasks.names(compared_as=tasks.ComparedAs.CLASSIFICATION)


def scores_wanted(task: str, top_k: int, classes: int) -> int:
    """How many labels to ask the server for: every class when there are few enough. When the model does not say
    how many it has, one more than ALL_SCORES_MAX: the server caps the count at the classes there are, so fewer
    back means every class came back."""
    if task not in CLASSIFIERS or classes > ALL_SCORES_MAX:
        return top_k
    return max(top_k, classes if classes else ALL_SCORES_MAX + 1)


def keep_top_k(items: list[dict[str, Any]], top_k: int, asked: int, classes: int = 0) -> None:
    """Cut each prediction to its top-k labels and scores, keeping every class's score as `scores_all` (in place)
    when the answer held every class: as many as the model has, or fewer than were asked for."""
    for item in items:
        labels, scores = item.get("labels"), item.get("scores")
        if not isinstance(labels, list) or not isinstance(scores, list) or len(labels) != len(scores):
            continue
        if len(labels) < asked or 0 < classes == len(labels):
            item["scores_all"] = dict(zip(labels, scores, strict=True))
        item["labels"], item["scores"] = labels[:top_k], scores[:top_k]
