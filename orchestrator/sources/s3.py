"""S3 and S3-compatible stores (MinIO, R2...): objects streamed to and from the run's folder.

Credentials are never ours to hold: boto3 finds them in its standard chain (AWS_* variables,
profile, instance role). Error messages name the bucket and key, never a credential.
"""

from __future__ import annotations

import mimetypes
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError, NoCredentialsError

from orchestrator.datasets import Exported, FileRef
from orchestrator.engine import OperationError
from orchestrator.runstore import normal_key, s3_client, s3_runs_area

if TYPE_CHECKING:
    from orchestrator.preflight import Finding, Preflight

# Keys asked for per listing request; S3's own maximum. Tests lower it to exercise paging.
PAGE_SIZE = 1000
# Objects fetched at once under a prefix: small objects are dominated by request latency.
DOWNLOAD_THREADS = 8
DEFAULT_EXPORT_PREFIX = "constellation"
_MISSING = ("404", "NoSuchKey", "NotFound")


@dataclass(frozen=True)
class S3Settings:
    """Where the store is; None means AWS itself (and boto3's own region lookup)."""

    endpoint_url: str | None = None
    region: str | None = None


@dataclass(frozen=True)
class Reserved:
    """A part of a bucket operations never read or write: where the server keeps its runs.

    A run's kept outputs, progress and results lie there; an import must not read other runs'
    files, and an export must not write files that a retry or the gateway would then read.
    """

    bucket: str
    prefix: str  # normalised (runstore.normal_key), ending with "/"
    setting: str

    def covers(self, bucket: str, key: str) -> bool:
        """True when the object `key` of `bucket` lies in this area, as S3 or a store folding "//" reads it."""
        return bucket.lower() == self.bucket.lower() and any(k.startswith(self.prefix) for k in (key, normal_key(key)))

    def meets(self, bucket: str, prefix: str) -> bool:
        """True when listing `prefix` of `bucket` could return keys in this area (or the area holds it)."""
        return bucket.lower() == self.bucket.lower() and any(
            p.startswith(self.prefix) or self.prefix.startswith(p) for p in (prefix, normal_key(prefix))
        )

    def refusal(self, what: str) -> OperationError:
        return OperationError(
            f"{what}: {self.setting} keeps runs under s3://{self.bucket}/{self.prefix}; choose another bucket or prefix"
        )


def reserved_areas(artifact_root: str | Path | None) -> list[Reserved]:
    """The areas of S3 operations must leave alone: the runs' prefix of an s3:// artifact root (none for a folder)."""
    area = s3_runs_area(artifact_root) if artifact_root else None
    return [Reserved(area[0], area[1], "CONSTELLATION_ARTIFACT_ROOT")] if area else []


# Before launch S3 is asked once, briefly: a store that does not answer in time leaves the question to the run.
PREFLIGHT_TIMEOUT_S = 2.0
_PLACEHOLDER_RUN = "00000000-0000-0000-0000-000000000000"  # reserved areas are prefixes: any run id tells alike


def preflight_import(check: Preflight, params: Mapping[str, Any]) -> Iterator[Finding]:
    """import_from_s3 before launch: one of key or prefix, outside the runs' own prefix, a bucket that exists
    and, for a key, an object that exists (as S3 answers within PREFLIGHT_TIMEOUT_S)."""
    from orchestrator.preflight import Finding

    bucket, key, prefix = params["bucket"], params.get("key"), params.get("prefix")
    if (key is None) == (prefix is None):
        yield Finding("", f"bucket {bucket!r}: give exactly one of key (one object) or prefix (a folder)")
        return
    for area in reserved_areas(check.resources.workspace.artifact_root):
        if key is not None and area.covers(bucket, key):
            yield Finding("key", str(area.refusal(f"cannot read s3://{bucket}/{key}")))
            return
        if prefix is not None and area.meets(bucket, prefix):
            yield Finding("prefix", str(area.refusal(f"cannot read the objects under s3://{bucket}/{prefix}")))
            return
    if key is not None and key.endswith("/"):
        yield Finding("key", f"key {key!r} in bucket {bucket!r} ends with '/': a folder; use prefix instead")
        return
    store = _preflight_client(check)
    missing = _answer(lambda: store.head_bucket(Bucket=bucket))
    if missing:
        yield Finding("bucket", f"bucket {bucket!r} does not exist")
    elif key is not None and _answer(lambda: store.head_object(Bucket=bucket, Key=key)):
        yield Finding("key", f"no object {key!r} in bucket {bucket!r}")


