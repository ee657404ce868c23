"""Image preparation with Pillow, streamed one file at a time on a few threads.

Pillow releases the GIL while decoding and resampling, so two threads use both cores;
only as many images as threads are ever open at once, which bounds memory by that, not
by the dataset.
"""

from __future__ import annotations

import warnings
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from orchestrator.data.datasets import FileRef
from orchestrator.engine import OperationError

IMAGE_THREADS = 2
# Our own cap (a server setting) replaces Pillow's global one, so the limit and its message
# are ours; every open checks the header's size before any pixel is decoded.
Image.MAX_IMAGE_PIXELS = None
warnings.simplefilter("ignore", Image.DecompressionBombWarning)

EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "TIFF": ".tif", "BMP": ".bmp", "GIF": ".gif"}


def map_images(refs: list[FileRef], transform: Callable[[FileRef], list[FileRef]]) -> list[FileRef]:
    """Apply `transform` to every image on `IMAGE_THREADS` threads; results keep the input order.

    Only a few images are in flight at once (not one task per image queued up front), so
    memory stays flat however large the dataset.
    """
    results: list[FileRef] = []
    in_flight: deque[Future[list[FileRef]]] = deque()
    with ThreadPoolExecutor(IMAGE_THREADS, thread_name_prefix="image") as pool:
        try:
            for ref in refs:
                in_flight.append(pool.submit(transform, ref))
                if len(in_flight) >= 4 * IMAGE_THREADS:
                    results.extend(in_flight.popleft().result())
            while in_flight:
                results.extend(in_flight.popleft().result())
        finally:
            for future in in_flight:
                future.cancel()
    return results


@contextmanager
def open_image(ref: FileRef, max_pixels: int) -> Iterator[Image.Image]:
    """Open an image lazily, refusing unreadable files and ones over `max_pixels`."""
    try:
        with Image.open(ref.path) as image:
            if image.width * image.height > max_pixels:
                raise OperationError(
                    f"{ref.name!r} is {image.width}×{image.height} pixels, over the limit of {max_pixels} "
                    "(a decompression bomb, or a scene to cut with tile_image after raising the limit)"
                )
            yield image
    except (UnidentifiedImageError, OSError) as exc:
        raise OperationError(f"{ref.name!r} is not a readable image: {exc}") from None


def output_path(out_dir: Path, name: str) -> Path:
    """Where a derived file named `name` goes: inside `out_dir`, whatever the name says."""
    target = (out_dir / name).resolve()
    if not target.is_relative_to(out_dir.resolve()):
        raise OperationError(f"{name!r} would be written outside the run's folder; refused")
    return target


def save(image: Image.Image, target: Path, fmt: str) -> Path:
    """Write `image` as `fmt`, converting the mode when the format cannot hold it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "JPEG" and image.mode not in ("RGB", "L", "CMYK"):
        image = image.convert("RGB")
    options = {"quality": 95} if fmt in ("JPEG", "WEBP") else {}
    image.save(target, format=fmt, **options)
    return target


def distinct_names(names: list[str], derive: Callable[[str], str] = lambda name: name) -> list[str]:
    """`derive(name)` for each name, kept apart so that no output is written over another.

    Where two would collide (a.png and a.jpg both becoming a.jpg), a name that changes keeps
    its old extension in front (a.png.jpg); a name `derive` leaves as it is keeps it. Two inputs
    of the same name, or what still collides, fail clearly.
    """
    repeated = next((name for i, name in enumerate(names) if name in names[:i]), None)
    if repeated is not None:
        raise OperationError(f"two images are named {repeated!r}; their outputs would overwrite each other")
    derived = [derive(name) for name in names]
    taken = {new: name for name, new in zip(names, derived, strict=True) if new == name}
    result = []
    for name, new in zip(names, derived, strict=True):
        if taken.get(new) == name:
            result.append(new)
            continue
        candidate = name + Path(new).suffix if new in taken or derived.count(new) > 1 else new
        if candidate in taken:
            raise OperationError(
                f"{name!r} and {taken[candidate]!r} would both be written as {candidate!r}; rename one of them"
            )
        taken[candidate] = name
        result.append(candidate)
    return result


def resize(ref: FileRef, out_dir: Path, width: int, height: int, max_pixels: int) -> FileRef:
    """Resize one image to exactly width × height, keeping its format; the output is held to the pixel cap too."""
    check_output_pixels(width, height, max_pixels)
    with open_image(ref, max_pixels) as image:
        fmt = image.format or "PNG"
        # JPEG can decode at 1/2, 1/4 or 1/8 scale directly: far less work for thumbnails.
        image.draft("RGB", (width, height))
        # Phone photos store their rotation in EXIF; apply it so nothing comes out sideways.
        upright = ImageOps.exif_transpose(image)
        resized = upright.resize((width, height), Image.Resampling.LANCZOS)
    return FileRef(ref.name, save(resized, output_path(out_dir, ref.name), fmt), ref.meta)


def check_output_pixels(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise OperationError(
            f"an output of {width}×{height} pixels is over the limit of {max_pixels} (the server's "
            "CONSTELLATION_MAX_IMAGE_PIXELS)"
        )


def converted_name(name: str, fmt: str | None) -> str:
    """The name an image gets from convert: its extension follows the new format."""
    return str(Path(name).with_suffix(EXTENSIONS[fmt])) if fmt else name


def convert(
    ref: FileRef, out_dir: Path, mode: str, fmt: str | None, max_pixels: int, name: str | None = None
) -> FileRef:
    """Change an image's colour mode and/or file format (the name's extension follows the format).

    `name` is the output's name when the caller has kept names apart (see `distinct_names`).
    """
    with open_image(ref, max_pixels) as image:
        target_format = fmt or image.format or "PNG"
        converted = ImageOps.exif_transpose(image).convert(mode)
    name = name or converted_name(ref.name, fmt)
    return FileRef(name, save(converted, output_path(out_dir, name), target_format), ref.meta)


def crop(ref: FileRef, out_dir: Path, box: tuple[int, int, int, int], max_pixels: int) -> FileRef:
    """Cut the box (left, top, width, height) out of one image; the box must lie inside it."""
    left, top, width, height = box
    with open_image(ref, max_pixels) as image:
        if left + width > image.width or top + height > image.height:
            raise OperationError(
                f"{ref.name!r} is {image.width}×{image.height}; the box {width}×{height} at ({left}, {top}) "
                "does not fit inside it"
            )
        fmt = image.format or "PNG"
        cropped = image.crop((left, top, left + width, top + height))
    return FileRef(ref.name, save(cropped, output_path(out_dir, ref.name), fmt), ref.meta)


def tile_origins(length: int, tile: int, step: int) -> list[int]:
    """Tile starts along one axis; the last tile is moved back to end at the edge (never padded)."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile + 1, step))
    if starts[-1] + tile < length:
        starts.append(length - tile)
    return starts


