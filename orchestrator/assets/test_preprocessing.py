"""The preprocessing and local export ops, called directly on real files."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from orchestrator.assets import ops
from orchestrator.assets.resources import Workspace
from orchestrator.data.datasets import FileDict, FileList
from orchestrator.engine import OperationError, RunContext


def gradient(width: int, height: int) -> Image.Image:
    """An RGB image whose every pixel differs, so crops and tiles can be compared exactly."""
    x = np.arange(width, dtype=np.uint16)[None, :].repeat(height, 0)
    y = np.arange(height, dtype=np.uint16)[:, None].repeat(width, 1)
    return Image.fromarray(np.stack([x % 256, y % 256, (x + y) % 256], -1).astype(np.uint8))


@pytest.fixture
def pictures(data: Path) -> FileDict:
    (data / "set" / "sub").mkdir(parents=True)
    gradient(100, 60).save(data / "set" / "a.png")
    gradient(80, 80).save(data / "set" / "b.jpg", quality=95)
    gradient(64, 48).save(data / "set" / "sub" / "c.png")
    (data / "set" / "notes.txt").write_text("not an image")
    return FileDict({p.relative_to(data / "set").as_posix(): p for p in (data / "set").rglob("*") if p.is_file()})


def images_only(files: FileDict) -> FileList:
    return ops.filter_files(None, files, extensions=["png", "jpg"])


def test_convert_changes_mode_and_format_and_the_names_follow(ctx: RunContext, pictures: FileDict):
    converted = ops.convert_image(ctx, images_only(pictures), mode="L", format="TIFF")
    assert [r.name for r in converted] == ["a.tif", "b.tif", "sub/c.tif"]
    for ref in converted:
        with Image.open(ref.path) as image:
            assert image.format == "TIFF" and image.mode == "L"


def test_normalize_matches_a_hand_computation(ctx: RunContext, pictures: FileDict):
    arrays = ops.normalize_image(ctx, images_only(pictures), mean=[0.5, 0.5, 0.5], std=[0.25, 0.5, 1.0])
    assert arrays.summary() == "3 arrays of 3×48×64/3×60×100/3×80×80 float32"
    first = np.load(arrays.refs[0].path)
    assert first.shape == (3, 60, 100) and first.dtype == np.float32
    # pixel (x=7, y=5) of a.png is (7, 5, 12)
    expected = [(7 / 255 - 0.5) / 0.25, (5 / 255 - 0.5) / 0.5, (12 / 255 - 0.5) / 1.0]
    assert first[:, 5, 7] == pytest.approx(expected, rel=1e-6)


def test_normalize_refuses_mean_and_std_of_different_lengths(ctx: RunContext, pictures: FileDict):
    with pytest.raises(OperationError, match="mean has 1 values but std has 3"):
        ops.normalize_image(ctx, images_only(pictures), mean=[0.5], std=[0.2, 0.2, 0.2])


def test_crop_cuts_the_box_and_refuses_one_that_does_not_fit(ctx: RunContext, pictures: FileDict):
    only_a = ops.filter_files(None, pictures, pattern="a.png")
    [cropped] = ops.crop_image(ctx, only_a, left=10, top=20, width=30, height=40)
    with Image.open(cropped.path) as image, Image.open(only_a.refs[0].path) as source:
        assert image.size == (30, 40)
        assert image.getpixel((0, 0)) == source.getpixel((10, 20))
    with pytest.raises(OperationError, match=r"'b.jpg' is 80×80; the box 30×40 at \(60, 20\) does not fit"):
        ops.crop_image(ctx, images_only(pictures), left=60, top=20, width=30, height=40)


def test_tiles_cover_the_scene_with_overlap_and_keep_their_origin(ctx: RunContext, pictures: FileDict):
    scene = ops.filter_files(None, pictures, pattern="a.png")  # 100 × 60
    tiles = ops.tile_image(ctx, scene, tile_width=40, tile_height=40, overlap=10)
    origins = [(t.meta["x"], t.meta["y"]) for t in tiles]
    assert origins == [(0, 0), (30, 0), (60, 0), (0, 20), (30, 20), (60, 20)]
    with Image.open(scene.refs[0].path) as source:
        for t in tiles:
            assert t.name == f"a/x{t.meta['x']}_y{t.meta['y']}.png" and t.meta["source"] == "a.png"
            with Image.open(t.path) as image:
                assert image.size == (40, 40)
                box = (t.meta["x"], t.meta["y"], t.meta["x"] + 40, t.meta["y"] + 40)
                assert image.tobytes() == source.crop(box).tobytes()


def test_a_scene_smaller_than_a_tile_is_one_tile(ctx: RunContext, pictures: FileDict):
    small = ops.filter_files(None, pictures, pattern="sub/*")  # 64 × 48
    [only] = ops.tile_image(ctx, small, tile_width=256, tile_height=256)
    assert (only.meta["x"], only.meta["y"], only.meta["width"], only.meta["height"]) == (0, 0, 64, 48)


def test_overlap_must_be_smaller_than_the_tile(ctx: RunContext, pictures: FileDict):
    with pytest.raises(OperationError, match="overlap 40 must be smaller"):
        ops.tile_image(ctx, images_only(pictures), tile_width=40, tile_height=64, overlap=40)


def test_filter_by_glob_and_extension(pictures: FileDict):
    assert [r.name for r in ops.filter_files(None, pictures, pattern="sub/*")] == ["sub/c.png"]
    assert [r.name for r in ops.filter_files(None, pictures, extensions=[".PNG"])] == ["a.png", "sub/c.png"]
    assert [r.name for r in ops.filter_files(None, pictures, pattern="*.png", extensions=["jpg"])] == []
    with pytest.raises(OperationError, match="give a pattern, extensions, or both"):
        ops.filter_files(None, pictures)


def test_sample_first_and_random_reproducibly(pictures: FileDict):
    names = [r.name for r in pictures.refs()]
    assert [r.name for r in ops.sample(None, pictures, n=2)] == names[:2]
    drawn = [r.name for r in ops.sample(None, pictures, n=2, mode="random", seed=7)]
    assert drawn == [r.name for r in ops.sample(None, pictures, n=2, mode="random", seed=7)]
    assert len(set(drawn)) == 2 and drawn == sorted(drawn, key=names.index)  # the dataset's order is kept
    assert len(ops.sample(None, pictures, n=99, mode="random")) == len(names)


def png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG that claims to be width × height: a decompression bomb's header."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(
        b"IEND", b""
    )


def test_a_decompression_bomb_is_refused_before_decoding(ctx: RunContext, data: Path):
    (data / "bomb.png").write_bytes(png_header_only(100_000, 100_000))
    bomb = FileDict({"bomb.png": data / "bomb.png"})
    with pytest.raises(OperationError, match=r"'bomb.png' is 100000×100000 pixels, over the limit"):
        ops.resize_image(ctx, bomb, width=10, height=10)


def test_a_non_image_is_named(ctx: RunContext, pictures: FileDict):
    with pytest.raises(OperationError, match="'notes.txt' is not a readable image"):
        ops.convert_image(ctx, pictures)


def test_export_to_local_writes_per_run_and_never_overwrites(tmp_path: Path, pictures: FileDict):
    workspace = Workspace(artifact_root=str(tmp_path / "art"), output_root=str(tmp_path / "out"))
    first = RunContext(run_dir=tmp_path / "art" / "runs" / "run-1", resources=SimpleNamespace(workspace=workspace))
    second = RunContext(run_dir=tmp_path / "art" / "runs" / "run-2", resources=SimpleNamespace(workspace=workspace))
    one = ops.export_to_local(first, pictures, folder="exports")
    ops.export_to_local(second, pictures, folder="exports")
    assert one.to_result()["count"] == 4
    for run in ("run-1", "run-2"):
        assert (tmp_path / "out" / "exports" / run / "sub" / "c.png").read_bytes() == (
            pictures.files["sub/c.png"].read_bytes()
        )
    with pytest.raises(OperationError, match="already exists; exports never overwrite"):
        ops.export_to_local(first, pictures, folder="exports")
