"""Ground truth for a comparison, from wherever the user keeps it.

Class-folder names (`Fire/a.jpg` is Fire), a table (a key column matching the prediction keys
and a column holding the class or the value), a COCO JSON file (detection), or a folder of
mask PNGs whose pixels are class ids (segmentation, one mask per image of the same name).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import PurePosixPath
from typing import Any, Literal

from orchestrator import compare
from orchestrator.datasets import FileRef, Table
from orchestrator.engine import OperationError
from orchestrator.models import tasks
from orchestrator.transforms.tables import require_columns

CLASSIFICATION = tasks.names(compared_as=tasks.ComparedAs.CLASSIFICATION)  # tasks whose truth is classes


def from_folders(names: Sequence[str]) -> compare.Truth | None:
    """Each input's class from its folder (`Fire/img1.jpg` → `Fire`), if every input has one."""
    truth = {name: name.split("/", 1)[0] for name in names if "/" in name}
    if not names or len(truth) != len(names):
        return None
    return compare.Truth(kind="classes", values=truth, source="class folders")


def from_table(table: Table, task: str, key: str, column: str) -> compare.Truth:
    """Truth from a table's `column`, each row named by its `key` column."""
    require_columns(table, [key, column], "compare_models truth")
    values: dict[str, Any] = {}
    for number, row in enumerate(table.rows()):
        name, value = row.get(key), row.get(column)
        if name is None or name == "":
            raise OperationError(f"truth row {number} has no value in the key column {key!r}")
        name = str(name)
        if name in values:
            raise OperationError(f"truth key {name!r} appears twice in column {key!r}; each input needs one truth")
        if value is None or value == "":
            raise OperationError(f"truth row {name!r} has no value in column {column!r}")
        values[name] = _value(value, task, name, column)
    if not values:
        raise OperationError("the truth table is empty")
    kind: Literal["values", "classes"] = "values" if task == "tabular-regression" else "classes"
    return compare.Truth(kind=kind, values=values, source=f"table column {column!r} by {key!r}")


def _value(value: Any, task: str, name: str, column: str) -> Any:
    if task != "tabular-regression":
        return str(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        raise OperationError(f"truth row {name!r}: column {column!r} holds {str(value)[:40]!r}, not a number") from None


def from_files(refs: Sequence[FileRef], task: str, names: Sequence[str]) -> compare.Truth:
    """Truth from files: one COCO JSON (detection) or mask PNGs named like the images (segmentation)."""
    if task == "object-detection":
        coco = [r for r in refs if r.name.lower().endswith(".json")]
        if len(coco) != 1:
            raise OperationError(
                f"detection truth must be one COCO JSON file; got {len(coco)} .json file(s) among {len(refs)} file(s)"
            )
        return compare.Truth(kind="coco", coco=coco[0].path, source=f"COCO file {coco[0].name!r}")
    if task == "image-segmentation":
        return compare.Truth(kind="masks", values=_masks_by_name(refs, names), source=f"{len(refs)} mask file(s)")
    raise OperationError(
        f"truth from files is for object-detection (COCO JSON) or image-segmentation (masks); "
        f"for {task} give a table with the truth column"
    )


def _masks_by_name(refs: Sequence[FileRef], names: Sequence[str]) -> dict[str, Any]:
    """Each image's mask: the mask of the same name, or of the same name without its extension."""
    exact = {r.name: r.path for r in refs}
    by_stem: dict[str, Any] = {}
    for ref in refs:
        stem = str(PurePosixPath(ref.name).with_suffix(""))
        if stem in by_stem:
            raise OperationError(f"two mask files are named {stem!r} (apart from the extension)")
        by_stem[stem] = ref.path
    masks = {}
    for name in names:
        path = exact.get(name) or by_stem.get(str(PurePosixPath(name).with_suffix("")))
        if path is not None:
            masks[name] = path
    return masks
