"""What a comparison reads: each model's predictions (`ModelRun`) and the ground truth (`Truth`).

Also the checks every comparison starts with: the models did the same kind of task over the
exact same inputs, each input once, and the truth covers every input. Failures raise
`OperationError` naming the model, a few of the inputs, and what was expected.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from orchestrator.engine import Failed, OperationError
from orchestrator.models import tasks

#: The kind of comparison each model task gets (the task table, orchestrator/models/tasks.py).
TASK_KINDS: dict[str, str] = {task.name: task.compared_as.value for task in tasks.TASKS}
#: The kind of truth each kind of comparison needs.
TRUTH_KINDS = {"classification": "classes", "regression": "values", "detection": "coco", "segmentation": "masks"}


@dataclass
class ModelRun:
    """One model's predictions over the inputs (the `Predictions` of model_inference).

    `items` holds one dict per input keyed by `"name"`: `labels`/`scores` (classification),
    `value` (regression), `width`/`height`/`detections` (detection) or `mask` (segmentation:
    the path of a PNG of class ids). `labels` are the model's class names by id.
    """

    model: str
    task: str
    items: list[dict[str, Any]]
    stats: dict[str, Any] = field(default_factory=dict)
    labels: list[str] = field(default_factory=list)


@dataclass
class Truth:
    """The ground truth the predictions are scored against.

    kind "classes": `values` maps each input name to its class (matched without regard to case);
    "values": each name to a number; "masks": each name to the path of a PNG of class ids;
    "coco": `coco` is a COCO JSON whose images match prediction names by `file_name` (exactly,
    or by its base name when that is unique). `source` says where the truth came from, for
    messages. For masks, `labels` are the class names by id of the truth masks (empty: the
    truth uses each model's own ids) and truth pixels equal to `ignore_index` are not scored.
    """

    kind: Literal["classes", "values", "coco", "masks"]
    values: dict[str, Any] = field(default_factory=dict)
    coco: Path | None = None
    source: str = ""
    labels: list[str] = field(default_factory=list)
    ignore_index: int | None = 255
    #: What the truth's maker already counted while reading the masks (geotruth.align: a segmentation.Scan), so
    #: the scoring does not read them again; None: the scoring reads them.
    counted: Any = field(default=None, repr=False, compare=False)


R = TypeVar("R")


def without_failed(results: Sequence[R | Failed]) -> tuple[list[R], list[dict[str, str]]]:
    """The models' results that came, and each model that failed to load or run (the engine hands compare_models
    a `Failed` in its place): `{"model", "path", "operation", "error"}`, as the report lists them."""
    ran = [r for r in results if not isinstance(r, Failed)]
    failed = [
        {
            "model": str(f.parameters.get("model") or f"{f.operation} at {f.path}"),
            "path": f.path,
            "operation": f.operation,
            "error": f.error,
        }
        for f in results
        if isinstance(f, Failed)
    ]
    return ran, failed


def compare_without(failed: Sequence[dict[str, str]], compare: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """`compare()`'s report of the models that ran, its verdict saying which failed; when a single model is left
    and its kind of comparison cannot score one model alone, an error naming them all."""
    if not failed:
        return compare()
    try:
        report = compare()
    except OperationError:
        raise
    except Exception as exc:  # one model left, which this kind of comparison cannot report alone
        raise OperationError(
            f"only one model ran, and it cannot be compared alone ({type(exc).__name__}: {exc}); "
            + _failed_sentence(failed)
        ) from exc
    report["verdict"] = f"{report.get('verdict', '')} {_failed_sentence(failed)}".strip()
    return report


def _failed_sentence(failed: Sequence[dict[str, str]]) -> str:
    models = ", ".join(repr(f["model"]) for f in failed)
    were = "was" if len(failed) == 1 else "were"
    return f"Not compared: {models} failed to load or run and {were} left out (failed_models says why)."


def labels_from_folders(names: Sequence[str]) -> dict[str, str] | None:
    """Ground truth from each input's folder (`Fire/img1.jpg` → `Fire`), if every input has one."""
    truth = {name: name.split("/", 1)[0] for name in names if "/" in name}
    return truth if len(truth) == len(names) and names else None