def preflight_export(check: Preflight, params: Mapping[str, Any]) -> Iterator[Finding]:
    """export_to_s3 before launch: a bucket that exists (named, or the server's CONSTELLATION_EXPORT_BUCKET),
    and a prefix outside the runs' own."""
    from orchestrator.preflight import Finding

    bucket = params.get("bucket") or check.resources.s3.export_bucket
    if bucket is None:
        return  # the catalog already requires it where the server sets no default
    base = run_base(params.get("prefix"), _PLACEHOLDER_RUN)
    for area in reserved_areas(check.resources.workspace.artifact_root):
        if area.covers(bucket, base + "/"):
            yield Finding(
                "prefix" if params.get("prefix") else "bucket",
                str(area.refusal(f"cannot write under s3://{bucket}/{base.rsplit('/', 1)[0]}/")),
            )
            return
    if _answer(lambda: _preflight_client(check).head_bucket(Bucket=bucket)):
        named = "bucket" if params.get("bucket") else ""
        yield Finding(
            named,
            f"bucket {bucket!r} does not exist" + ("" if named else " (the server's CONSTELLATION_EXPORT_BUCKET)"),
        )


def _preflight_client(check: Preflight) -> Any:
    def build() -> Any:
        import boto3
        from botocore.config import Config

        settings = check.resources.s3.settings()
        return boto3.session.Session().client(
            "s3",
            endpoint_url=settings.endpoint_url or None,
            region_name=settings.region or None,
            config=Config(
                connect_timeout=PREFLIGHT_TIMEOUT_S, read_timeout=PREFLIGHT_TIMEOUT_S, retries={"max_attempts": 1}
            ),
        )

    return check.once("s3-client", build)


def _answer(ask: Callable[[], Any]) -> bool:
    """True only when S3 answers that what `ask` asked for does not exist; any other answer, or none, is False."""
    try:
        ask()
    except ClientError as exc:
        return str(exc.response.get("Error", {}).get("Code")) in ("404", "NoSuchBucket", "NoSuchKey", "NotFound")
    except BotoCoreError:
        return False
    return False


def client(settings: S3Settings) -> Any:
    """A new S3 client with standard retries; credentials come from boto3's chain.

    Built by the run store's builder with boto3's default checksums ("when_supported"), as these
    operations have always used; the run store itself asks only for those S3 requires.
    """
    return s3_client(settings.endpoint_url, settings.region, checksums="when_supported")


def import_objects(
    s3: Any,
    bucket: str,
    *,
    key: str | None,
    prefix: str | None,
    out_dir: Path,
    expand: Callable[[Path], dict[str, Path]] | None,
    check_cancelled: Callable[[], None],
    reserved: list[Reserved] | tuple[Reserved, ...] = (),
) -> dict[str, Path]:
    """Download one object (`key`) or every object under `prefix` into `out_dir`.

    Names: a single key is named by its last segment; under a prefix, each key is named
    relative to the prefix's folder (the prefix up to its last "/"). `expand`, when given,
    turns each downloaded file into entries (an archive's members); under a prefix, members
    are named `<archive's name>/<member path>` so that two archives never clash. Nothing is read
    from the `reserved` areas (a prefix whose listing could reach one is refused whole).
    """
    if (key is None) == (prefix is None):
        raise OperationError(f"bucket {bucket!r}: give exactly one of key (one object) or prefix (a folder)")
    for area in reserved:
        if key is not None and area.covers(bucket, key):
            raise area.refusal(f"cannot read s3://{bucket}/{key}")
        if prefix is not None and area.meets(bucket, prefix):
            raise area.refusal(f"cannot read the objects under s3://{bucket}/{prefix}")
    if key is not None:
        if key.endswith("/"):
            raise OperationError(f"key {key!r} in bucket {bucket!r} ends with '/': a folder; use prefix instead")
        name = _file_name(bucket, key, _last_segment(key))
        target = _download(s3, bucket, key, _local_path(out_dir, 0, key), check_cancelled)
        return _entries(target, name, expand, nest=False)
    assert prefix is not None  # exactly one of key and prefix, checked above
    return _import_prefix(s3, bucket, prefix, out_dir, expand, check_cancelled)


