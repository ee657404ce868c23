"""Where runs keep their files: a local folder, or a bucket and prefix of S3 (or an S3-compatible store).

`open_store(root)` chooses from the root's form: `s3://bucket/prefix` is an S3RunStore, anything
else a folder (LocalRunStore). The layout is the same in both, `<root>/runs/<run id>/` holding
progress.json, results.json and `nodes/<node key>/...` (runs.py). The gateway reads a store; the
code location writes one through a `RunFolder` (runs.py), which gives instructions a local folder
to work in: the store's own folder when it is local, a scratch folder per run otherwise.

Credentials are never ours: boto3 finds them in its standard chain (AWS_* variables, a profile, a
role). The endpoint is CONSTELLATION_S3_ENDPOINT_URL (and the region CONSTELLATION_S3_REGION), as
for the S3 operations (orchestrator/sources/s3.py): both are `contract.StoreSettings`, and both
build their client with `s3_client` below.
"""

from __future__ import annotations

import errno
import json
import mimetypes
import os
import posixpath
import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlparse

from orchestrator.contract import SharedSettings

RUNS = "runs"
CHUNK_BYTES = 256 * 1024
# Files up to this size are stored in one request; larger ones in parts (boto3's transfer manager).
SINGLE_REQUEST_BYTES = 16 * 1024 * 1024
# Objects moved at once when a folder is uploaded or downloaded (small files: latency-bound).
TRANSFER_THREADS = 8
_RUN_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


class RunStoreError(Exception):
    """The store could not be read or written (it does not answer, refuses the credentials...)."""


@dataclass
class StoredFile:
    """A run's file as the gateway serves it: a local path (served as is) or a stream of chunks."""

    name: str
    size: int | None
    path: Path | None = None
    chunks: Iterator[bytes] | None = None
    close: Callable[[], None] = lambda: None


def is_run_id(value: str) -> bool:
    """Dagster run ids are lowercase UUIDs; anything else never names a folder."""
    return bool(_RUN_ID.match(value))


def clean_relative(relative: str) -> str | None:
    """`relative` if it is a plain path inside a run's folder (no empty, '.' or '..' segment), else None."""
    if not relative or relative.startswith("/") or "\\" in relative or "\x00" in relative:
        return None
    if any(part in ("", ".", "..") for part in relative.split("/")):
        return None
    return relative


class RunStore(ABC):
    """The runs' folders under one root. `rel` is a path inside a run's folder ('' is the folder)."""

    root: str
    remote: bool

    @abstractmethod
    def uri(self, run_id: str, rel: str = "") -> str:
        """Where a run's file lies, as a URI a user (or boto3) can open: file:// or s3://."""

    @abstractmethod
    def locate(self, uri: str) -> tuple[str, str] | None:
        """(run id, rel) of a URI inside some run's folder of this store; None for any other URI."""

    @abstractmethod
    def write_bytes(self, run_id: str, rel: str, data: bytes) -> None: ...

    @abstractmethod
    def read_bytes(self, run_id: str, rel: str) -> bytes | None:
        """The file's bytes; None when there is no such file."""

    @abstractmethod
    def exists(self, run_id: str, rel: str) -> bool: ...

    @abstractmethod
    def open(self, run_id: str, rel: str) -> StoredFile | None:
        """The file for streaming; None when there is none (or `rel` leaves the run's folder)."""

    @abstractmethod
    def upload(self, run_id: str, rel: str, source: Path) -> None:
        """Store the local file `source` as the run's file `rel`."""

    @abstractmethod
    def download(self, run_id: str, rel: str, target: Path) -> int:
        """Copy the run's file `rel` to `target`, or every file under the folder `rel` below `target`.

        Returns how many files were copied (0: nothing there)."""

    def files_under(self, run_id: str, rel: str) -> list[str]:
        """The rel paths of the files under the folder `rel` of a run (for tests and tools)."""
        raise NotImplementedError

    def write_json(self, run_id: str, rel: str, document: Any) -> None:
        self.write_bytes(run_id, rel, json.dumps(document, indent=1, default=str).encode())

    def read_json(self, run_id: str, rel: str) -> Any | None:
        data = self.read_bytes(run_id, rel)
        if data is None:
            return None
        try:
            return json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None


