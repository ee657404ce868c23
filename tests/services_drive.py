"""Test servers for this family of sources, and the stack settings that reach them.

The Google Drive API is served by tests/fake_drive.py on 127.0.0.1; the real
google-api-python-client reaches it through CONSTELLATION_GOOGLE_API_ENDPOINT, signed in as a
service account made here (its key file's token_uri is the fake's /token). Drive's public
download endpoint (files shared with anyone who has the link, no credentials) is the same fake's
/download, reached through CONSTELLATION_GOOGLE_DOWNLOAD_URL.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from fake_drive import FakeDrive, ServiceAccount
from sample_data import write_samples

SEED_FILE_ID = "1aniasD6RcD3Zr7K8DSWiiqtXCRbFx7gU"  # the seed README's fire/smoke images
SAMPLE_FOLDER_ID = "1sampleFolderOfImages_xyz"


def zip_of(folder: Path) -> bytes:
    """The files under `folder` as a zip, named by their path inside it."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            archive.write(path, path.relative_to(folder).as_posix())
    return buffer.getvalue()


def seed(fake: FakeDrive, images: Path) -> None:
    """The seed's zip of labelled JPEGs, and a folder of images that takes several pages to list."""
    fake.add_file("fire-dataset.zip", zip_of(images), mime_type="application/zip", file_id=SEED_FILE_ID)
    folder = fake.add_folder("sample images", folder_id=SAMPLE_FOLDER_ID)
    for path in sorted((images / "Fire").glob("*.jpg")) + sorted((images / "Smoke").glob("*.jpg")):
        fake.add_file(path.name, path.read_bytes(), parent=folder, mime_type="image/jpeg")
    normal = fake.add_folder("Normal", parent=folder)
    for path in sorted((images / "Normal").glob("*.jpg")):
        fake.add_file(path.name, path.read_bytes(), parent=normal, mime_type="image/jpeg")
    fake.add_document("notes about the images", parent=folder)


@pytest.fixture(scope="session")
def fake_drive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeDrive]:
    """The fake Drive API, running, with the seed's file and a sample folder in it."""
    fake = FakeDrive().start()
    seed(fake, write_samples(tmp_path_factory.mktemp("drive-images"), per_label=2))
    yield fake
    fake.stop()


@pytest.fixture(scope="session")
def drive_account(fake_drive: FakeDrive, tmp_path_factory: pytest.TempPathFactory) -> ServiceAccount:
    """A service account the fake trusts; its key file is what GOOGLE_APPLICATION_CREDENTIALS names."""
    return fake_drive.service_account(tmp_path_factory.mktemp("drive-credentials"))


@pytest.fixture(scope="session")
def drive_env(fake_drive: FakeDrive, drive_account: ServiceAccount) -> dict[str, str]:
    """Settings for the stack: the fake's endpoints, and the service account's key file."""
    return {
        "CONSTELLATION_GOOGLE_API_ENDPOINT": fake_drive.api_endpoint,
        "CONSTELLATION_GOOGLE_DOWNLOAD_URL": fake_drive.download_url,
        "GOOGLE_APPLICATION_CREDENTIALS": str(drive_account.key_file),
    }
