"""Image preparation with Pillow, streamed one file at a time on a few threads.

Pillow releases the GIL while decoding and resampling, so two threads use both cores;
only as many images as threads are ever open at once.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from orchestrator.data.datasets import FileRef
from orchestrator.engine import OperationError

IMAGE_THREADS = 2


def map_images(
    refs: list[FileRef], out_dir: Path, transform: Callable[[FileRef, Path], Path]
) -> list[FileRef]:
    """Apply `transform(ref, out_dir)` to every image in order, on `IMAGE_THREADS` threads."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(IMAGE_THREADS, thread_name_prefix="image") as pool:
        paths = list(pool.map(lambda ref: transform(ref, out_dir), refs))
    return [FileRef(ref.name, path) for ref, path in zip(refs, paths, strict=True)]


def resize_one(ref: FileRef, out_dir: Path, width: int, height: int) -> Path:
    """Resize one image to exactly width × height, keeping its format."""
    target = out_dir / ref.name
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with Image.open(ref.path) as image:
            fmt = image.format
            # JPEG can decode at 1/2, 1/4 or 1/8 scale directly: far less work for thumbnails.
            image.draft("RGB", (width, height))
            # Phone photos store their rotation in EXIF; apply it so nothing comes out sideways.
            upright = ImageOps.exif_transpose(image)
            resized = upright.resize((width, height), Image.Resampling.LANCZOS)
    except (UnidentifiedImageError, OSError) as exc:
        raise OperationError(f"{ref.name!r} is not a readable image: {exc}") from None
    options = {"quality": 95} if fmt == "JPEG" else {}
    resized.save(target, format=fmt, **options)
    return target