class LocalRunStore(RunStore):
    """Runs in a local (or mounted) folder: what CONSTELLATION_ARTIFACT_ROOT has always been."""

    remote = False

    def __init__(self, root: str | Path):
        self.base = Path(root).resolve()
        self.root = str(self.base)

    def folder(self, run_id: str) -> Path:
        return self.base / RUNS / run_id

    def path(self, run_id: str, rel: str = "") -> Path:
        return self.folder(run_id) / rel if rel else self.folder(run_id)

    def uri(self, run_id: str, rel: str = "") -> str:
        return self.path(run_id, rel).as_uri()

    def locate(self, uri: str) -> tuple[str, str] | None:
        if not uri.startswith("file://"):
            return None
        path = Path(unquote(urlparse(uri).path)).resolve()
        runs_root = self.base / RUNS
        if not path.is_relative_to(runs_root) or len(path.relative_to(runs_root).parts) < 2:
            return None
        owner, *rest = path.relative_to(runs_root).parts
        return owner, "/".join(rest)

    def write_bytes(self, run_id: str, rel: str, data: bytes) -> None:
        target = self.path(run_id, rel)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f"{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        partial.write_bytes(data)
        os.replace(partial, target)  # a reader never sees half a file

    def read_bytes(self, run_id: str, rel: str) -> bytes | None:
        try:
            return self.path(run_id, rel).read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None

    def exists(self, run_id: str, rel: str) -> bool:
        return self.path(run_id, rel).exists()

    def open(self, run_id: str, rel: str) -> StoredFile | None:
        root = self.folder(run_id).resolve()
        if clean_relative(rel) is None:
            return None
        try:
            path = (root / rel).resolve()  # a link leading out of the run's folder is refused
            if not path.is_relative_to(root) or not path.is_file():
                return None
            size = path.stat().st_size
        except OSError as exc:
            if exc.errno != errno.ENAMETOOLONG:
                raise
            return None  # a name no file can have (a part over 255 bytes, a path too long)
        return StoredFile(name=path.name, size=size, path=path)

    def upload(self, run_id: str, rel: str, source: Path) -> None:
        target = self.path(run_id, rel)
        if source.resolve() != target.resolve():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read_bytes())

    def download(self, run_id: str, rel: str, target: Path) -> int:
        source = self.path(run_id, rel)
        if source.resolve() == target.resolve():
            return int(source.exists())
        if source.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read_bytes())
            return 1
        count = 0
        for file in source.rglob("*") if source.is_dir() else ():
            if file.is_file():
                copy = target / file.relative_to(source)
                copy.parent.mkdir(parents=True, exist_ok=True)
                copy.write_bytes(file.read_bytes())
                count += 1
        return count

    def files_under(self, run_id: str, rel: str) -> list[str]:
        folder = self.folder(run_id)
        start = self.path(run_id, rel)
        return sorted(p.relative_to(folder).as_posix() for p in start.rglob("*") if p.is_file())


