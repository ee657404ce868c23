"""What a run keeps of each instruction's output for a retry: typed JSON, never code.

A retry (`POST /runs/{id}/retry`) takes the outputs its parent completed instead of running those
instructions again. They are kept as JSON documents that only this module reads, and it builds
nothing but the types registered here (the datasets of orchestrator/datasets.py, plain JSON values,
paths) from them: a document never names a class or a function to call, so whatever a kept
document holds, reading it runs no code. A type this module does not know is not kept (its
instruction simply runs again on a retry).

Paths under the runs' folder are kept relative to it, as `<run id>/<rel>`, so that a run on another
machine (a worker with its own scratch folder) maps them to its own copies; other paths (the data
root's files) are kept as they are, absolute. References that leave the runs' folder, relative or
odd paths are refused when read.

A document is `{"format": 1, "output": <value>}`; a value is a JSON scalar, list or object of
values, or a tagged object `{"$t": <tag>, ...}`: "path", "run-text" (a string naming a run's file),
"tuple", "map" (a dict whose keys are not all plain strings, or which holds "$t"), "float" (NaN
and infinities), or a registered type's name with its fields.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePath, PurePosixPath
from typing import Any

from orchestrator.datasets import (
    NO_FACTS,
    ArrayList,
    Batches,
    Comparison,
    Exported,
    FileDict,
    FileList,
    FileRef,
    Predictions,
    Table,
)
from orchestrator.runstore import clean_relative, is_run_id

FORMAT = 1
TAG = "$t"


class NotKept(Exception):
    """An output this module cannot keep (a type it does not know): the instruction runs again on a retry."""


class BadKept(Exception):
    """A kept document that is not what this module writes."""


class Fields:
    """A registered type's fields as read from a document, each checked for the type its builder asks."""

    def __init__(self, kind: str, values: Mapping[str, Any]):
        self.kind, self.values = kind, values

    def get(self, name: str, *types: type, optional: bool = False) -> Any:
        if name not in self.values:
            if optional:
                return None
            raise BadKept(f"{self.kind} has no field {name!r}")
        value = self.values[name]
        if value is None and optional:
            return None
        if types and not isinstance(value, types):
            raise BadKept(f"{self.kind}.{name} is {type(value).__name__}, not {'/'.join(t.__name__ for t in types)}")
        return value

    def text(self, name: str, optional: bool = False) -> Any:
        return self.get(name, str, optional=optional)

    def path(self, name: str, optional: bool = False) -> Any:
        return self.get(name, Path, optional=optional)

    def list_of(self, name: str, *types: type) -> list[Any]:
        values = self.get(name, list)
        for value in values:
            if not isinstance(value, types):
                raise BadKept(f"{self.kind}.{name} holds {type(value).__name__}")
        return values

    def dict_of(self, name: str, *types: type) -> dict[str, Any]:
        values = self.get(name, dict)
        for key, value in values.items():
            if not isinstance(key, str) or (types and not isinstance(value, types)):
                raise BadKept(f"{self.kind}.{name} holds {type(key).__name__}: {type(value).__name__}")
        return values


@dataclass(frozen=True)
class _Kind:
    name: str
    cls: type
    fields: Callable[[Any], dict[str, Any]]
    build: Callable[[Fields], Any]


_BY_NAME: dict[str, _Kind] = {}
_BY_TYPE: dict[type, _Kind] = {}
_RESERVED_TAGS = {"path", "run-text", "float", "tuple", "map"}


def register(cls: type, name: str, fields: Callable[[Any], dict[str, Any]], build: Callable[[Fields], Any]) -> None:
    """Keep outputs of type `cls` (exactly: a subclass registers on its own) as `name` with `fields(obj)`.

    `build(fields)` makes the object again; it reads each field through `Fields`, which checks its type.
    Field values may be anything this module keeps (JSON values, paths, registered types).
    """
    if name in _RESERVED_TAGS or (name in _BY_NAME and _BY_NAME[name].cls is not cls):
        raise ValueError(f"kept type name {name!r} is taken")
    kind = _Kind(name, cls, fields, build)
    _BY_NAME[name], _BY_TYPE[cls] = kind, kind


