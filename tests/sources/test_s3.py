"""import_from_s3 and export_to_s3, called as a run calls them, against a real S3 server (moto)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image

from orchestrator.assets import ops
from orchestrator.assets.repository import CATALOG
from orchestrator.assets.resources import S3Storage, Workspace
from orchestrator.datasets import Batches, FileDict, FileList, FileRef, Table
from orchestrator.engine import OperationError, PipelineInvalid, RunContext, build_plan
from orchestrator.sources import s3
from services_s3 import ARCHIVE_MEMBERS, SAMPLE_BUCKET, SAMPLE_IMAGES, jpeg, s3_client, zipped


@pytest.fixture
def client(s3_env: dict[str, str]):
    return s3_client(s3_env)


@pytest.fixture
def new_run(tmp_path: Path, s3_env: dict[str, str], monkeypatch: pytest.MonkeyPatch):
    """Make the context of a fresh run; the server's settings come from its environment."""
    for name, value in s3_env.items():
        monkeypatch.setenv(name, value)
    workspace = Workspace(data_root=str(tmp_path / "data"), artifact_root=str(tmp_path / "art"))

    def make() -> RunContext:
        run_dir = tmp_path / "art" / "runs" / str(uuid.uuid4())
        return RunContext(run_dir=run_dir, resources=SimpleNamespace(workspace=workspace, s3=S3Storage.from_env()))

    return make


@pytest.fixture
def ctx(new_run) -> RunContext:
    return new_run()