class S3RunStore(RunStore):
    """Runs under `s3://bucket/prefix/runs/`, through boto3 (S3, MinIO, R2...)."""

    remote = True

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str | None = None,
        client: Any = None,
    ):
        if not bucket:
            raise ValueError("an s3:// artifact root needs a bucket: s3://bucket/prefix")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.root = f"s3://{bucket}/{self.prefix}".rstrip("/")
        self.endpoint_url = endpoint_url
        self._client = client or _client(endpoint_url, region)

    def key(self, run_id: str, rel: str = "") -> str:
        parts = [p for p in (self.prefix, RUNS, run_id, rel) if p]
        return "/".join(parts)

    def uri(self, run_id: str, rel: str = "") -> str:
        return f"s3://{self.bucket}/{self.key(run_id, rel)}"

    def locate(self, uri: str) -> tuple[str, str] | None:
        base = f"s3://{self.bucket}/{self.key('')}/"
        if not uri.startswith(base):
            return None
        owner, _, rest = uri[len(base) :].partition("/")
        if not owner or clean_relative(rest) is None:
            return None
        return owner, rest

    def write_bytes(self, run_id: str, rel: str, data: bytes) -> None:
        key = self.key(run_id, rel)
        extra = {"ContentType": "application/json"} if rel.endswith(".json") else {}
        self._call("write", key, lambda: self._client.put_object(Bucket=self.bucket, Key=key, Body=data, **extra))

    def read_bytes(self, run_id: str, rel: str) -> bytes | None:
        key = self.key(run_id, rel)

        def get() -> bytes:
            body = self._client.get_object(Bucket=self.bucket, Key=key)["Body"]
            try:
                return body.read()
            finally:
                body.close()

        return self._call("read", key, get, missing=True)

    def exists(self, run_id: str, rel: str) -> bool:
        key = self.key(run_id, rel)
        return (
            self._call("read", key, lambda: self._client.head_object(Bucket=self.bucket, Key=key), missing=True)
            is not None
        )

    def open(self, run_id: str, rel: str) -> StoredFile | None:
        if clean_relative(rel) is None:
            return None
        key = self.key(run_id, rel)
        answer = self._call("read", key, lambda: self._client.get_object(Bucket=self.bucket, Key=key), missing=True)
        if answer is None:
            return None
        body = answer["Body"]
        return StoredFile(
            name=rel.rsplit("/", 1)[-1],
            size=answer.get("ContentLength"),
            chunks=body.iter_chunks(CHUNK_BYTES),
            close=body.close,
        )

    def upload(self, run_id: str, rel: str, source: Path) -> None:
        key = self.key(run_id, rel)
        content_type = mimetypes.guess_type(source.name)[0]
        extra = {"ContentType": content_type} if content_type else {}

        def put() -> Any:
            if source.stat().st_size > SINGLE_REQUEST_BYTES:  # in parts, several at a time
                return self._client.upload_file(str(source), self.bucket, key, ExtraArgs=extra or None)
            # One request: boto3's transfer manager costs more than the upload of a small file.
            with source.open("rb") as body:
                return self._client.put_object(Bucket=self.bucket, Key=key, Body=body, **extra)

        self._call("write", key, put)

    def download(self, run_id: str, rel: str, target: Path) -> int:
        key = self.key(run_id, rel)
        if self.exists(run_id, rel):
            self._fetch(key, target)
            return 1
        folder = key + "/"
        keys = [k for k in self._keys_under(folder) if clean_relative(k[len(folder) :])]
        if keys:
            with ThreadPoolExecutor(TRANSFER_THREADS, thread_name_prefix="runstore-download") as pool:
                list(pool.map(lambda k: self._fetch(k, target / k[len(folder) :]), keys))
        return len(keys)

    def files_under(self, run_id: str, rel: str) -> list[str]:
        folder = self.key(run_id) + "/"
        start = self.key(run_id, rel) + "/" if rel else folder
        return sorted(k[len(folder) :] for k in self._keys_under(start))

    def _fetch(self, key: str, target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f"{target.name}.{threading.get_ident()}.part")

        def get() -> None:
            body = self._client.get_object(Bucket=self.bucket, Key=key)["Body"]
            try:
                with partial.open("wb") as sink:
                    for chunk in body.iter_chunks(CHUNK_BYTES):
                        sink.write(chunk)
            finally:
                body.close()

        try:
            self._call("read", key, get)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        os.replace(partial, target)

    def _keys_under(self, prefix: str) -> list[str]:
        def listing() -> list[str]:
            pages = self._client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
            return [item["Key"] for page in pages for item in page.get("Contents", ()) if not item["Key"].endswith("/")]

        return self._call("list", prefix, listing)

    def _call(self, action: str, key: str, call: Callable[[], Any], missing: bool = False) -> Any:
        """`call()`, with S3's answers turned into None (a missing object, when `missing`) or RunStoreError."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return call()
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if missing and code in ("404", "NoSuchKey", "NotFound"):
                return None
            raise RunStoreError(f"cannot {action} s3://{self.bucket}/{key}: S3 answered {code or 'an error'}") from None
        except BotoCoreError as exc:
            raise RunStoreError(f"cannot {action} s3://{self.bucket}/{key}: {exc}") from None


def s3_client(
    endpoint_url: str | None,
    region: str | None,
    *,
    checksums: Literal["when_supported", "when_required"] = "when_supported",
    max_pool_connections: int = 10,
) -> Any:
    """A new boto3 S3 client with standard retries; credentials come from boto3's chain.

    `checksums` is boto3's request_checksum_calculation and response_checksum_validation:
    "when_supported" (boto3's default) for the S3 operations, "when_required" for the run store.
    `max_pool_connections` (boto3's default 10) bounds the connections kept for concurrent requests.
    """
    import boto3  # here, not at the top: the gateway opens a local store without loading botocore
    from botocore.config import Config

    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint_url or None,
        region_name=region or None,
        config=Config(
            retries={"mode": "standard"},
            max_pool_connections=max_pool_connections,
            request_checksum_calculation=checksums,
            response_checksum_validation=checksums,
        ),
    )


def _client(endpoint_url: str | None, region: str | None) -> Any:
    # Checksums only where S3 requires them: boto3's newer defaults (aws-chunked uploads with
    # trailing checksums) are refused by some S3-compatible stores, and cost CPU per request.
    return s3_client(endpoint_url, region, checksums="when_required", max_pool_connections=4 * TRANSFER_THREADS)


def is_store_url(root: str | Path) -> bool:
    return _s3_parts(str(root)) is not None


def _s3_parts(root: str) -> tuple[str, str] | None:
    # "s3:/bucket/prefix" is the same root after a trip through pathlib.Path (which folds "//").
    for scheme in ("s3://", "s3:/"):
        if root.startswith(scheme):
            bucket, _, prefix = root[len(scheme) :].partition("/")
            return bucket, prefix
    return None


def normal_key(key: str) -> str:
    """An S3 key as a store that reads keys as paths sees it: no empty, '.' or '..' segments.

    S3 itself takes keys as they are, but MinIO (and other stores on a file system) fold
    "a//b", "a/./b" and "a/x/../b" into "a/b": refusals compare this form. A trailing "/" stays.
    """
    folded = posixpath.normpath("/" + key).lstrip("/") if key.strip("/") else ""
    return folded + "/" if folded and key.endswith("/") else folded


def s3_runs_area(root: str | Path) -> tuple[str, str] | None:
    """(bucket, key prefix ending in '/') under which an `s3://bucket/prefix` root keeps its runs; None for a folder."""
    parts = _s3_parts(str(root))
    if parts is None or not parts[0]:
        return None
    prefix = normal_key(parts[1].strip("/"))
    return parts[0], f"{prefix}/{RUNS}/" if prefix else f"{RUNS}/"


def open_store(root: str | Path, endpoint_url: str | None = None, region: str | None = None) -> RunStore:
    """The store for CONSTELLATION_ARTIFACT_ROOT `root`: S3 for `s3://bucket/prefix`, else a local folder.

    The endpoint and region, when not given, are the settings' (CONSTELLATION_S3_ENDPOINT_URL and
    CONSTELLATION_S3_REGION, read through `contract.SharedSettings`).
    """
    parts = _s3_parts(str(root))
    if parts is None:
        return LocalRunStore(root)
    if not (endpoint_url and region):
        settings = SharedSettings()
        endpoint_url, region = endpoint_url or settings.s3_endpoint_url, region or settings.s3_region
    return _s3_store(parts[0], parts[1], endpoint_url or None, region or None)


def warm_up(root: str | Path | None = None) -> None:
    """Build the store for `root` (default CONSTELLATION_ARTIFACT_ROOT) in a background thread.

    A boto3 client takes 0.25-0.4 s to build in a fresh process (it reads botocore's service
    model): a run's process, which imports this module seconds before its first write, has it ready.
    """
    root = str(root if root is not None else SharedSettings().artifact_root)
    if is_store_url(root):

        def build() -> None:
            try:
                open_store(root)
            except Exception:  # noqa: S110 - the first real use reports what is wrong
                pass

        threading.Thread(target=build, name="runstore-warm-up", daemon=True).start()


@lru_cache(maxsize=8)
def _s3_store(bucket: str, prefix: str, endpoint_url: str | None, region: str | None) -> S3RunStore:
    # One client per store and process: boto3 clients are thread-safe and slow to build.
    return S3RunStore(bucket, prefix, endpoint_url, region)


warm_up()
