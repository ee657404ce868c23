"""Images held in a table column (bytes, base64 in the table's JSON) written out as files.

Only bytes are accepted. A column of URIs or paths is refused rather than fetched: fetching here
would bypass the URL policy of `import_from_url` and the data root of `import_from_local`.
"""

from __future__ import annotations

import base64
import binascii
import io
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from orchestrator.engine import OperationError

_EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png", "GIF": ".gif", "BMP": ".bmp", "TIFF": ".tif", "WEBP": ".webp"}


def write_images(
    rows: Iterable[Mapping[str, Any]],
    columns: list[str],
    image_column: str,
    name_column: str | None,
    out_dir: Path,
    total: int = 0,
    max_pixels: int = 200_000_000,
    check_cancelled: Callable[[], None] = lambda: None,
) -> tuple[dict[str, Path], int]:
    """Write each row's image to `out_dir`; return {file name: path} and how many rows had no image.

    A file is named from `name_column` (an extension is added when it has none) or, without one,
    from the row's number, zero-padded to the width of `total` so names sort in row order.
    """
    for wanted in filter(None, (image_column, name_column)):
        if wanted not in columns:
            raise OperationError(f"the table has no column {wanted!r} (its columns: {', '.join(columns)})")
    out_dir.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    skipped = 0
    for number, row in enumerate(rows, start=1):
        if number % 100 == 0:
            check_cancelled()
        value = row.get(image_column)
        if value is None:
            skipped += 1
            continue
        where = f"row {number}, column {image_column!r}"
        data = _decode(value, where)
        fmt = _image_format(data, where, max_pixels)
        numbered = f"{number:0{len(str(total))}d}"
        name = _file_name(row.get(name_column) if name_column else None, numbered, fmt, where)
        if name in files:
            raise OperationError(f"{where}: two rows are named {name!r}; file names must differ")
        target = out_dir / name
        target.write_bytes(data)
        files[name] = target
    return files, skipped


def _decode(value: Any, where: str) -> bytes:
    if not isinstance(value, str):
        raise OperationError(f"{where} holds {type(value).__name__}, not image bytes")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        hint = value[:60] + ("…" if len(value) > 60 else "")
        raise OperationError(
            f"{where} holds text ({hint!r}), not image bytes; table_to_images does not fetch URIs or paths: "
            "import those with import_from_url or import_from_local"
        ) from None


def _image_format(data: bytes, where: str, max_pixels: int) -> str:
    try:
        with Image.open(io.BytesIO(data)) as image:  # reads the header only
            width, height = image.size
            fmt = image.format or ""
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError):
        raise OperationError(f"{where} is not a readable image ({len(data)} bytes)") from None
    if width * height > max_pixels:
        raise OperationError(f"{where} is {width}×{height} pixels, more than the server allows ({max_pixels})")
    return fmt


def _file_name(given: Any, numbered: str, fmt: str, where: str) -> str:
    if given is None:
        return numbered + _EXTENSIONS.get(fmt, "." + fmt.lower())
    name = str(given).strip()
    if not name or name in (".", "..") or any(c in name for c in "/\\\0") or len(name.encode()) > 255:
        raise OperationError(f"{where}: the name {name!r} is not a plain file name")
    return name if Path(name).suffix else name + _EXTENSIONS.get(fmt, "." + fmt.lower())
