"""Datasets that flow between instructions: references to files on disk, never the bytes.

Keeping only names and paths in memory is what bounds a run's memory by one batch, not by
the dataset: the bytes stay on disk until an operation streams them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.engine import DataType


class _NoFacts(Mapping[str, Any]):
    """The facts of a file that has none: one shared, read-only, empty mapping.

    Most files of a large dataset carry no facts; an empty dict each (and an instance `__dict__`,
    hence the slots below) is most of what a reference costs, and a run holds a few references
    per file (the import's, the list's, each step's).
    """

    __slots__ = ()

    def __getitem__(self, key: str) -> Any:
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0

    def __repr__(self) -> str:
        return "{}"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_no_facts, ())  # unpickled as the same shared instance


NO_FACTS = _NoFacts()


def _no_facts() -> Mapping[str, Any]:
    return NO_FACTS


@dataclass(frozen=True, slots=True)
class FileRef:
    """One file of a dataset: its name within the dataset, where it lies, and facts about it
    that later steps need (a tile's origin in its scene, a label...)."""

    name: str
    path: Path
    meta: Mapping[str, Any] = field(default_factory=_no_facts)

    def to_json(self) -> dict[str, Any]:
        described = {"name": self.name, "uri": self.path.resolve().as_uri()}
        return {**described, **self.meta} if self.meta else described


class FileDict(DataType):
    """Files keyed by name, as an import produces them.

    `meta` holds facts an import knows about some files (a STAC item's...). GeoTIFFs (.tif/.tiff)
    also get their raster facts (crs, transform, size, bands, dtype, nodata), read from their
    headers once, when the files are first listed, not for every file of an import up front.
    """

    # Class defaults: a FileDict pickled before these existed (a resumed run's) still reads.
    meta: Mapping[str, Mapping[str, Any]] = {}
    _facts: dict[str, Mapping[str, Any]] | None = None

    def __init__(self, files: dict[str, Path], meta: Mapping[str, Mapping[str, Any]] | None = None):
        self.files = dict(sorted(files.items()))
        if meta:
            self.meta = {name: dict(facts) for name, facts in meta.items() if name in self.files}

    def __len__(self) -> int:
        return len(self.files)

    def refs(self) -> list[FileRef]:
        if self._facts is None:
            self._facts = _file_facts(self.files, self.meta)
        facts = self._facts
        return [FileRef(name, path, facts.get(name, NO_FACTS)) for name, path in self.files.items()]

    def summary(self) -> str:
        return f"{len(self)} files"

    def to_result(self) -> dict[str, Any]:
        return {"type": "FileDict", "count": len(self), "files": [r.to_json() for r in self.refs()]}


def _file_facts(files: Mapping[str, Path], given: Mapping[str, Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """Each file's facts: a GeoTIFF's raster facts (from its header), then what the import gave."""
    found: dict[str, Mapping[str, Any]] = {}
    rasters = [name for name in files if name.lower().endswith((".tif", ".tiff"))]
    if rasters:
        from orchestrator.transforms.rasters import facts_of  # rasterio loads only for files that need it

        for name in rasters:
            read = facts_of(files[name])
            if read:
                found[name] = read
    for name, facts in given.items():
        found[name] = {**found.get(name, {}), **facts}
    return found


class FileList(DataType):
    """Files in a fixed order, ready for per-item processing."""

    def __init__(self, refs: list[FileRef]):
        self.refs = list(refs)

    def __len__(self) -> int:
        return len(self.refs)

    def __iter__(self) -> Iterator[FileRef]:
        return iter(self.refs)

    def summary(self) -> str:
        return f"{len(self)} files in order"

    def to_result(self) -> dict[str, Any]:
        return {"type": "FileList", "count": len(self), "files": [r.to_json() for r in self.refs]}


class ArrayList(FileList):
    """Images as float32 arrays (.npy, channels × height × width), ready for a model."""

    def summary(self) -> str:
        shapes = {tuple(r.meta.get("shape", ())) for r in self.refs}
        shown = "/".join("×".join(map(str, s)) for s in sorted(shapes))
        return f"{len(self)} arrays of {shown or 'no'} float32"

    def to_result(self) -> dict[str, Any]:
        return {**super().to_result(), "type": "ArrayList"}


class Batches(DataType):
    """Files cut into consecutive batches of a fixed size (the last may be smaller)."""

    def __init__(self, batches: list[list[FileRef]]):
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    @property
    def count(self) -> int:
        return sum(len(b) for b in self.batches)

    def summary(self) -> str:
        sizes = sorted({len(b) for b in self.batches}, reverse=True)
        return f"{self.count} files in {len(self)} batches of {'/'.join(map(str, sizes)) or 0}"

    def to_result(self) -> dict[str, Any]:
        return {
            "type": "Batches",
            "count": self.count,
            "batches": [[r.to_json() for r in batch] for batch in self.batches],
        }


class Table(DataType):
    """Rows with named columns, kept on disk as JSON Lines (one object per row)."""

    PREVIEW_ROWS = 20
    # Geometry columns (each row's value a GeoJSON geometry) and their SRID: {column: {"srid": 4326,
    # "crs": "EPSG:4326"}}. A class default, so that a Table kept before it existed still reads.
    geometry: Mapping[str, Mapping[str, Any]] = {}

    def __init__(
        self, path: Path, columns: list[str], count: int, geometry: Mapping[str, Mapping[str, Any]] | None = None
    ):
        self.path = path
        self.columns = list(columns)
        self.count = count
        if geometry:
            self.geometry = {column: dict(facts) for column, facts in geometry.items()}

    def rows(self) -> Iterator[dict[str, Any]]:
        """The rows in order, read one at a time."""
        with self.path.open() as lines:
            for line in lines:
                yield json.loads(line)

    def summary(self) -> str:
        return f"{self.count} rows × {len(self.columns)} columns"

    def to_result(self) -> dict[str, Any]:
        preview = [
            {key: _clipped(value) for key, value in row.items()}
            for _, row in zip(range(self.PREVIEW_ROWS), self.rows(), strict=False)
        ]
        return {
            "type": "Table",
            "columns": self.columns,
            **({"geometry": {column: dict(facts) for column, facts in self.geometry.items()}} if self.geometry else {}),
            "count": self.count,
            "uri": self.path.resolve().as_uri(),
            "preview": preview,
        }


def _clipped(value: Any, limit: int = 200) -> Any:
    """A preview keeps long values (base64 images, documents) short; the file has them whole."""
    return value[:limit] + "…" if isinstance(value, str) and len(value) > limit else value


def as_refs(data: FileDict | FileList) -> list[FileRef]:
    """The files of a dataset in order, whichever shape it arrived in."""
    return data.refs() if isinstance(data, FileDict) else list(data.refs)


class Exported(DataType):
    """What an export wrote, and where: one entry per item written (a file, or a database table), how many
    files that is (none into a database), and how many rows when it wrote rows (a table, predictions)."""

    def __init__(
        self, destination: str, items: list[dict[str, Any]], rows: int | None = None, files: int | None = None
    ):
        self.destination = destination
        self.items = items
        self.rows = rows
        self.files = len(items) if files is None else files

    def summary(self) -> str:
        return f"{self.counted()} written to {self.destination}"

    def counted(self) -> str:
        """What was written, counted as a user counts it: `121 rows`, `3 files`, `121 rows in 1 file`."""
        rows = None if self.rows is None else f"{self.rows} row{'' if self.rows == 1 else 's'}"
        files = f"{self.files} file{'' if self.files == 1 else 's'}" if self.files else None
        return " in ".join(part for part in (rows, files) if part) or "nothing"

    def to_result(self) -> dict[str, Any]:
        return {
            "type": "Exported",
            "destination": self.destination,
            "count": len(self.items),
            "rows": self.rows,
            "files": self.files,
            "written": self.counted(),
            "items": self.items,
        }


class Predictions(DataType):
    """One model's predictions for every input, keyed by the input's name (or the row's key).

    Classification: top-k `labels` and `scores`; regression: `value`; detection: `detections`;
    segmentation: the path of a class-id `mask`. `inputs` maps each name to where it came from
    (an image file, or a table row), so that a report can show the inputs models disagree on.
    """

    def __init__(
        self,
        model: str,
        items: list[dict[str, Any]],
        stats: dict[str, Any],
        path: Path,
        task: str = "image-classification",
        labels: list[str] | None = None,
        inputs: Mapping[str, Path | dict[str, Any]] | None = None,
    ):
        self.model = model
        self.items = items
        self.stats = stats
        self.path = path
        self.task = task
        self.labels = list(labels or [])
        self.inputs = dict(inputs or {})
        self.table: Table | None = None
        self.table_key: str | None = None

    def top1(self) -> dict[str, str]:
        return {item["name"]: item["labels"][0] for item in self.items}

    def summary(self) -> str:
        count = self.stats.get("inputs", len(self.items))
        rate = count / self.stats["seconds"] if self.stats.get("seconds") else 0
        return f"{len(self.items)} {self.task} predictions by {self.model} ({rate:.1f} inputs/s)"

    def to_result(self) -> dict[str, Any]:
        stats = {k: v for k, v in self.stats.items() if k not in ("batch_seconds", "batch_sizes")}
        items = [_masked(item) for item in self.items]
        return {
            "type": "Predictions",
            "model": self.model,
            "task": self.task,
            "count": len(self.items),
            "stats": stats,
            "labels": self.labels,
            "uri": self.path.resolve().as_uri(),
            "predictions": items,
        }


def _masked(item: dict[str, Any]) -> dict[str, Any]:
    """A segmentation mask's path, as a URI (the gateway serves the run's files)."""
    if "mask" in item:
        return {**item, "mask": Path(item["mask"]).resolve().as_uri()}
    return item


class Comparison(DataType):
    """Several models compared on the same inputs: metrics with intervals, significance, charts, a report."""

    # Class default: a Comparison kept before files existed still reads.
    files: Mapping[str, Path] = {}

    def __init__(
        self,
        report: dict[str, Any],
        markdown: str,
        charts: Mapping[str, Path],
        html: Path | None = None,
        files: Mapping[str, Path] | None = None,
    ):
        self.report = report
        self.markdown = markdown
        self.charts = dict(charts)
        self.html = html
        if files:
            self.files = dict(files)  # downloads beside the report: scene GeoTIFFs of predictions, truth, disagreement

    @property
    def chart(self) -> Path | None:
        """The headline chart: the metric (or agreement) per model."""
        return next(iter(self.charts.values()), None)

    def summary(self) -> str:
        return f"{len(self.report['models'])} models compared on {self.report['inputs']} inputs: " + str(
            self.report.get("verdict", "")
        )

    def to_result(self) -> dict[str, Any]:
        charts = {name: path.resolve().as_uri() for name, path in self.charts.items()}
        extra: dict[str, Any] = {"charts": charts, "chart": next(iter(charts.values()), None)}
        if self.html is not None:
            extra["report"] = self.html.resolve().as_uri()
        if self.files:
            extra["files"] = {name: path.resolve().as_uri() for name, path in self.files.items()}
        return {"type": "Comparison", **self.report, **extra}