def few(names: Iterable[Any], limit: int = 5) -> str:
    """A few names for a message: `'a.jpg', 'b.jpg' and 3 more`."""
    items = list(names)
    shown = ", ".join(repr(str(n)) for n in items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def kind_of(runs: Sequence[ModelRun]) -> str:
    """The comparison kind shared by every run (classification, regression, detection, segmentation)."""
    if not runs:
        raise OperationError("nothing to compare: no model predictions were given")
    kinds: dict[str, list[str]] = {}
    for run in runs:
        if run.task not in TASK_KINDS:
            raise OperationError(
                f"model {run.model!r} did task {run.task!r}, which cannot be compared; "
                f"expected one of {', '.join(TASK_KINDS)}"
            )
        kinds.setdefault(TASK_KINDS[run.task], []).append(f"{run.model} ({run.task})")
    if len(kinds) > 1:
        raise OperationError(
            "the models did different kinds of task and cannot be compared: "
            + "; ".join(f"{kind}: {', '.join(models)}" for kind, models in kinds.items())
        )
    return next(iter(kinds))


def aligned_names(runs: Sequence[ModelRun]) -> list[str]:
    """The input names every run predicted, in the first run's order; checks they are the same inputs."""
    models = Counter(run.model for run in runs)
    twice = [model for model, count in models.items() if count > 1]
    if twice:
        raise OperationError(f"model {few(twice)} appears more than once; compare each model once")
    order: list[str] = []
    first: set[str] = set()
    for i, run in enumerate(runs):
        names = []
        for position, item in enumerate(run.items):
            if not isinstance(item, dict) or "name" not in item:
                raise OperationError(f"model {run.model!r}: prediction #{position} has no 'name'")
            names.append(str(item["name"]))
        duplicates = [name for name, count in Counter(names).items() if count > 1]
        if duplicates:
            raise OperationError(
                f"model {run.model!r} has more than one prediction for the inputs {few(duplicates)}; "
                "expected exactly one prediction per input"
            )
        if i == 0:
            order, first = names, set(names)
            if not names:
                raise OperationError(f"model {run.model!r} has no predictions: nothing to compare")
            continue
        here = set(names)
        if here != first:
            missing, extra = sorted(first - here), sorted(here - first)
            parts = [
                f"lacks {len(missing)} of them ({few(missing)})" if missing else "",
                f"has {len(extra)} others ({few(extra)})" if extra else "",
            ]
            raise OperationError(
                f"models {run.model!r} and {runs[0].model!r} did not see the same inputs: {run.model!r} "
                + " and ".join(p for p in parts if p)
                + f" compared with the {len(first)} inputs of {runs[0].model!r}; "
                "compare models over the exact same data"
            )
    return order


def items_by_name(run: ModelRun) -> dict[str, dict[str, Any]]:
    return {str(item["name"]): item for item in run.items}


def check_truth(truth: Truth, kind: str, names: Sequence[str]) -> None:
    """The truth fits the kind of comparison and (for keyed truth) covers every input."""
    expected = TRUTH_KINDS[kind]
    if truth.kind != expected:
        raise OperationError(
            f"{kind} predictions need ground truth of kind {expected!r}, "
            f"but the truth ({truth.source or truth.kind}) is {truth.kind!r}"
        )
    if truth.kind == "coco":
        if truth.coco is None:
            raise OperationError("COCO ground truth needs the path of its JSON file (Truth.coco)")
        return
    missing = [name for name in names if name not in truth.values]
    if missing:
        source = f" ({truth.source})" if truth.source else ""
        raise OperationError(
            f"the ground truth{source} has no entry for {len(missing)} of the {len(names)} inputs: {few(missing)}; "
            "every input the models predicted needs a truth"
        )
