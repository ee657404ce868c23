"""Test servers for this family of sources, and the stack settings that reach them.

S3 is moto's server mode, a real HTTP server in its own process: boto3 talks to it exactly
as it talks to AWS, MinIO or R2, through CONSTELLATION_S3_ENDPOINT_URL.
"""

from __future__ import annotations

import io
import secrets
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from PIL import Image, ImageDraw

from harness import free_port

SAMPLE_BUCKET = "constellation-samples"
# The objects of SAMPLE_BUCKET's folder images/ (label folders, like data/samples/), and the
# members of archives/images.zip.
SAMPLE_IMAGES = {
    "Fire/fire_0.jpg": (220, 80, 20),
    "Fire/fire_1.jpg": (230, 90, 30),
    "Normal/normal_0.jpg": (60, 140, 60),
    "Smoke/smoke_0.jpg": (150, 150, 160),
}
ARCHIVE_MEMBERS = {"Fire/zipped_fire.jpg": (210, 70, 10), "Normal/zipped_normal.jpg": (70, 150, 70)}


def jpeg(colour: tuple[int, int, int], size: tuple[int, int] = (96, 64)) -> bytes:
    image = Image.new("RGB", size, colour)
    ImageDraw.Draw(image).ellipse((10, 10, 50, 50), fill=(255, 220, 40))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=90)
    return out.getvalue()


def zipped(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return out.getvalue()


def s3_client(env: dict[str, str]):
    """A boto3 client for the test server, from the same settings the stack gets."""
    return boto3.client(
        "s3",
        endpoint_url=env["CONSTELLATION_S3_ENDPOINT_URL"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_DEFAULT_REGION"],
        config=Config(retries={"mode": "standard"}),
    )


def _wait_until_answering(client, server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"moto_server exited with {server.returncode}:\n{log.read_text(errors='replace')}")
        try:
            client.list_buckets()
            return
        except Exception:  # not listening yet
            time.sleep(0.1)
    server.kill()
    raise RuntimeError(f"moto_server did not answer in 30 s:\n{log.read_text(errors='replace')}")


def _fill_samples(client) -> None:
    client.create_bucket(Bucket=SAMPLE_BUCKET)
    for name, colour in SAMPLE_IMAGES.items():
        client.put_object(Bucket=SAMPLE_BUCKET, Key=f"images/{name}", Body=jpeg(colour), ContentType="image/jpeg")
    archive = zipped({name: jpeg(colour) for name, colour in ARCHIVE_MEMBERS.items()})
    client.put_object(Bucket=SAMPLE_BUCKET, Key="archives/images.zip", Body=archive)


@pytest.fixture(scope="session")
def s3_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A moto S3 server holding the bucket constellation-samples; the settings that reach it.

    The secret is random and distinctive, so that tests can assert it never shows anywhere.
    """
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto_server.log"
    with log.open("wb") as sink:
        server = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    env = {
        "CONSTELLATION_S3_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": f"moto-secret-{secrets.token_hex(12)}",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    try:
        client = s3_client(env)
        _wait_until_answering(client, server, log)
        _fill_samples(client)
        yield env
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
