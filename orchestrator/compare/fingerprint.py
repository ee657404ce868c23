"""The fingerprint of the data a comparison was made on: the inputs as the models saw them, and the truth.

`dataset_fingerprint` is "sha256:<hex>" of, in this order and length-prefixed so no two datasets
read alike: a version tag; for each distinct view the models had of the inputs (usually one,
shared by every model), the digest of every input in name order — an image's name and bytes,
or a row's key and the values of the columns the model read (JSON, columns in name order);
then the truth for those inputs (each input's class or value, each mask's bytes, or the COCO
file's bytes), or "no truth". Two comparisons with the same fingerprint saw the same bytes and
scored against the same truth; one changed pixel or cell changes it.

When a model's inputs can no longer be read (a resumed run whose files are gone), its view is
the input names alone and `fingerprint_of` says "names" instead of "files" or "rows".
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from orchestrator.compare.inputs import Truth
from orchestrator.datasets import Predictions
from orchestrator.transforms.tables import keyed_rows

VERSION = b"constellation-dataset-fingerprint-1"
_CHUNK = 1 << 20


def _field(digest: Any, data: bytes) -> None:
    digest.update(len(data).to_bytes(8, "big"))
    digest.update(data)


def _text(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str).encode()


class Fingerprinter:
    """Digests of files (by resolved path) and tables (by file and columns), each computed once."""

    def __init__(self, keep: set[str] | frozenset[str] = frozenset()) -> None:
        self._files: dict[Path, bytes] = {}
        self._tables: dict[tuple[Path, tuple[str, ...], str | None], bytes] = {}
        #: Rows to show in the report, kept while the table is read for its digest (no second read): by table
        #: file and key column, {name: row with long values clipped} for the names in `keep`.
        self.keep = set(keep)
        self.kept: dict[tuple[Path, str | None], dict[str, dict[str, Any]]] = {}

    def file(self, path: Path) -> bytes | None:
        path = Path(path)
        if path not in self._files:
            digest = hashlib.sha256()
            try:
                with path.open("rb") as handle:
                    while chunk := handle.read(_CHUNK):
                        digest.update(chunk)
            except OSError:
                return None
            self._files[path] = digest.digest()
        return self._files[path]

    def view(self, result: Predictions, names: Sequence[str]) -> tuple[bytes, str]:
        """The digest of one model's inputs, and what it was made of: files, rows or names."""
        if result.table is not None and result.table.path.is_file():
            return self._rows(result, names), "rows"
        digest = hashlib.sha256(b"files")
        for name in sorted(names):
            source = result.inputs.get(name)
            if isinstance(source, dict):
                content = _text(source)
            elif source is not None:
                found = self.file(Path(source))
                if found is None:
                    return _names(names), "names"
                content = found
            else:
                return _names(names), "names"
            _field(digest, name.encode())
            _field(digest, content)
        return digest.digest(), "files"

    def _rows(self, result: Predictions, names: Sequence[str]) -> bytes:
        assert result.table is not None
        table = result.table
        read = result.stats.get("columns") if isinstance(result.stats.get("columns"), list) else None
        columns = tuple(sorted(str(c) for c in (read or table.columns)))
        cache = (table.path.resolve(), columns, result.table_key)
        if cache not in self._tables:
            wanted = set(names)
            kept = self.kept.setdefault((cache[0], result.table_key), {})
            rows = []
            for name, row in keyed_rows(table, result.table_key):
                if name in wanted:
                    rows.append((name, hashlib.sha256(_text([name, [row.get(c) for c in columns]])).digest()))
                if name in self.keep:
                    kept[name] = clipped(row)
            digest = hashlib.sha256(b"rows")
            _field(digest, _text(list(columns)))
            for name, row_digest in sorted(rows):
                _field(digest, name.encode())
                _field(digest, row_digest)
            self._tables[cache] = digest.digest()
        return self._tables[cache]

    def truth(self, truth: Truth | None, names: Sequence[str]) -> bytes:
        digest = hashlib.sha256(b"truth")
        if truth is None:
            _field(digest, b"no truth")
            return digest.digest()
        _field(digest, truth.kind.encode())
        if truth.kind == "coco":
            _field(digest, self.file(Path(str(truth.coco))) or b"unreadable")
            return digest.digest()
        if truth.kind == "masks":
            _field(digest, _text({"labels": truth.labels, "ignore_index": truth.ignore_index}))
        for name in sorted(names):
            value = truth.values.get(name)
            _field(digest, name.encode())
            if truth.kind == "masks":
                _field(digest, self.file(Path(str(value))) or b"unreadable")
            else:
                _field(digest, _text(value))
        return digest.digest()


def clipped(row: dict[str, Any]) -> dict[str, Any]:
    """A row as a report shows it: text values past 80 characters cut, with an ellipsis."""
    return {k: (v[:80] + "…" if isinstance(v, str) and len(v) > 80 else v) for k, v in row.items()}


def _names(names: Iterable[str]) -> bytes:
    digest = hashlib.sha256(b"names")
    for name in sorted(names):
        _field(digest, name.encode())
    return digest.digest()


def dataset_fingerprint(results: Sequence[Predictions], names: Sequence[str], truth: Truth | None) -> tuple[str, str]:
    """("sha256:<hex>", what the inputs' part was made of: "files", "rows" or "names")."""
    return fingerprint_and_rows(results, names, truth)[:2]


def fingerprint_and_rows(
    results: Sequence[Predictions],
    names: Sequence[str],
    truth: Truth | None,
    keep: set[str] | frozenset[str] = frozenset(),
) -> tuple[str, str, dict[tuple[Path, str | None], dict[str, dict[str, Any]]]]:
    """`dataset_fingerprint`, and the rows named in `keep` of every table read for it, as a report shows them:
    {(table file, key column): {name: row}}."""
    printer = Fingerprinter(keep)
    views = [printer.view(result, names) for result in results]
    bases = {basis for _, basis in views}
    digest = hashlib.sha256(VERSION)
    for view in sorted({view for view, _ in views}):  # the same data seen the same way by every model: one view
        _field(digest, view)
    _field(digest, printer.truth(truth, names))
    basis = "names" if "names" in bases else ("rows" if "rows" in bases else "files")
    return "sha256:" + digest.hexdigest(), basis, printer.kept