class Codec:
    """Writes and reads kept documents for one machine's runs folder (`runs_root`)."""

    def __init__(self, runs_root: Path):
        self.runs_root = runs_root
        self._prefix = str(runs_root).rstrip("/") + "/"
        self._runs: dict[str, Path] = {}

    def dumps(self, output: Any) -> bytes:
        """The document keeping `output`; NotKept when it holds something this module does not keep."""
        try:
            document = {"format": FORMAT, "output": self._encode(output)}
            return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()
        except RecursionError:
            raise NotKept("nested too deeply") from None

    def loads(self, data: bytes) -> tuple[Any, set[str]]:
        """The output a document keeps, and the run files (`<run id>/<rel>`) it names; BadKept otherwise."""
        try:
            document = json.loads(data)
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
            raise BadKept(f"not a kept document: {type(exc).__name__}") from None
        if not isinstance(document, dict) or document.get("format") != FORMAT or "output" not in document:
            raise BadKept("not a kept document of this version")
        refs: set[str] = set()
        try:
            return self._decode(document["output"], refs), refs
        except RecursionError:
            raise BadKept("nested too deeply") from None

    # --- writing ---------------------------------------------------------------------------------

    def _encode(self, value: Any) -> Any:
        cls = type(value)  # the common types by identity first: a dataset holds a few values per file
        if cls is str:
            if value.startswith(self._prefix):
                return {TAG: "run-text", "ref": self._ref(value[len(self._prefix) :])}
            return value
        kind = _BY_TYPE.get(cls)
        if kind is not None:
            fields = kind.fields(value)
            return {TAG: kind.name, **{k: self._encode(v) for k, v in fields.items() if k != TAG}}
        if isinstance(value, PurePath):
            return self._encode_path(value)
        if value is None or isinstance(value, bool | int):
            return value
        if isinstance(value, float):
            if not math.isfinite(value):  # JSON has no NaN: kept as the text json.loads reads back
                return {TAG: "float", "value": repr(value)}
            return value
        if cls is list:
            return [self._encode(v) for v in value]
        if cls is dict or value is NO_FACTS:
            if TAG not in value and all(type(k) is str for k in value):
                return {k: self._encode(v) for k, v in value.items()}
            return {TAG: "map", "items": [[self._encode(k), self._encode(v)] for k, v in value.items()]}
        if cls is tuple:
            return {TAG: "tuple", "items": [self._encode(v) for v in value]}
        raise NotKept(f"{cls.__module__}.{cls.__qualname__} is not a type kept for retries")

    def _encode_path(self, path: PurePath) -> dict[str, str]:
        text = str(path)
        if text.startswith(self._prefix):
            return {TAG: "path", "ref": self._ref(text[len(self._prefix) :])}
        if not path.is_absolute():
            raise NotKept(f"relative path {text!r}")
        return {TAG: "path", "abs": text}

    @staticmethod
    def _ref(rel: str) -> str:
        if not _is_ref(rel):
            raise NotKept(f"path {rel!r} in the runs' folder is not a run's file")
        return rel

    # --- reading ---------------------------------------------------------------------------------

    def _decode(self, value: Any, refs: set[str]) -> Any:
        if isinstance(value, list):
            return [self._decode(v, refs) for v in value]
        if not isinstance(value, dict):
            return value
        if TAG not in value:
            return {k: self._decode(v, refs) for k, v in value.items()}
        tag = value[TAG]
        if tag == "path":
            return self._decode_path(value, refs)
        if tag == "run-text":
            return str(self._run_file(value.get("ref"), refs))
        if tag == "float":
            text = value.get("value")
            if text not in ("nan", "inf", "-inf"):
                raise BadKept(f"float {text!r}")
            return float(text)
        if tag == "tuple":
            return tuple(self._decode(v, refs) for v in _items(value))
        if tag == "map":
            pairs = [self._decode_pair(pair, refs) for pair in _items(value)]
            try:
                return dict(pairs)
            except TypeError:
                raise BadKept("a map key that is not hashable") from None
        kind = _BY_NAME.get(tag) if isinstance(tag, str) else None
        if kind is None:
            raise BadKept(f"unknown kept type {tag!r}")
        fields = Fields(kind.name, {k: self._decode(v, refs) for k, v in value.items() if k != TAG})
        try:
            return kind.build(fields)
        except BadKept:
            raise
        except (TypeError, ValueError, KeyError) as exc:
            raise BadKept(f"{kind.name}: {exc}") from None

    def _decode_pair(self, pair: Any, refs: set[str]) -> tuple[Any, Any]:
        if not isinstance(pair, list) or len(pair) != 2:
            raise BadKept("a map item that is not a [key, value] pair")
        return self._decode(pair[0], refs), self._decode(pair[1], refs)

    def _decode_path(self, value: dict[str, Any], refs: set[str]) -> Path:
        if "ref" in value:
            return self._run_file(value["ref"], refs)
        text = value.get("abs")
        if not isinstance(text, str) or "\x00" in text or "\\" in text:
            raise BadKept(f"path {text!r}")
        pure = PurePosixPath(text)
        parts = text.split("/")
        if not pure.is_absolute() or text != str(pure) or any(p in ("", ".", "..") for p in parts[1:]):
            raise BadKept(f"path {text!r} is not a plain absolute path")
        if text.startswith(self._prefix):  # written as a run reference, never like this
            raise BadKept(f"path {text!r} names a run's file by its absolute path")
        return Path(text)

    def _run_file(self, ref: Any, refs: set[str]) -> Path:
        if not isinstance(ref, str) or not _is_ref(ref):
            raise BadKept(f"run file reference {ref!r}")
        refs.add(ref)
        run_id, _, rel = ref.partition("/")
        folder = self._runs.get(run_id)
        if folder is None:  # one Path per run: its files' paths share it
            folder = self._runs[run_id] = self.runs_root / run_id
        return folder / rel