def _import_prefix(
    s3: Any,
    bucket: str,
    prefix: str,
    out_dir: Path,
    expand: Callable[[Path], dict[str, Path]] | None,
    check_cancelled: Callable[[], None],
) -> dict[str, Path]:
    """Every object under `prefix`, listed page by page and fetched DOWNLOAD_THREADS at a time."""
    folder = prefix[: prefix.rfind("/") + 1]
    files: dict[str, Path] = {}

    def fetch(index: int, key: str, name: str) -> dict[str, Path]:
        check_cancelled()
        return _entries(
            _download(s3, bucket, key, _local_path(out_dir, index, key), check_cancelled), name, expand, True
        )

    def collect(entries: dict[str, Path]) -> None:
        if clash := files.keys() & entries.keys():
            raise OperationError(f"s3://{bucket}/{folder}{min(clash)} is both an object and an archive member")
        files.update(entries)

    # A bounded window of downloads in flight: the listing stays streamed, results keep its order.
    pending: deque[Future[dict[str, Path]]] = deque()
    with ThreadPoolExecutor(DOWNLOAD_THREADS, thread_name_prefix="s3-download") as pool:
        try:
            for index, key in enumerate(_keys_under(s3, bucket, prefix, check_cancelled)):
                pending.append(pool.submit(fetch, index, key, _file_name(bucket, key, key[len(folder) :])))
                if len(pending) > 2 * DOWNLOAD_THREADS:
                    collect(pending.popleft().result())
            while pending:
                collect(pending.popleft().result())
        except BaseException:
            for future in pending:
                future.cancel()  # those not started yet; the running ones end on their own
            raise
    if not files:
        raise OperationError(f"no objects under s3://{bucket}/{prefix} (bucket {bucket!r}, prefix {prefix!r})")
    return files


def _entries(target: Path, name: str, expand: Callable[[Path], dict[str, Path]] | None, nest: bool) -> dict[str, Path]:
    """A downloaded object as dataset entries: itself, or an archive's members (under its name if `nest`)."""
    members = expand(target) if expand else {target.name: target}
    if members == {target.name: target}:  # not an archive
        return {name: target}
    return {f"{name}/{member}": path for member, path in members.items()} if nest else members


def export_files(
    s3: Any,
    refs: list[FileRef],
    bucket: str,
    base: str,
    check_cancelled: Callable[[], None],
    reserved: list[Reserved] | tuple[Reserved, ...] = (),
) -> Exported:
    """Upload each file to s3://bucket/<base>/<its name>; never replace an object already there, nor
    write in the `reserved` areas (checked for every key before anything is uploaded)."""
    for area in reserved:
        if area.covers(bucket, base + "/"):
            raise area.refusal(f"cannot write under s3://{bucket}/{base}/")
    keys = {}
    for ref in refs:
        if ref.name in keys:
            raise OperationError(
                f"two files are named {ref.name!r}; each needs its own key under s3://{bucket}/{base}/"
            )
        keys[ref.name] = f"{base}/{ref.name}"
        for area in reserved:
            if area.covers(bucket, keys[ref.name]):
                raise area.refusal(f"cannot write s3://{bucket}/{keys[ref.name]}")
    taken = set(_keys_under(s3, bucket, base + "/", check_cancelled)) & set(keys.values())
    if taken:
        raise OperationError(f"s3://{bucket}/{min(taken)} already exists; exports never overwrite")
    items = []
    for ref in refs:
        check_cancelled()
        _upload(s3, ref.path, bucket, keys[ref.name], check_cancelled)
        items.append({"name": ref.name, "uri": f"s3://{bucket}/{keys[ref.name]}"})
    return Exported(f"s3://{bucket}/{base}/", items)


def run_base(prefix: str | None, run_id: str) -> str:
    """The key prefix a run exports under: `<prefix or "constellation">/<run id>`."""
    return f"{(prefix or '').strip('/') or DEFAULT_EXPORT_PREFIX}/{run_id}"


def _keys_under(s3: Any, bucket: str, prefix: str, check_cancelled: Callable[[], None]) -> Iterator[str]:
    """Every object key under `prefix`, page by page, skipping "folder" marker objects."""
    pages = s3.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=prefix, PaginationConfig={"PageSize": PAGE_SIZE}
    )
    try:
        for page in pages:
            check_cancelled()
            for item in page.get("Contents", ()):
                if not item["Key"].endswith("/"):
                    yield item["Key"]
    except (BotoCoreError, ClientError) as exc:
        raise _explain(exc, s3, bucket, prefix, "list") from None