def tile(
    ref: FileRef, out_dir: Path, size: tuple[int, int], overlap: int, max_pixels: int, max_tiles: int = 10_000
) -> list[FileRef]:
    """Cut one image into size-d tiles overlapping by `overlap` pixels; each tile keeps its origin.

    The tile count is checked from the header before any pixel is decoded or any tile written.
    """
    tile_w, tile_h = size
    with open_image(ref, max_pixels) as image:
        rows = tile_origins(image.height, tile_h, tile_h - overlap)
        columns = tile_origins(image.width, tile_w, tile_w - overlap)
        if len(rows) * len(columns) > max_tiles:
            raise OperationError(
                f"{ref.name!r} ({image.width}×{image.height}) would make {len(rows) * len(columns)} tiles of "
                f"{tile_w}×{tile_h} with overlap {overlap}, over the limit of {max_tiles} per image (the server's "
                "CONSTELLATION_MAX_TILES_PER_IMAGE); use larger tiles or less overlap"
            )
        fmt = image.format or "PNG"
        image.load()
        stem, suffix = Path(ref.name).with_suffix(""), Path(ref.name).suffix or EXTENSIONS.get(fmt, ".png")
        tiles = []
        for y in rows:
            for x in columns:
                box = (x, y, min(x + tile_w, image.width), min(y + tile_h, image.height))
                name = f"{stem}/x{x}_y{y}{suffix}"
                meta = {**ref.meta, "source": ref.name, "x": x, "y": y, "width": box[2] - x, "height": box[3] - y}
                tiles.append(FileRef(name, save(image.crop(box), output_path(out_dir, name), fmt), meta))
    return tiles


NORMALIZE_BAND_PIXELS = 1 << 20  # pixels turned into floats at a time: about 4 MB per channel


def normalized_name(name: str) -> str:
    return str(Path(name).with_suffix(".npy"))


def normalize(
    ref: FileRef, out_dir: Path, mean: list[float], std: list[float], max_pixels: int, name: str | None = None
) -> FileRef:
    """Scale pixels to [0, 1], subtract `mean` and divide by `std` per channel; save float32 CHW .npy.

    Streamed in bands of rows, channel by channel, straight into the .npy file: memory is the
    decoded 8-bit image (1 byte a pixel per channel) plus one band of floats, not ~30 bytes a
    pixel for float copies of the whole image.
    """
    channels = len(mean)
    with open_image(ref, max_pixels) as image:
        ImageOps.exif_transpose(image, in_place=True)
        converted = image.convert("L" if channels == 1 else "RGB")
    with converted:
        pixels = np.asarray(converted)  # uint8, H×W or H×W×3
    height, width = pixels.shape[:2]
    pixels = pixels.reshape(height, width, -1)
    band = max(1, NORMALIZE_BAND_PIXELS // max(1, width))
    name = name or normalized_name(ref.name)
    target = output_path(out_dir, name)
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("wb") as sink:
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype("<f4")), "fortran_order": False,
                  "shape": (channels, height, width)}
        np.lib.format.write_array_header_1_0(sink, header)
        for channel in range(channels):
            for top in range(0, height, band):
                rows = pixels[top : top + band, :, channel].astype("<f4")
                rows /= np.float32(255.0)  # the same float32 arithmetic as on the whole image, a band at a time
                rows -= np.float32(mean[channel])
                rows /= np.float32(std[channel])
                sink.write(rows.tobytes())
    return FileRef(name, target, {**ref.meta, "shape": [channels, height, width]})