@pytest.fixture
def bucket(client) -> str:
    """An empty bucket of its own for one test."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name)
    return name


def inside(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


# import_from_s3


def test_a_key_is_imported_under_its_last_segment(ctx, client):
    imported = ops.import_from_s3(ctx, SAMPLE_BUCKET, key="images/Fire/fire_0.jpg")
    assert list(imported.files) == ["fire_0.jpg"]
    path = imported.files["fire_0.jpg"]
    assert inside(path, ctx.node_dir)
    stored = client.get_object(Bucket=SAMPLE_BUCKET, Key="images/Fire/fire_0.jpg")["Body"].read()
    assert path.read_bytes() == stored


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        ("images/", sorted(SAMPLE_IMAGES)),
        ("images/Fire", sorted(SAMPLE_IMAGES)[:2]),  # named after the folder part, never a cut segment
        ("images", sorted(f"images/{name}" for name in SAMPLE_IMAGES)),
    ],
)
def test_a_prefix_imports_its_objects_named_after_its_folder(ctx, prefix, expected):
    imported = ops.import_from_s3(ctx, SAMPLE_BUCKET, prefix=prefix)
    assert list(imported.files) == expected
    for path in imported.files.values():
        assert inside(path, ctx.node_dir)
        assert Image.open(path).format == "JPEG"


def test_listing_follows_every_page(ctx, client, bucket, monkeypatch):
    monkeypatch.setattr(s3, "PAGE_SIZE", 3)
    keys = [f"set/{i:02d}.txt" for i in range(11)] + ["set/sub/deep.txt", "other/x.txt"]
    for key in keys:
        client.put_object(Bucket=bucket, Key=key, Body=key.encode())
    client.put_object(Bucket=bucket, Key="set/empty-folder/", Body=b"")  # a console "folder": skipped
    imported = ops.import_from_s3(ctx, bucket, prefix="set/")
    assert list(imported.files) == sorted(k.removeprefix("set/") for k in keys if k.startswith("set/"))
    assert imported.files["sub/deep.txt"].read_text() == "set/sub/deep.txt"


def test_a_zip_key_is_unpacked_into_its_members(ctx):
    imported = ops.import_from_s3(ctx, SAMPLE_BUCKET, key="archives/images.zip")
    assert list(imported.files) == sorted(ARCHIVE_MEMBERS)
    assert all(inside(p, ctx.node_dir) and Image.open(p).format == "JPEG" for p in imported.files.values())


def test_a_zip_is_kept_whole_when_unpack_is_false(ctx):
    imported = ops.import_from_s3(ctx, SAMPLE_BUCKET, key="archives/images.zip", unpack=False)
    assert list(imported.files) == ["images.zip"]


def test_archives_under_a_prefix_are_named_by_their_key(ctx, client, bucket):
    client.put_object(Bucket=bucket, Key="in/a.zip", Body=zipped({"x.jpg": jpeg((1, 2, 3))}))
    client.put_object(Bucket=bucket, Key="in/b.zip", Body=zipped({"x.jpg": jpeg((4, 5, 6))}))
    client.put_object(Bucket=bucket, Key="in/c.jpg", Body=jpeg((7, 8, 9)))
    imported = ops.import_from_s3(ctx, bucket, prefix="in/")
    assert list(imported.files) == ["a.zip/x.jpg", "b.zip/x.jpg", "c.jpg"]


def test_a_zip_slip_archive_is_refused_and_nothing_lands_outside_the_node_folder(ctx, client, bucket, tmp_path):
    client.put_object(Bucket=bucket, Key="evil.zip", Body=zipped({"ok.txt": b"ok", "../../../escaped.txt": b"gotcha"}))
    with pytest.raises(OperationError, match=r"'\.\./\.\./\.\./escaped\.txt' would be written outside"):
        ops.import_from_s3(ctx, bucket, key="evil.zip")
    assert not [p for p in tmp_path.rglob("escaped.txt")]
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert all(inside(p, ctx.node_dir) for p in written)
    assert not [p for p in written if p.name == "ok.txt"], "a refused archive leaves nothing unpacked"


@pytest.mark.parametrize("key", ["../up.jpg", "/rooted.jpg", "a//b.jpg"])
def test_keys_that_would_make_unsafe_file_names_are_refused(ctx, client, bucket, key):
    client.put_object(Bucket=bucket, Key=key, Body=b"x")
    with pytest.raises(OperationError, match=f"s3://{bucket}/{key}: the name"):
        ops.import_from_s3(ctx, bucket, prefix="")


def test_a_missing_bucket_is_named(ctx, s3_env):
    for where in ({"key": "a.jpg"}, {"prefix": "images/"}):
        with pytest.raises(OperationError, match="bucket 'no-such-bucket-here' does not exist") as failed:
            ops.import_from_s3(ctx, "no-such-bucket-here", **where)
        assert s3_env["AWS_SECRET_ACCESS_KEY"] not in str(failed.value)


def test_a_missing_key_is_named_with_its_bucket(ctx):
    with pytest.raises(OperationError, match=f"no object 'images/nope.jpg' in bucket '{SAMPLE_BUCKET}'$"):
        ops.import_from_s3(ctx, SAMPLE_BUCKET, key="images/nope.jpg")


def test_a_key_that_is_a_folder_says_to_use_prefix(ctx):
    with pytest.raises(OperationError, match="it is a folder: use prefix"):
        ops.import_from_s3(ctx, SAMPLE_BUCKET, key="images/Fire")
    with pytest.raises(OperationError, match="use prefix instead"):
        ops.import_from_s3(ctx, SAMPLE_BUCKET, key="images/Fire/")


def test_an_empty_prefix_is_named(ctx):
    with pytest.raises(OperationError, match=f"no objects under s3://{SAMPLE_BUCKET}/nothing/here/"):
        ops.import_from_s3(ctx, SAMPLE_BUCKET, prefix="nothing/here/")


@pytest.mark.parametrize("where", [{}, {"key": "a.jpg", "prefix": "images/"}])
def test_exactly_one_of_key_and_prefix(ctx, where):
    with pytest.raises(OperationError, match="give exactly one of key .* or prefix"):
        ops.import_from_s3(ctx, SAMPLE_BUCKET, **where)


def test_a_cancelled_run_downloads_nothing_more(ctx):
    ctx.cancelled.set()
    with pytest.raises(OperationError, match="stopped"):
        ops.import_from_s3(ctx, SAMPLE_BUCKET, prefix="images/")
    assert not [p for p in ctx.node_dir.rglob("*") if p.is_file()]


def test_a_bucket_url_is_refused_before_the_run():
    pipeline = [{"operation": "import_from_s3", "parameters": {"bucket": "s3://constellation-samples"}}]
    with pytest.raises(PipelineInvalid) as invalid:
        build_plan(pipeline, CATALOG)
    assert [p.path for p in invalid.value.problems] == ["/instructions/0/parameters/bucket"]


# export_to_s3


def files(folder: Path, contents: dict[str, bytes]) -> FileList:
    refs = []
    for name, content in contents.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        refs.append(FileRef(name, path))
    return FileList(refs)


def read(client, bucket: str, uri: str) -> bytes:
    assert uri.startswith(f"s3://{bucket}/")
    return client.get_object(Bucket=bucket, Key=uri.removeprefix(f"s3://{bucket}/"))["Body"].read()


def test_each_run_exports_under_its_own_keys(new_run, client, bucket, tmp_path):
    data = files(tmp_path / "out", {"Fire/a.jpg": b"first", "b.jpg": b"second"})
    first, second = new_run(), new_run()
    one = ops.export_to_s3(first, data, bucket, prefix="results")
    two = ops.export_to_s3(second, data, bucket, prefix="results")
    assert one.destination == f"s3://{bucket}/results/{first.run_id}/"
    assert [i["uri"] for i in one.items] == [
        f"s3://{bucket}/results/{first.run_id}/Fire/a.jpg",
        f"s3://{bucket}/results/{first.run_id}/b.jpg",
    ]
    assert [i["name"] for i in two.items] == ["Fire/a.jpg", "b.jpg"]
    listed = client.list_objects_v2(Bucket=bucket)["Contents"]
    assert len(listed) == 4
    for exported in (one, two):
        assert [read(client, bucket, i["uri"]) for i in exported.items] == [b"first", b"second"]
    assert one.to_result()["items"] == one.items and one.to_result()["count"] == 2


def test_the_default_prefix_is_constellation(ctx, client, bucket, tmp_path):
    exported = ops.export_to_s3(ctx, files(tmp_path, {"a.jpg": jpeg((9, 9, 9))}), bucket)
    assert exported.items == [{"name": "a.jpg", "uri": f"s3://{bucket}/constellation/{ctx.run_id}/a.jpg"}]
    head = client.head_object(Bucket=bucket, Key=f"constellation/{ctx.run_id}/a.jpg")
    assert head["ContentType"] == "image/jpeg"


def test_a_table_is_exported_as_json_lines(ctx, client, bucket, tmp_path):
    rows = [{"id": 1, "label": "Fire"}, {"id": 2, "label": "Smoke"}]
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    exported = ops.export_to_s3(ctx, Table(path, ["id", "label"], 2), bucket, prefix="tables/")
    [item] = exported.items
    assert item["uri"] == f"s3://{bucket}/tables/{ctx.run_id}/table.jsonl"
    body = read(client, bucket, item["uri"]).decode()
    assert [json.loads(line) for line in body.splitlines()] == rows


def test_batches_and_file_dicts_export_every_file(ctx, client, bucket, tmp_path):
    refs = files(tmp_path, {f"{i}.jpg": bytes([i]) for i in range(5)}).refs
    exported = ops.export_to_s3(ctx, Batches([refs[:2], refs[2:4], refs[4:]]), bucket, prefix="b")
    assert [i["name"] for i in exported.items] == [f"{i}.jpg" for i in range(5)]
    again = ops.export_to_s3(ctx, FileDict({r.name: r.path for r in refs}), bucket, prefix="d")
    assert [read(client, bucket, i["uri"]) for i in again.items] == [bytes([i]) for i in range(5)]


def test_an_export_never_overwrites(ctx, client, bucket, tmp_path):
    data = files(tmp_path, {"a.jpg": b"first"})
    ops.export_to_s3(ctx, data, bucket, prefix="same")
    (tmp_path / "a.jpg").write_bytes(b"second")
    with pytest.raises(OperationError, match=f"s3://{bucket}/same/{ctx.run_id}/a.jpg already exists"):
        ops.export_to_s3(ctx, data, bucket, prefix="same")
    assert client.get_object(Bucket=bucket, Key=f"same/{ctx.run_id}/a.jpg")["Body"].read() == b"first"


def test_an_export_to_a_missing_bucket_is_named(ctx, tmp_path):
    with pytest.raises(OperationError, match="bucket 'no-such-export-bucket' does not exist"):
        ops.export_to_s3(ctx, files(tmp_path, {"a.jpg": b"x"}), "no-such-export-bucket")


def test_a_server_without_credentials_says_what_to_set(ctx, monkeypatch, tmp_path):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(OperationError, match=f"cannot read s3://{SAMPLE_BUCKET}/images/a.jpg: the server has no S3"):
        ops.import_from_s3(ctx, SAMPLE_BUCKET, key="images/a.jpg")


# The run store: with CONSTELLATION_ARTIFACT_ROOT=s3://bucket/prefix, runs keep their kept outputs,
# progress and results under <prefix>/runs/; no import reads there and no export writes there.


@pytest.fixture
def store_run(tmp_path: Path, s3_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, bucket: str):
    """A run of a server whose runs live in s3://<bucket>/team/constellation (the test's own bucket)."""
    for name, value in s3_env.items():
        monkeypatch.setenv(name, value)
    workspace = Workspace(data_root=str(tmp_path / "data"), artifact_root=f"s3://{bucket}/team/constellation/")
    run_dir = tmp_path / "scratch" / "runs" / str(uuid.uuid4())
    return RunContext(run_dir=run_dir, resources=SimpleNamespace(workspace=workspace, s3=S3Storage.from_env()))


