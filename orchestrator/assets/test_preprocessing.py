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
from orchestrator.datasets import FileDict, FileList
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
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
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


# Issue 11: small inputs, unbounded outputs (item 9), and names that overwrite each other (item 10)


def with_settings(ctx: RunContext, **settings) -> RunContext:
    workspace = ctx.resources.workspace.model_copy(update=settings)
    return RunContext(run_dir=ctx.run_dir, resources=SimpleNamespace(workspace=workspace), node_key=ctx.node_key)


def test_the_tile_count_is_capped_before_any_tile_is_written(ctx: RunContext, data: Path):
    """Before: a 177-byte PNG (100,001 × 1) cut into 1 × 1 tiles wrote 100,001 files."""
    Image.new("L", (100_001, 1)).save(data / "strip.png", optimize=True)
    assert (data / "strip.png").stat().st_size < 300
    strip = FileDict({"strip.png": data / "strip.png"})
    with pytest.raises(
        OperationError,
        match=r"'strip.png' \(100001×1\) would make 100001 tiles of 1×1 with overlap 0, "
        r"over the limit of 10000 per image \(the server's "
        r"CONSTELLATION_MAX_TILES_PER_IMAGE\)",
    ):
        ops.tile_image(ctx, strip, tile_width=1, tile_height=1)
    assert not any(p.is_file() for p in ctx.node_dir.rglob("*")), "no tile was written"


def test_the_tile_cap_is_a_server_setting(ctx: RunContext, pictures: FileDict):
    scene = ops.filter_files(None, pictures, pattern="a.png")  # 100 × 60: 6 tiles of 40 × 40 with overlap 10
    with pytest.raises(OperationError, match="would make 6 tiles .* over the limit of 5 per image"):
        ops.tile_image(with_settings(ctx, max_tiles_per_image=5), scene, tile_width=40, tile_height=40, overlap=10)
    assert len(ops.tile_image(with_settings(ctx, max_tiles_per_image=6), scene, 40, 40, 10)) == 6


def test_resize_output_is_held_to_the_pixel_cap(ctx: RunContext, pictures: FileDict):
    """Before: with a cap of 1,000,000 pixels, resize_image wrote a 2000 × 2000 image."""
    capped = with_settings(ctx, max_image_pixels=1_000_000)
    with pytest.raises(OperationError, match=r"an output of 2000×2000 pixels is over the limit of 1000000"):
        ops.resize_image(capped, images_only(pictures), width=2000, height=2000)
    assert len(ops.resize_image(capped, images_only(pictures), width=1000, height=1000)) == 3


def test_normalize_streams_in_bands_with_the_same_values(ctx: RunContext, data: Path, monkeypatch):
    from orchestrator.transforms import images

    gradient(123, 77).save(data / "odd.png")
    monkeypatch.setattr(images, "NORMALIZE_BAND_PIXELS", 1000)  # 8 rows a band: many bands, a short last one
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    [ref] = ops.normalize_image(ctx, FileDict({"odd.png": data / "odd.png"}), mean=mean, std=std).refs
    with Image.open(data / "odd.png") as image:
        pixels = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    expected = ((pixels - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)).transpose(2, 0, 1)
    assert np.array_equal(np.load(ref.path), expected)
    grey = ops.normalize_image(node(ctx, "grey"), FileDict({"odd.png": data / "odd.png"}), mean=[0.5], std=[0.5])
    assert np.load(grey.refs[0].path).shape == (1, 77, 123)


def test_normalize_memory_is_bounded_by_the_8_bit_image(ctx: RunContext, data: Path):
    """Before: about 32 bytes a pixel (+507 MB for 16 Mpx); now the 8-bit pixels and one band of floats."""
    import tracemalloc

    side = 2000
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(data / "big.png")
    tracemalloc.start()
    try:
        [ref] = ops.normalize_image(ctx, FileDict({"big.png": data / "big.png"})).refs
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert np.load(ref.path, mmap_mode="r").shape == (3, side, side)
    assert peak < 8 * side * side, f"{peak / side / side:.1f} bytes a pixel"


def test_normalize_needs_one_or_three_channels(ctx: RunContext, pictures: FileDict):
    with pytest.raises(OperationError, match="give 1 \\(grey images\\) or 3 \\(RGB\\)"):
        ops.normalize_image(ctx, images_only(pictures), mean=[0.5, 0.5], std=[0.5, 0.5])


def test_converted_names_never_overwrite_each_other(ctx: RunContext, data: Path):
    """Before: a.png and a.jpg both became a.jpg, and one image was silently lost."""
    Image.new("RGB", (10, 10), "red").save(data / "a.png")
    Image.new("RGB", (10, 10), "blue").save(data / "a.jpg")
    twins = FileDict({"a.png": data / "a.png", "a.jpg": data / "a.jpg"})
    converted = ops.convert_image(ctx, twins, format="JPEG")
    assert sorted(r.name for r in converted) == ["a.jpg", "a.png.jpg"]
    colours = {}
    for ref in converted:
        with Image.open(ref.path) as image:
            colours[ref.name] = image.getpixel((5, 5))
    assert colours["a.png.jpg"][0] > 200 and colours["a.jpg"][2] > 200  # red from a.png, blue from a.jpg
    tiffs = ops.convert_image(node(ctx, "tif"), twins, format="TIFF")
    assert sorted(r.name for r in tiffs) == ["a.jpg.tif", "a.png.tif"]
    arrays = ops.normalize_image(node(ctx, "npy"), twins)
    assert sorted(r.name for r in arrays.refs) == ["a.jpg.npy", "a.png.npy"]
    assert len({r.path for r in arrays.refs}) == 2


def test_two_images_of_the_same_name_fail_clearly(ctx: RunContext, data: Path):
    from orchestrator.datasets import FileRef

    Image.new("RGB", (10, 10)).save(data / "x.png")
    same = FileList([FileRef("x.png", data / "x.png"), FileRef("x.png", data / "x.png")])
    for op in (
        lambda: ops.resize_image(ctx, same, width=5, height=5),
        lambda: ops.convert_image(ctx, same),
        lambda: ops.tile_image(ctx, same, 5, 5),
        lambda: ops.normalize_image(ctx, same),
    ):
        with pytest.raises(OperationError, match="two images are named 'x.png'; their outputs would overwrite"):
            op()


def node(ctx: RunContext, key: str) -> RunContext:
    return RunContext(run_dir=ctx.run_dir, resources=ctx.resources, node_key=key)
