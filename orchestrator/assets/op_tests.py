"""The ops, called directly as a run calls them: real files, a real HTTP server, real images."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image

from orchestrator.assets import ops
from orchestrator.assets.repository import CATALOG
from orchestrator.assets.resources import Workspace
from orchestrator.datasets import FileDict, FileList, FileRef
from orchestrator.engine import OperationError, RunContext, build_plan, execute


def write(path: Path, content: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def picture(path: Path, size: tuple[int, int], fmt: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = "RGBA" if fmt == "PNG" else "RGB"
    Image.new(mode, size, (200, 30, 90)).save(path, format=fmt)
    return path


def names(data: FileDict | FileList) -> list[str]:
    return list(data.files) if isinstance(data, FileDict) else [ref.name for ref in data]


# import_from_local


def test_import_of_one_file(ctx, data):
    photo = write(data / "photos" / "cat.jpg", b"meow")
    imported = ops.import_from_local(ctx, "photos/cat.jpg")
    assert imported.files == {"cat.jpg": photo.resolve()}


def test_import_of_a_folder_is_recursive_with_relative_names(ctx, data):
    write(data / "set" / "b.jpg", b"b")
    write(data / "set" / "sub" / "a.jpg", b"a")
    write(data / "set" / "sub" / "deeper" / "c.png", b"c")
    write(data / "elsewhere.jpg")
    imported = ops.import_from_local(ctx, "set")
    assert names(imported) == ["b.jpg", "sub/a.jpg", "sub/deeper/c.png"]
    assert imported.files["sub/a.jpg"].read_bytes() == b"a"


@pytest.mark.parametrize("path", ["../secret.txt", "set/../../secret.txt"])
def test_paths_leading_out_of_the_data_root_are_refused(ctx, data, path):
    write(data.parent / "secret.txt", b"secret")
    write(data / "set" / "a.jpg")
    with pytest.raises(OperationError, match="outside the data root"):
        ops.import_from_local(ctx, path)


def test_absolute_paths_are_refused(ctx, data):
    secret = write(data.parent / "secret.txt", b"secret")
    with pytest.raises(OperationError, match="relative to the data root"):
        ops.import_from_local(ctx, str(secret))


def test_a_link_pointing_outside_the_data_root_is_refused(ctx, data):
    secret = write(data.parent / "secret.txt", b"secret")
    write(data / "set" / "a.jpg")
    os.symlink(secret, data / "set" / "leak.txt")
    with pytest.raises(OperationError, match="'leak.txt' is a link that points outside the data root"):
        ops.import_from_local(ctx, "set")
    with pytest.raises(OperationError, match="link that points outside the data root"):
        ops.import_from_local(ctx, "set/leak.txt")


def test_a_linked_folder_pointing_outside_the_data_root_is_refused(ctx, data):
    write(data.parent / "private" / "key.pem")
    write(data / "set" / "a.jpg")
    os.symlink(data.parent / "private", data / "set" / "private")
    with pytest.raises(OperationError, match="outside the data root"):
        ops.import_from_local(ctx, "set")


def test_a_link_pointing_inside_the_data_root_is_allowed(ctx, data):
    original = write(data / "store" / "a.jpg", b"a")
    write(data / "set" / "b.jpg", b"b")
    os.symlink(original, data / "set" / "a-link.jpg")
    imported = ops.import_from_local(ctx, "set")
    assert names(imported) == ["a-link.jpg", "b.jpg"]
    assert imported.files["a-link.jpg"].read_bytes() == b"a"


def test_import_of_a_single_linked_file_keeps_the_link_name(ctx, data):
    original = write(data / "store" / "blob-1234", b"a")
    os.symlink(original, data / "photo.jpg")
    assert names(ops.import_from_local(ctx, "photo.jpg")) == ["photo.jpg"]


def test_a_missing_path_is_reported(ctx, data):
    with pytest.raises(OperationError, match="'nope/a.jpg' does not exist under the data root"):
        ops.import_from_local(ctx, "nope/a.jpg")


def test_an_empty_folder_is_reported(ctx, data):
    (data / "empty").mkdir()
    with pytest.raises(OperationError, match="holds no files"):
        ops.import_from_local(ctx, "empty")


# import_from_url


def test_download_lands_in_the_run_folder_under_its_name(ctx, site):
    folder, base = site
    write(folder / "img" / "photo.jpg", b"\xff\xd8 jpeg bytes")
    downloaded = ops.import_from_url(ctx, f"{base}/img/photo.jpg")
    [(name, path)] = downloaded.files.items()
    assert name == "photo.jpg"
    assert path.name == "photo.jpg"
    assert path.is_relative_to(ctx.run_dir)
    assert path.read_bytes() == b"\xff\xd8 jpeg bytes"


def test_http_404_is_an_operation_error(ctx, site):
    _, base = site
    with pytest.raises(OperationError, match="HTTP 404"):
        ops.import_from_url(ctx, f"{base}/missing.jpg")


def test_a_non_http_url_is_refused(ctx):
    with pytest.raises(OperationError, match="not an http"):
        ops.import_from_url(ctx, "file:///etc/passwd")


def test_a_download_over_the_size_limit_is_refused_and_leaves_nothing(tmp_path, data, site):
    folder, base = site
    write(folder / "big.bin", b"0" * 5000)
    workspace = Workspace(
        data_root=str(data), artifact_root=str(tmp_path / "art"), url_max_bytes=1000, url_allow_private=True
    )
    ctx = RunContext(run_dir=tmp_path / "run", resources=SimpleNamespace(workspace=workspace))
    with pytest.raises(OperationError, match="larger than the limit of 1000 bytes"):
        ops.import_from_url(ctx, f"{base}/big.bin")
    assert [p for p in ctx.run_dir.rglob("*") if p.is_file()] == []


def test_a_download_exactly_at_the_size_limit_is_kept(tmp_path, data, site):
    folder, base = site
    write(folder / "fits.bin", b"0" * 1000)
    workspace = Workspace(
        data_root=str(data), artifact_root=str(tmp_path / "art"), url_max_bytes=1000, url_allow_private=True
    )
    ctx = RunContext(run_dir=tmp_path / "run", resources=SimpleNamespace(workspace=workspace))
    assert ops.import_from_url(ctx, f"{base}/fits.bin").files["fits.bin"].stat().st_size == 1000


# dict_to_list


def test_dict_to_list_orders_files_by_name(ctx, data):
    for name in ["c.jpg", "a.jpg", "sub/b.jpg", "B.jpg"]:
        write(data / "set" / name, name.encode())
    listed = ops.dict_to_list(ctx, ops.import_from_local(ctx, "set"))
    assert names(listed) == ["B.jpg", "a.jpg", "c.jpg", "sub/b.jpg"]
    assert [ref.path.read_bytes() for ref in listed] == [b"B.jpg", b"a.jpg", b"c.jpg", b"sub/b.jpg"]


# resize_image


def test_resize_gives_exact_sizes_and_keeps_format_names_and_order(ctx, data):
    refs = [
        FileRef("z.jpg", picture(data / "z.jpg", (640, 480), "JPEG")),
        FileRef("sub/a.png", picture(data / "sub" / "a.png", (30, 90), "PNG")),
        FileRef("m.jpg", picture(data / "m.jpg", (17, 13), "JPEG")),
    ]
    resized = ops.resize_image(ctx, FileList(refs), width=64, height=40)
    assert names(resized) == ["z.jpg", "sub/a.png", "m.jpg"]
    found = []
    for ref in resized:
        assert ref.path.is_relative_to(ctx.run_dir)
        with Image.open(ref.path) as image:
            found.append((image.size, image.format))
    assert found == [((64, 40), "JPEG"), ((64, 40), "PNG"), ((64, 40), "JPEG")]
    with Image.open(data / "z.jpg") as original:
        assert original.size == (640, 480)  # the source is never touched


def test_resize_accepts_an_import_directly(ctx, data):
    picture(data / "set" / "b.png", (10, 10), "PNG")
    picture(data / "set" / "a.jpg", (10, 10), "JPEG")
    resized = ops.resize_image(ctx, ops.import_from_local(ctx, "set"), width=3, height=5)
    assert names(resized) == ["a.jpg", "b.png"]


def test_a_file_that_is_not_an_image_names_the_file(ctx, data):
    picture(data / "set" / "a.jpg", (10, 10), "JPEG")
    write(data / "set" / "notes.txt", b"not an image")
    with pytest.raises(OperationError, match="'notes.txt' is not a readable image"):
        ops.resize_image(ctx, ops.import_from_local(ctx, "set"), width=3, height=3)


# batch_formatted_data


def test_five_files_in_batches_of_two_lose_and_repeat_nothing(ctx, data):
    for i in range(5):
        write(data / "set" / f"{i}.jpg")
    listed = ops.dict_to_list(ctx, ops.import_from_local(ctx, "set"))
    batches = ops.batch_formatted_data(ctx, listed, batch_size=2)
    assert [len(batch) for batch in batches.batches] == [2, 2, 1]
    assert [ref.name for batch in batches.batches for ref in batch] == [f"{i}.jpg" for i in range(5)]
    assert batches.count == 5


@pytest.mark.parametrize(("count", "size", "expected"), [(4, 2, [2, 2]), (3, 32, [3]), (1, 1, [1])])
def test_batch_sizes(ctx, data, count, size, expected):
    for i in range(count):
        write(data / "set" / f"{i}.jpg")
    batches = ops.batch_formatted_data(ctx, ops.import_from_local(ctx, "set"), batch_size=size)
    assert [len(batch) for batch in batches.batches] == expected


# the ops together, as a run uses them


def test_a_pipeline_of_the_real_ops_runs(ctx, data):
    for i, fmt in enumerate(["JPEG", "PNG", "JPEG"]):
        picture(data / "set" / f"{i}.{fmt.lower()}", (50 + i, 40), fmt)
    imported = {"operation": "import_from_local", "parameters": {"path": "set"}}
    listed = {"operation": "dict_to_list", "parameters": {"data": imported}}
    resized = {"operation": "resize_image", "parameters": {"data": listed, "width": 8, "height": 6}}
    batched = {"operation": "batch_formatted_data", "parameters": {"data": resized, "batch_size": 2}}
    [batches] = execute(build_plan([batched], CATALOG), CATALOG, ctx)
    assert [[ref.name for ref in batch] for batch in batches.batches] == [["0.jpeg", "1.png"], ["2.jpeg"]]
    for batch in batches.batches:
        for ref in batch:
            with Image.open(ref.path) as image:
                assert image.size == (8, 6)