REFUSED = "CONSTELLATION_ARTIFACT_ROOT keeps runs under s3://{bucket}/team/constellation/runs/; choose another"


@pytest.mark.parametrize(
    "prefix",
    [
        "team/constellation/runs",
        "team/constellation/runs/",
        "/team/constellation/runs",
        "team//constellation/runs",
        "team/./constellation/runs",
        "team/x/../constellation/runs",
    ],
)
def test_an_export_into_the_run_store_is_refused(store_run, client, bucket, tmp_path, prefix):
    data = files(tmp_path, {"kept/manifest.json": b"{}"})  # what would land on the run's own manifest
    with pytest.raises(OperationError, match=REFUSED.format(bucket=bucket)):
        ops.export_to_s3(store_run, data, bucket, prefix=prefix)
    assert client.list_objects_v2(Bucket=bucket).get("KeyCount") == 0, "nothing was written"


def test_an_export_beside_the_run_store_is_written(store_run, client, bucket, tmp_path):
    """The default prefix (constellation/<run id>/) and the store's own prefix outside runs/ stay usable."""
    data = files(tmp_path, {"a.jpg": b"x"})
    assert ops.export_to_s3(store_run, data, bucket).destination == f"s3://{bucket}/constellation/{store_run.run_id}/"
    exported = ops.export_to_s3(store_run, data, bucket, prefix="team/constellation/exports")
    assert exported.destination == f"s3://{bucket}/team/constellation/exports/{store_run.run_id}/"
    assert ops.export_to_s3(store_run, data, bucket, prefix="team/constellation/runsheet").items


@pytest.mark.parametrize(
    "where",
    [
        {"prefix": ""},
        {"prefix": "team/"},
        {"prefix": "team/constellation/ru"},
        {"prefix": "team/constellation/runs/"},
        {"prefix": "team//constellation/runs/x"},
        {"key": "team/constellation/runs/x/kept/manifest.json"},
        {"key": "team/constellation/./runs/x/results.json"},
    ],
)
def test_an_import_from_the_run_store_is_refused(store_run, client, bucket, where):
    client.put_object(Bucket=bucket, Key="team/constellation/runs/x/results.json", Body=b"{}")
    with pytest.raises(OperationError, match=REFUSED.format(bucket=bucket)):
        ops.import_from_s3(store_run, bucket, **where)


def test_an_import_beside_the_run_store_reads(store_run, client, bucket):
    client.put_object(Bucket=bucket, Key="team/inputs/a.txt", Body=b"a")
    assert list(ops.import_from_s3(store_run, bucket, prefix="team/inputs/").files) == ["a.txt"]
    assert list(ops.import_from_s3(store_run, SAMPLE_BUCKET, prefix="images/Fire/").files)
