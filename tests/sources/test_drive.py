"""import_from_google_drive, called as a run calls it: the real Drive client against the local fake."""

from __future__ import annotations

import io
import logging
import os
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image

from fake_drive import FakeDrive, ServiceAccount
from orchestrator.assets import ops
from orchestrator.assets.repository import CATALOG
from orchestrator.assets.resources import GoogleDrive, Workspace
from orchestrator.engine import OperationError, PipelineInvalid, RunContext, build_plan
from orchestrator.sources import drive
from services_drive import SAMPLE_FOLDER_ID, SEED_FILE_ID


@pytest.fixture
def service_account_env(monkeypatch: pytest.MonkeyPatch, drive_account: ServiceAccount) -> None:
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(drive_account.key_file))
    monkeypatch.delenv("CONSTELLATION_GOOGLE_API_KEY", raising=False)


@pytest.fixture
def api_key_env(monkeypatch: pytest.MonkeyPatch, fake_drive: FakeDrive) -> str:
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setenv("CONSTELLATION_GOOGLE_API_KEY", fake_drive.api_key)
    return fake_drive.api_key


@pytest.fixture
def no_credentials_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.delenv("CONSTELLATION_GOOGLE_API_KEY", raising=False)


def make_ctx(
    tmp_path: Path, fake: FakeDrive, download_url: str | None = None, download_max_bytes: int = 2**31, **limits: int
) -> RunContext:
    workspace = Workspace(data_root=str(tmp_path / "data"), artifact_root=str(tmp_path / "art"), **limits)
    google_drive = GoogleDrive(
        api_endpoint=fake.api_endpoint,
        download_url=download_url or fake.download_url,
        download_max_bytes=download_max_bytes,
    )
    resources = SimpleNamespace(workspace=workspace, google_drive=google_drive)
    return RunContext(run_dir=tmp_path / "run", resources=resources)


@pytest.fixture
def ctx(tmp_path: Path, fake_drive: FakeDrive, service_account_env: None) -> RunContext:
    return make_ctx(tmp_path, fake_drive)