def _download(s3: Any, bucket: str, key: str, target: Path, check_cancelled: Callable[[], None]) -> Path:
    """Stream one object to `target` (boto3 writes a temporary file and renames it when complete)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        # The callback runs as bytes arrive, so a cancel stops a large download midway.
        s3.download_file(bucket, key, str(target), Callback=lambda _bytes: check_cancelled())
    except (BotoCoreError, ClientError) as exc:
        raise _explain(exc, s3, bucket, key, "read") from None
    return target


def _upload(s3: Any, path: Path, bucket: str, key: str, check_cancelled: Callable[[], None]) -> None:
    content_type = mimetypes.guess_type(path.name)[0]
    extra = {"ContentType": content_type} if content_type else None
    try:
        s3.upload_file(str(path), bucket, key, ExtraArgs=extra, Callback=lambda _bytes: check_cancelled())
    except (BotoCoreError, ClientError) as exc:
        raise _explain(exc, s3, bucket, key, "write") from None


def _local_path(out_dir: Path, index: int, key: str) -> Path:
    """A file for the index-th object: numbered folders, so that no key can reach outside
    `out_dir` ("..", absolute keys) or collide with another (an object "a" beside "a/b")."""
    name = _last_segment(key)
    if name in ("", ".", ".."):
        name = "object"
    elif len(name.encode()) > 200:  # file names are limited to 255 bytes; keys to 1024
        name = "object" + Path(name).suffix[:16]
    return out_dir / "objects" / str(index) / name


def _last_segment(key: str) -> str:
    return key.rsplit("/", 1)[-1]


def _file_name(bucket: str, key: str, name: str) -> str:
    """`name` if it is a plain relative path; later steps write files by name, so a name with
    an empty, "." or ".." segment (a key like "/a.jpg", "a//b" or "../b") could escape their folder."""
    if any(part in ("", ".", "..") for part in name.split("/")):
        raise OperationError(
            f"s3://{bucket}/{key}: the name {name!r} it would get has an empty, '.' or '..' segment; "
            "such keys cannot be file names (import a narrower prefix, or rename the object)"
        )
    return name


def _explain(exc: Exception, s3: Any, bucket: str, key: str, action: str) -> OperationError:
    """A message naming the bucket and key and what went wrong, without any credential."""
    where = f"s3://{bucket}/{key}"
    if isinstance(exc, NoCredentialsError):
        return OperationError(
            f"cannot {action} {where}: the server has no S3 credentials "
            "(set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, a profile or a role on the server)"
        )
    if isinstance(exc, EndpointConnectionError):
        return OperationError(f"cannot {action} {where}: the S3 endpoint {s3.meta.endpoint_url} does not answer")
    if not isinstance(exc, ClientError):
        return OperationError(f"cannot {action} {where}: {type(exc).__name__}")
    code = str(exc.response.get("Error", {}).get("Code", ""))
    if code == "NoSuchBucket" or (code in _MISSING and not _bucket_exists(s3, bucket)):
        return OperationError(f"bucket {bucket!r} does not exist (looking for {where})")
    if code in _MISSING:
        hint = "; it is a folder: use prefix instead of key" if _has_keys_under(s3, bucket, key + "/") else ""
        return OperationError(f"no object {key!r} in bucket {bucket!r}{hint}")
    if code in ("403", "AccessDenied", "AllAccessDisabled"):
        return OperationError(f"cannot {action} {where}: access denied to the server's S3 credentials")
    if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken"):
        return OperationError(f"cannot {action} {where}: S3 refused the server's credentials ({code})")
    message = exc.response.get("Error", {}).get("Message", "")
    return OperationError(f"cannot {action} {where}: S3 answered {code or 'an error'} {message}".rstrip())


def _bucket_exists(s3: Any, bucket: str) -> bool:
    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError as exc:
        return str(exc.response.get("Error", {}).get("Code")) not in ("404", "NoSuchBucket", "NotFound")
    except BotoCoreError:
        return True  # unknown: do not claim the bucket is missing
    return True


def _has_keys_under(s3: Any, bucket: str, prefix: str) -> bool:
    try:
        return bool(s3.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1).get("KeyCount"))
    except (BotoCoreError, ClientError):
        return False