def _is_ref(ref: str) -> bool:
    """`<run id>/<rel>` with `rel` a plain path inside that run's folder."""
    run_id, _, rel = ref.partition("/")
    return is_run_id(run_id) and clean_relative(rel) is not None


def _items(value: dict[str, Any]) -> list[Any]:
    items = value.get("items")
    if not isinstance(items, list):
        raise BadKept(f"{value.get(TAG)} without items")
    return items


# --- the datasets that flow between instructions (orchestrator/datasets.py) -------------------------


def _file_ref(f: Fields) -> FileRef:
    meta = f.get("meta", dict, optional=True)
    return FileRef(f.text("name"), f.path("path"), meta if meta else NO_FACTS)


def _ref_fields(ref: FileRef) -> dict[str, Any]:
    described: dict[str, Any] = {"name": ref.name, "path": ref.path}
    if ref.meta:
        described["meta"] = dict(ref.meta)
    return described


def _batches(f: Fields) -> Batches:
    batches = f.list_of("batches", list)
    for batch in batches:
        if not all(isinstance(ref, FileRef) for ref in batch):
            raise BadKept("Batches.batches holds something else than files")
    return Batches(batches)


def _predictions(f: Fields) -> Predictions:
    inputs = f.dict_of("inputs", Path, dict)
    predictions = Predictions(
        f.text("model"),
        f.list_of("items", dict),
        f.get("stats", dict),
        f.path("path"),
        task=f.text("task"),
        labels=f.list_of("labels", str),
        inputs=inputs,
    )
    predictions.table = f.get("table", Table, optional=True)
    predictions.table_key = f.text("table_key", optional=True)
    return predictions


register(FileRef, "FileRef", _ref_fields, _file_ref)


def _file_dict_fields(files: FileDict) -> dict[str, Any]:
    given = getattr(files, "meta", None)  # facts an import gave (plain JSON mappings by name)
    return {"files": files.files, **({"meta": {k: dict(v) for k, v in given.items()}} if given else {})}


def _file_dict(f: Fields) -> FileDict:
    files, given = f.dict_of("files", Path), f.get("meta", dict, optional=True)
    return FileDict(files, given) if given else FileDict(files)


register(FileDict, "FileDict", _file_dict_fields, _file_dict)
register(FileList, "FileList", lambda d: {"refs": d.refs}, lambda f: FileList(f.list_of("refs", FileRef)))
register(ArrayList, "ArrayList", lambda d: {"refs": d.refs}, lambda f: ArrayList(f.list_of("refs", FileRef)))
register(Batches, "Batches", lambda d: {"batches": d.batches}, _batches)
register(
    Table,
    "Table",
    lambda t: {"path": t.path, "columns": t.columns, "count": t.count, "geometry": dict(t.geometry)},
    lambda f: Table(
        f.path("path"),
        f.list_of("columns", str),
        f.get("count", int),
        f.dict_of("geometry", dict) if "geometry" in f.values else None,
    ),
)
register(
    Exported,
    "Exported",
    lambda e: {"destination": e.destination, "items": e.items, "rows": e.rows, "files": e.files},
    lambda f: Exported(
        f.text("destination"),
        f.list_of("items", dict),
        f.get("rows", int, optional=True),
        f.get("files", int, optional=True),
    ),
)
register(
    Predictions,
    "Predictions",
    lambda p: {
        "model": p.model,
        "items": p.items,
        "stats": p.stats,
        "path": p.path,
        "task": p.task,
        "labels": p.labels,
        "inputs": p.inputs,
        "table": p.table,
        "table_key": p.table_key,
    },
    _predictions,
)
register(
    Comparison,
    "Comparison",
    lambda c: {"report": c.report, "markdown": c.markdown, "charts": c.charts, "html": c.html, "files": c.files},
    lambda f: Comparison(
        f.get("report", dict),
        f.text("markdown"),
        f.dict_of("charts", Path),
        f.path("html", optional=True),
        f.dict_of("files", Path) if "files" in f.values else None,
    ),
)
