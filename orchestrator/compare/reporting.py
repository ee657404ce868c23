"""What a comparison report shows of the inputs themselves: thumbnails of images, table rows."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from orchestrator import compare
from orchestrator.datasets import Predictions, Table
from orchestrator.transforms.tables import keyed_rows

THUMBNAIL = (160, 160)
# A thumbnail decodes the whole image; past this many pixels the report shows the name alone.
THUMBNAIL_MAX_PIXELS = 50_000_000


def disagreements(results: Sequence[Predictions], runs: Sequence[compare.ModelRun], truth: Any,
                  limit: int = 24) -> list[dict[str, Any]]:
    """The inputs the models disagree on most, each with a thumbnail (images) or its row (tables)."""
    shown = compare.find_disagreements(runs, truth, limit=limit)
    inputs: dict[str, Any] = {}
    for result in results:
        inputs.update(result.inputs)
        if result.table is not None:
            inputs.update(_rows(result.table, result.table_key, {e["name"] for e in shown}))
    for entry in shown:
        source = inputs.get(entry["name"])
        if isinstance(source, Path):
            entry["thumbnail"] = thumbnail(source)
        elif isinstance(source, dict):
            entry["row"] = source
    return shown


def rows_of(table: Table, key: str | None, wanted: set[str]) -> dict[str, dict[str, Any]]:
    """The rows named in `wanted` (long values clipped), for a report to show."""
    return _rows(table, key, wanted)


def _rows(table: Table, key: str | None, wanted: set[str]) -> dict[str, dict[str, Any]]:
    """The rows named in `wanted`, read from the table one at a time (long values clipped)."""
    found = {}
    for name, row in keyed_rows(table, key):
        if name in wanted:
            found[name] = {k: (v[:80] + "…" if isinstance(v, str) and len(v) > 80 else v) for k, v in row.items()}
    return found


def thumbnail(path: Path, size: tuple[int, int] = THUMBNAIL) -> bytes | None:
    """A small JPEG of an image file, or None when it cannot (or should not) be decoded."""
    try:
        with Image.open(path) as image:
            if image.width * image.height > THUMBNAIL_MAX_PIXELS:
                return None
            image.draft("RGB", size)  # JPEG: decode at a fraction of the size
            small = image.convert("RGB")
            small.thumbnail(size)
            out = io.BytesIO()
            small.save(out, format="JPEG", quality=80)
            return out.getvalue()
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