def zip_bytes(members: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> bytes:
    """A zip holding `members` under exactly the names given (even ones that climb out: zip-slip)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, content in members.items():
            archive.writestr(zipfile.ZipInfo(name), content, compress_type=compression)
    return buffer.getvalue()


def seed_names(fake: FakeDrive) -> list[str]:
    with zipfile.ZipFile(io.BytesIO(fake.items[SEED_FILE_ID].content or b"")) as archive:
        return sorted(archive.namelist())


# one file


def test_a_plain_file_arrives_under_its_drive_name_in_the_run_folder(ctx: RunContext, fake_drive: FakeDrive):
    file_id = fake_drive.add_file("photo.jpg", b"\xff\xd8 jpeg bytes", mime_type="image/jpeg")
    imported = ops.import_from_google_drive(ctx, file_id=file_id)
    [(name, path)] = imported.files.items()
    assert name == "photo.jpg" and path.name == "photo.jpg"
    assert path.is_relative_to(ctx.run_dir)
    assert path.read_bytes() == b"\xff\xd8 jpeg bytes"
    seen = fake_drive.seen(file_id)
    assert [s.query.get("alt") for s in seen] == ["json", "media"]
    assert all(s.query["supportsAllDrives"] == "true" for s in seen)
    assert all(s.headers["authorization"].removeprefix("Bearer ") in fake_drive.issued_tokens for s in seen)


def test_the_seed_zip_is_unpacked_into_its_labelled_images(ctx: RunContext, fake_drive: FakeDrive):
    imported = ops.import_from_google_drive(ctx, file_id=SEED_FILE_ID)
    assert list(imported.files) == seed_names(fake_drive)
    assert {name.split("/")[0] for name in imported.files} == {"Fire", "Normal", "Smoke"}
    for path in imported.files.values():
        with Image.open(path) as image:
            assert image.format == "JPEG"


def test_unpack_false_keeps_the_zip_as_one_file(ctx: RunContext):
    imported = ops.import_from_google_drive(ctx, file_id=SEED_FILE_ID, unpack=False)
    [(name, path)] = imported.files.items()
    assert name == "fire-dataset.zip" and zipfile.is_zipfile(path)


def test_drive_names_that_are_not_file_names_are_made_safe(ctx: RunContext, fake_drive: FakeDrive):
    file_id = fake_drive.add_file("../../etc/passwd", b"not really")
    [(name, path)] = ops.import_from_google_drive(ctx, file_id=file_id).files.items()
    assert "/" not in name and path.is_relative_to(ctx.run_dir)


# folders


def test_a_folder_is_listed_page_by_page_subfolders_included(ctx: RunContext, fake_drive: FakeDrive, caplog):
    caplog.set_level(logging.INFO)
    imported = ops.import_from_google_drive(ctx, folder_id=SAMPLE_FOLDER_ID)
    assert list(imported.files) == [
        "Normal/normal_0.jpg",
        "Normal/normal_1.jpg",
        "fire_0.jpg",
        "fire_1.jpg",
        "smoke_0.jpg",
        "smoke_1.jpg",
    ]
    pages = [s.query.get("pageToken") for s in fake_drive.listings(SAMPLE_FOLDER_ID)]
    assert pages[0] is None and len(pages) >= 2 and all(pages[1:])  # 6 items, 3 per page
    assert "skipped 'notes about the images'" in caplog.text and "Google document" in caplog.text


def test_archives_in_a_folder_are_unpacked_under_their_own_name(ctx: RunContext, fake_drive: FakeDrive):
    folder = fake_drive.add_folder("mixed")
    fake_drive.add_file("set.zip", zip_bytes({"a/1.jpg": b"1", "2.jpg": b"2"}), parent=folder)
    fake_drive.add_file("loose.jpg", b"3", parent=folder)
    imported = ops.import_from_google_drive(ctx, folder_id=folder)
    assert {name: path.read_bytes() for name, path in imported.files.items()} == {
        "loose.jpg": b"3",
        "set.zip/2.jpg": b"2",
        "set.zip/a/1.jpg": b"1",
    }


def test_two_drive_files_of_the_same_name_are_both_kept(ctx: RunContext, fake_drive: FakeDrive):
    folder = fake_drive.add_folder("twins")
    first = fake_drive.add_file("same.jpg", b"first", parent=folder)
    second = fake_drive.add_file("same.jpg", b"second", parent=folder)
    imported = ops.import_from_google_drive(ctx, folder_id=folder)
    assert sorted(p.read_bytes() for p in imported.files.values()) == [b"first", b"second"]
    assert "same.jpg" in imported.files and any(first in n or second in n for n in imported.files)


def test_a_folder_of_only_google_documents_is_reported(ctx: RunContext, fake_drive: FakeDrive):
    folder = fake_drive.add_folder("docs only")
    fake_drive.add_document("a spreadsheet", parent=folder)
    with pytest.raises(OperationError, match=f"folder '{folder}' .*holds no downloadable files"):
        ops.import_from_google_drive(ctx, folder_id=folder)


# what the user gets wrong


def test_a_missing_file_names_the_id_and_googles_message(ctx: RunContext, drive_account: ServiceAccount):
    missing = "1missingFileIdxxxxxxxxxxxx"
    with pytest.raises(OperationError) as failure:
        ops.import_from_google_drive(ctx, file_id=missing)
    message = str(failure.value)
    assert f"no file '{missing}'" in message and f"File not found: {missing}." in message
    assert drive_account.email in message  # whom to share it with


def test_a_missing_folder_names_the_id(ctx: RunContext):
    with pytest.raises(OperationError, match="no folder '1missingFolderxxxxxxx'.*HTTP 404"):
        ops.import_from_google_drive(ctx, folder_id="1missingFolderxxxxxxx")


def test_ids_of_the_wrong_kind_say_which_parameter_to_use(ctx: RunContext, fake_drive: FakeDrive):
    with pytest.raises(OperationError, match="is a folder .*give it as folder_id"):
        ops.import_from_google_drive(ctx, file_id=SAMPLE_FOLDER_ID)
    with pytest.raises(OperationError, match="not a folder; give it as file_id"):
        ops.import_from_google_drive(ctx, folder_id=SEED_FILE_ID)
    document = fake_drive.add_document("meeting notes")
    with pytest.raises(OperationError, match="'meeting notes'.*is a Google document"):
        ops.import_from_google_drive(ctx, file_id=document)


@pytest.mark.parametrize("given", [{}, {"file_id": SEED_FILE_ID, "folder_id": SAMPLE_FOLDER_ID}])
def test_exactly_one_of_file_id_and_folder_id(ctx: RunContext, given: dict):
    with pytest.raises(OperationError, match="exactly one of file_id .* or folder_id"):
        ops.import_from_google_drive(ctx, **given)


@pytest.mark.parametrize("bad", ["short", "has space in it", "quote'injection'x", "../../../etc/passwd"])
def test_a_malformed_id_fails_validation_before_launch(bad: str):
    for name in ("file_id", "folder_id"):
        with pytest.raises(PipelineInvalid) as invalid:
            build_plan([{"operation": "import_from_google_drive", "parameters": {name: bad}}], CATALOG)
        [problem] = invalid.value.problems
        assert problem.path == f"/instructions/0/parameters/{name}" and "does not match" in problem.message


# large files, cancelling, hostile archives


def test_a_large_file_streams_in_ranged_chunks(ctx: RunContext, fake_drive: FakeDrive, monkeypatch):
    monkeypatch.setattr(drive, "CHUNK_SIZE", 64 * 1024)
    content = os.urandom(300_000)
    file_id = fake_drive.add_file("scene.tif", content)
    [path] = ops.import_from_google_drive(ctx, file_id=file_id).files.values()
    assert path.read_bytes() == content
    ranges = [s.headers.get("range") for s in fake_drive.seen(file_id) if s.query.get("alt") == "media"]
    assert ranges == [f"bytes={start}-{start + 65535}" for start in range(0, 300_000, 65536)]


def test_an_empty_file_is_downloaded(ctx: RunContext, fake_drive: FakeDrive):
    file_id = fake_drive.add_file("empty.txt", b"")
    [path] = ops.import_from_google_drive(ctx, file_id=file_id).files.values()
    assert path.read_bytes() == b""


def test_cancel_stops_between_chunks_and_leaves_no_partial_file(ctx: RunContext, fake_drive: FakeDrive, monkeypatch):
    monkeypatch.setattr(drive, "CHUNK_SIZE", 64 * 1024)
    file_id = fake_drive.add_file("big.bin", os.urandom(400_000))
    fake_drive.after_range = lambda seen: ctx.cancelled.set() if seen.file_id == file_id else None
    try:
        with pytest.raises(OperationError, match="stopped"):
            ops.import_from_google_drive(ctx, file_id=file_id)
    finally:
        fake_drive.after_range = None
    assert len([s for s in fake_drive.seen(file_id) if s.query.get("alt") == "media"]) == 1  # of 7 chunks
    assert [p for p in ctx.run_dir.rglob("*") if p.is_file()] == []


def test_a_zip_slip_archive_is_refused(ctx: RunContext, fake_drive: FakeDrive):
    file_id = fake_drive.add_file("slip.zip", zip_bytes({"ok.jpg": b"1", "../../escaped.jpg": b"2"}))
    with pytest.raises(OperationError, match="'../../escaped.jpg' would be written outside its folder"):
        ops.import_from_google_drive(ctx, file_id=file_id)
    assert not list(ctx.run_dir.parent.rglob("escaped.jpg"))


def test_a_zip_bomb_is_refused(tmp_path: Path, fake_drive: FakeDrive, service_account_env: None):
    ctx = make_ctx(tmp_path, fake_drive, archive_max_bytes=1_000_000)
    bomb = zip_bytes({"zeros.bin": bytes(5_000_000)}, zipfile.ZIP_DEFLATED)
    assert len(bomb) < 10_000
    file_id = fake_drive.add_file("bomb.zip", bomb)
    with pytest.raises(OperationError, match="unpacks to more than 1000000 bytes"):
        ops.import_from_google_drive(ctx, file_id=file_id)


# credentials


def test_the_service_account_signs_in_with_the_read_only_scope(
    ctx: RunContext, drive_account: ServiceAccount, fake_drive: FakeDrive
):
    ops.import_from_google_drive(ctx, file_id=SEED_FILE_ID, unpack=False)
    claims = [c for c in fake_drive.token_claims if c["iss"] == drive_account.email]
    assert claims and claims[-1]["scope"] == "https://www.googleapis.com/auth/drive.readonly"


def test_an_api_key_reads_public_files_and_never_shows(
    tmp_path: Path, fake_drive: FakeDrive, api_key_env: str, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.DEBUG)  # the client logs every request URL at debug level
    ctx = make_ctx(tmp_path, fake_drive)
    file_id = fake_drive.add_file("public.jpg", b"public")
    [path] = ops.import_from_google_drive(ctx, file_id=file_id).files.values()
    assert path.read_bytes() == b"public"
    seen = fake_drive.seen(file_id)
    assert seen and all(s.query.get("key") == api_key_env and "authorization" not in s.headers for s in seen)
    with pytest.raises(OperationError) as failure:
        ops.import_from_google_drive(ctx, file_id="1missingPublicFilexxxxxx")
    assert "1missingPublicFilexxxxxx" in str(failure.value) and "API key" in str(failure.value)
    assert api_key_env not in str(failure.value)
    assert "URL being requested" in caplog.text and "key=<redacted>" in caplog.text
    assert api_key_env not in caplog.text


def test_no_secret_reaches_messages_or_logs(
    ctx: RunContext, fake_drive: FakeDrive, drive_account: ServiceAccount, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.DEBUG)
    ops.import_from_google_drive(ctx, folder_id=SAMPLE_FOLDER_ID)
    with pytest.raises(OperationError) as failure:
        ops.import_from_google_drive(ctx, file_id="1missingFileIdyyyyyyyyyy")
    secrets = [*fake_drive.issued_tokens, *drive_account.private_key_pem.splitlines()[1:-1]]
    for secret in secrets:
        assert secret not in caplog.text and secret not in str(failure.value)


def test_with_credentials_the_api_is_used_not_the_public_endpoint(ctx: RunContext, fake_drive: FakeDrive):
    file_id = fake_drive.add_file("shared.jpg", b"shared with the service account")
    ops.import_from_google_drive(ctx, file_id=file_id)
    assert fake_drive.seen(file_id) and fake_drive.public_requests(file_id) == []


@pytest.mark.parametrize("content", [None, "{not json", '{"type": "service_account"}'])
def test_an_unusable_key_file_is_named(tmp_path: Path, fake_drive: FakeDrive, monkeypatch, content: str | None):
    key_file = tmp_path / "key.json"
    if content is not None:
        key_file.write_text(content)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key_file))
    with pytest.raises(OperationError, match=f"GOOGLE_APPLICATION_CREDENTIALS names {key_file}"):
        ops.import_from_google_drive(make_ctx(tmp_path, fake_drive), file_id=SEED_FILE_ID)


def test_a_key_google_refuses_is_reported_without_the_key(tmp_path: Path, fake_drive: FakeDrive, monkeypatch):
    account = fake_drive.service_account(tmp_path)
    del fake_drive.accounts[next(k for k, a in fake_drive.accounts.items() if a is account)]  # a revoked key
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(account.key_file))
    with pytest.raises(OperationError) as failure:
        ops.import_from_google_drive(make_ctx(tmp_path, fake_drive), file_id=SEED_FILE_ID)
    message = str(failure.value)
    assert f"did not accept this server's service account {account.email}" in message
    assert SEED_FILE_ID in message and "invalid_grant" in message
    assert all(line not in message for line in account.private_key_pem.splitlines()[1:-1])


# without credentials: files shared with "anyone with the link", from Drive's public download endpoint


@pytest.fixture
def public_ctx(tmp_path: Path, fake_drive: FakeDrive, no_credentials_env: None) -> RunContext:
    return make_ctx(tmp_path, fake_drive)


def test_the_seed_pipelines_public_zip_downloads_without_credentials(public_ctx: RunContext, fake_drive: FakeDrive):
    """The original pipelines' import_from_google_drive(file_id): no key, no account, as gdown did."""
    imported = ops.import_from_google_drive(public_ctx, file_id=SEED_FILE_ID)
    assert list(imported.files) == seed_names(fake_drive)
    assert all(path.is_relative_to(public_ctx.run_dir) for path in imported.files.values())
    requests = fake_drive.public_requests(SEED_FILE_ID)
    assert [(s.path, s.query.get("export")) for s in requests][-1] == ("/download", "download")
    assert all("authorization" not in s.headers and "key" not in s.query for s in requests)


def test_a_public_file_keeps_its_drive_name(public_ctx: RunContext, fake_drive: FakeDrive):
    file_id = fake_drive.add_file("Feu de forêt n°1.jpg", b"\xff\xd8 public bytes", mime_type="image/jpeg")
    [(name, path)] = ops.import_from_google_drive(public_ctx, file_id=file_id).files.items()
    assert name == "Feu de forêt n°1.jpg" and path.read_bytes() == b"\xff\xd8 public bytes"


def test_a_large_file_is_confirmed_through_the_virus_scan_page(public_ctx: RunContext, fake_drive: FakeDrive):
    content = os.urandom(fake_drive.confirm_above + 100_000)
    file_id = fake_drive.add_file("scene.tif", content)
    [path] = ops.import_from_google_drive(public_ctx, file_id=file_id).files.values()
    assert path.name == "scene.tif" and path.read_bytes() == content
    first, confirmed = fake_drive.public_requests(file_id)
    assert "confirm" not in first.query
    assert confirmed.query == {"id": file_id, "export": "download", "confirm": "t", "uuid": fake_drive.issued_uuids[-1]}


def test_the_old_share_link_endpoint_redirects_and_still_works(
    tmp_path: Path, fake_drive: FakeDrive, no_credentials_env: None
):
    """drive.google.com/uc?export=download&id=…, the URL gdown and the original pipelines used."""
    ctx = make_ctx(tmp_path, fake_drive, download_url=fake_drive.url + "/uc")
    content = os.urandom(fake_drive.confirm_above + 1)
    file_id = fake_drive.add_file("big.bin", content)
    [path] = ops.import_from_google_drive(ctx, file_id=file_id, unpack=False).files.values()
    assert path.read_bytes() == content
    assert [s.path for s in fake_drive.public_requests(file_id)] == ["/uc", "/download", "/download"]


def test_a_file_not_shared_publicly_says_what_to_do(public_ctx: RunContext, fake_drive: FakeDrive):
    file_id = fake_drive.add_file("private.jpg", b"private", shared=False)
    with pytest.raises(OperationError) as failure:
        ops.import_from_google_drive(public_ctx, file_id=file_id)
    message = str(failure.value)
    assert f"Google Drive file {file_id!r} could not be downloaded without credentials" in message
    assert "'Sign in - Google Accounts'" in message and 'not shared with "anyone with the link"' in message
    assert not [p for p in public_ctx.run_dir.rglob("*") if p.is_file()]


def test_a_missing_public_file_names_the_id(public_ctx: RunContext):
    with pytest.raises(
        OperationError,
        match=r"'1missingPublicFilexxxxxx' could not be downloaded .*HTTP 404, "
        r"'Google Drive - Page Not Found'",
    ):
        ops.import_from_google_drive(public_ctx, file_id="1missingPublicFilexxxxxx")


def test_a_folder_without_credentials_needs_an_api_key_or_a_service_account(public_ctx: RunContext):
    with pytest.raises(OperationError) as failure:
        ops.import_from_google_drive(public_ctx, folder_id=SAMPLE_FOLDER_ID)
    message = str(failure.value)
    assert "reading a folder needs an API key or a service account" in message
    assert "CONSTELLATION_GOOGLE_API_KEY" in message and "GOOGLE_APPLICATION_CREDENTIALS" in message


def test_a_public_download_over_the_size_cap_is_refused(
    tmp_path: Path, fake_drive: FakeDrive, no_credentials_env: None
):
    ctx = make_ctx(tmp_path, fake_drive, download_max_bytes=50_000)
    file_id = fake_drive.add_file("too-big.bin", os.urandom(60_000))
    with pytest.raises(OperationError, match="60000 bytes, more than the limit of 50000 bytes"):
        ops.import_from_google_drive(ctx, file_id=file_id)
    assert not [p for p in ctx.run_dir.rglob("*") if p.is_file()]


def test_cancel_stops_a_public_download_and_leaves_no_partial_file(public_ctx: RunContext, fake_drive: FakeDrive):
    file_id = fake_drive.add_file("slow.bin", os.urandom(150_000))  # three pieces, under confirm_above

    def after_first_piece(seen, sent: int) -> None:
        if seen.query.get("id") == file_id:
            public_ctx.cancelled.set()

    fake_drive.after_public_chunk = after_first_piece
    try:
        with pytest.raises(OperationError, match="stopped"):
            ops.import_from_google_drive(public_ctx, file_id=file_id)
    finally:
        fake_drive.after_public_chunk = None
    assert not [p for p in public_ctx.run_dir.rglob("*") if p.is_file()]


@pytest.mark.parametrize(
    "page, expected",
    [
        # Drive since 2024: the download form, after another form; attribute quoting as browsers accept it.
        (
            "<form id=search action=/search method=get><input name=q value=x></form>"
            '<form id="download-form" action="https://drive.usercontent.google.com/download" method="get">'
            '<input type="submit" id="uc-download-link" value="Download anyway"/>'
            '<input type="hidden" name="id" value="1abcdefghijk"><input type="hidden" name="export" '
            'value="download"><input type=hidden name=confirm value=t>'
            "<input type=hidden name=uuid value=u-1&amp;2></form>",
            (
                "https://drive.usercontent.google.com/download",
                {"id": "1abcdefghijk", "export": "download", "confirm": "t", "uuid": "u-1&2"},
            ),
        ),
        # Drive before 2024: a link carrying the confirmation code, relative to the page.
        (
            '<p>too large</p><a id="uc-download-link" href="/uc?export=download&amp;confirm=AbCd&amp;id=1abc">'
            "Download anyway</a>",
            ("https://drive.google.com/uc?export=download&confirm=AbCd&id=1abc", {}),
        ),
        ("<html><head><title>Google Drive - Quota exceeded</title></head><body>Too many users</body></html>", None),
    ],
)
def test_the_confirmation_is_read_from_the_page_with_an_html_parser(page: str, expected):
    assert drive._confirm_form(page, "https://drive.google.com/uc?id=1abc&export=download") == expected


def test_a_quota_page_is_reported_as_such():
    page = "<html><head><title>Google Drive - Quota exceeded</title></head></html>"
    assert "too many downloads of this file lately" in drive._public_refusal("Google Drive file 'x'", 200, page)
