"""Run stores (a folder, or S3): the interface both sides use, and a resumed run's files on another machine."""

from __future__ import annotations

import errno
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import boto3
import pytest
from moto import mock_aws
from pydantic import Field

from harness import small_tmpfs
from orchestrator import kept, runs
from orchestrator.engine import Catalog, DataType, InstructionFailed, RunContext, build_plan, execute
from orchestrator.runstore import LocalRunStore, RunStoreError, S3RunStore, clean_relative, is_store_url, open_store

RUN_A, RUN_B, RUN_C = (f"{i}0000000-0000-4000-8000-000000000000" for i in (1, 2, 3))
BUCKET = "constellation-artifacts"


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch):
    """An in-process S3 (moto) with an empty bucket; a store under s3://BUCKET/team/a."""
    for key, value in {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("CONSTELLATION_S3_ENDPOINT_URL", raising=False)
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        yield S3RunStore(BUCKET, "team/a/", client=client), client


def keys(client) -> list[str]:
    return sorted(o["Key"] for o in client.list_objects_v2(Bucket=BUCKET).get("Contents", ()))


# --- the store interface -------------------------------------------------------------------------


def test_the_root_chooses_the_store():
    assert isinstance(open_store("s3://bucket/some/prefix", endpoint_url="http://127.0.0.1:9"), S3RunStore)
    # The same root after a trip through pathlib.Path ("//" folded) is still the bucket, not a folder "s3:".
    assert (
        open_store(Path("s3://bucket/some/prefix"), endpoint_url="http://127.0.0.1:9").root == "s3://bucket/some/prefix"
    )
    assert isinstance(open_store("./.artifacts"), LocalRunStore)
    assert is_store_url("s3://b") and not is_store_url("/srv/s3/artifacts")
    with pytest.raises(ValueError, match="bucket"):
        open_store("s3:///prefix")


@pytest.mark.parametrize("relative", ["", "/etc/passwd", "../x", "a/../../x", "a//b", "./a", "a\\b", "a\x00"])
def test_a_path_out_of_the_run_folder_is_refused(relative: str):
    assert clean_relative(relative) is None


def test_local_store_reads_writes_and_locates(tmp_path: Path):
    store = LocalRunStore(tmp_path)
    store.write_json(RUN_A, "progress.json", {"done": 1})
    assert store.read_json(RUN_A, "progress.json") == {"done": 1}
    assert (tmp_path / "runs" / RUN_A / "progress.json").is_file()
    assert store.read_json(RUN_A, "results.json") is None
    assert store.uri(RUN_A, "nodes/k/a.png") == (tmp_path / "runs" / RUN_A / "nodes/k/a.png").resolve().as_uri()
    assert store.locate(store.uri(RUN_B, "nodes/k/a.png")) == (RUN_B, "nodes/k/a.png")
    assert store.locate((tmp_path / "data.png").as_uri()) is None
    (tmp_path / "secret").write_text("no")
    (tmp_path / "runs" / RUN_A / "link").symlink_to(tmp_path / "secret")
    assert store.open(RUN_A, "link") is None, "a link out of the run's folder is not served"
    assert store.open(RUN_A, "../../secret") is None
    opened = store.open(RUN_A, "progress.json")
    assert opened is not None and opened.path is not None and opened.size == len(opened.path.read_bytes())


def test_s3_store_reads_writes_streams_and_locates(s3, tmp_path: Path):
    store, client = s3
    assert store.root == f"s3://{BUCKET}/team/a"
    store.write_json(RUN_A, "progress.json", {"done": 2})
    assert keys(client) == [f"team/a/runs/{RUN_A}/progress.json"]
    assert store.read_json(RUN_A, "progress.json") == {"done": 2}
    assert store.read_json(RUN_A, "results.json") is None and not store.exists(RUN_A, "results.json")

    big = tmp_path / "big.bin"
    big.write_bytes(bytes(range(256)) * 4096)  # 1 MiB: several chunks
    store.upload(RUN_A, "nodes/k/big.bin", big)
    store.upload(RUN_A, "nodes/k/sub/small.txt", _text(tmp_path, "hello"))
    opened = store.open(RUN_A, "nodes/k/big.bin")
    assert opened is not None and opened.path is None and opened.size == big.stat().st_size
    chunks = list(opened.chunks)
    opened.close()
    assert len(chunks) > 1 and b"".join(chunks) == big.read_bytes()
    assert store.open(RUN_A, "nodes/k/none") is None and store.open(RUN_A, "../x") is None

    assert store.uri(RUN_A, "nodes/k/big.bin") == f"s3://{BUCKET}/team/a/runs/{RUN_A}/nodes/k/big.bin"
    assert store.locate(store.uri(RUN_B, "nodes/k/x.png")) == (RUN_B, "nodes/k/x.png")
    assert store.locate(f"s3://{BUCKET}/team/b/runs/{RUN_A}/x") is None
    assert store.locate(f"s3://{BUCKET}/team/a/runs/{RUN_A}/a/../../x") is None

    assert store.download(RUN_A, "nodes/k", tmp_path / "copy") == 2  # a folder: every file under it
    assert (tmp_path / "copy" / "sub" / "small.txt").read_text() == "hello"
    assert store.download(RUN_A, "nodes/k/big.bin", tmp_path / "one.bin") == 1
    assert store.download(RUN_A, "nodes/none", tmp_path / "none") == 0
    assert store.files_under(RUN_A, "nodes") == ["nodes/k/big.bin", "nodes/k/sub/small.txt"]


def test_a_store_that_does_not_answer_says_where(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    store = S3RunStore("b", "p", endpoint_url="http://127.0.0.1:9", region="us-east-1")
    with pytest.raises(RunStoreError, match=r"cannot read s3://b/p/runs/.*/progress.json"):
        store.read_json(RUN_A, "progress.json")


def _text(folder: Path, text: str) -> Path:
    path = folder / "text.txt"
    path.write_text(text)
    return path


# --- paths kept in outputs, remapped to another machine's folder --------------------------------------


class Made(DataType):
    """A file an instruction wrote, and its name."""

    def __init__(self, name: str, path: Path):
        self.name, self.path, self.text_path = name, path, str(path)

    def to_result(self) -> dict:
        return {"type": "Made", "name": self.name, "uri": self.path.resolve().as_uri()}


kept.register(
    Made, "tests.Made", lambda m: {"name": m.name, "path": m.path}, lambda f: Made(f.text("name"), f.path("path"))
)


def test_kept_paths_are_remapped_to_the_reading_machine(tmp_path: Path):
    here, there = tmp_path / "here" / "runs", tmp_path / "there" / "runs"
    output = {
        "made": Made("a", here / RUN_A / "nodes/k/a.txt"),
        "outside": Path("/srv/data/x.png"),
        "text": str(here / RUN_A / "nodes/k/a.txt"),
        "other": "runs/elsewhere",
    }
    data = kept.Codec(here).dumps(output)
    assert str(here).encode() not in data, "no path of this machine is kept"
    loaded, refs = kept.Codec(there).loads(data)
    assert loaded["made"].path == there / RUN_A / "nodes/k/a.txt"
    assert loaded["made"].text_path == str(there / RUN_A / "nodes/k/a.txt")
    assert loaded["text"] == str(there / RUN_A / "nodes/k/a.txt")
    assert loaded["outside"] == Path("/srv/data/x.png") and loaded["other"] == "runs/elsewhere"
    assert refs == {f"{RUN_A}/nodes/k/a.txt"}


@pytest.mark.parametrize(
    "ref",
    [
        "../../etc/passwd",
        f"{RUN_A}/a//b",
        f"{RUN_A}/../x",
        f"{RUN_A}/",
        "not-a-run/x",
        f"/{RUN_A}/x",
        f"{RUN_A}/a\\b",
        7,
    ],
)
def test_a_kept_reference_out_of_the_runs_folder_is_refused(tmp_path: Path, ref):
    forged = json.dumps({"format": 1, "output": {"$t": "path", "ref": ref}}).encode()
    with pytest.raises(kept.BadKept):
        kept.Codec(tmp_path).loads(forged)


# --- a run on S3: scratch folder, uploads, progress, results, and a resumed run on another scratch --------


class Calls:
    def __init__(self, failing: set[str]):
        self.made: list[str] = []
        self.failing = failing


def write(ctx: RunContext, name: Annotated[str, Field(description="a name")]) -> Made:
    """Write a file named after `name` (fails for names the test says)."""
    ctx.resources.made.append(name)
    if name in ctx.resources.failing:
        raise RuntimeError(f"{name} is not ready yet")
    path = ctx.node_dir / f"{name}.txt"
    path.write_text(name.upper())
    return Made(name, path)


def join(ctx: RunContext, parts: Annotated[list[Made], Field(description="files")]) -> Made:
    """Join the files' texts into one file."""
    ctx.resources.made.append("join")
    path = ctx.node_dir / "joined.txt"
    path.write_text("+".join(p.path.read_text() for p in parts))
    return Made("joined", path)


CATALOG = Catalog.from_functions([write, join])


def pipeline(third: str = "third") -> list:
    return [
        {"operation": "write", "parameters": {"name": "alone"}},
        {
            "operation": "join",
            "parameters": {
                "parts": [
                    {"operation": "write", "parameters": {"name": "first"}},
                    {"operation": "write", "parameters": {"name": "second"}},
                    {"operation": "write", "parameters": {"name": third}},
                ]
            },
        },
    ]


def run_on(store, run_id: str, parent: str | None, calls: Calls, seen: dict) -> list:
    """A run as the job runs it: scratch folder, progress, kept outputs, results, clean-up."""
    plan = build_plan(pipeline(), CATALOG)
    folder = runs.RunFolder.open(store, run_id)
    seen[run_id] = folder.path
    progress = runs.ProgressLog(folder, plan, interval_s=0.05)
    kept = runs.KeptOutputs(folder, parent)

    def on_event(event) -> None:
        kept.track(event)
        progress.record(event)

    try:
        try:
            outputs = execute(
                plan, CATALOG, RunContext(run_dir=folder.path, resources=calls), on_event, max_workers=2, reuse=kept
            )
        except InstructionFailed as failed:
            progress.fail(failed)
            raise
        for root in plan.roots:
            kept.fetch(root)
        results = [{"path": r.path, "output": o.to_result()} for r, o in zip(plan.roots, outputs, strict=True)]
        folder.sync()
        folder.write_json(runs.RESULTS, {"results": folder.public(results)})
        return outputs
    finally:
        progress.close()
        folder.close()


def test_a_run_on_s3_keeps_nothing_local_and_a_resumed_run_fetches_what_it_takes(s3):
    store, client = s3
    seen: dict[str, Path] = {}
    first = Calls(failing={"third"})
    with pytest.raises(InstructionFailed, match="third is not ready yet"):
        run_on(store, RUN_A, None, first, seen)
    assert not seen[RUN_A].exists(), "the scratch folder is removed at the run's end"
    progress = store.read_json(RUN_A, runs.PROGRESS)
    assert progress["error"]["path"] == "/instructions/1/parameters/parts/2"
    states = {e["path"]: e["state"] for e in progress["instructions"]}
    assert states["/instructions/1/parameters/parts/0"] == "succeeded" and states["/instructions/1"] == "pending"
    stored = store.files_under(RUN_A, "")
    # Each finished instruction's node folder is stored, and its kept output beside the node folders.
    assert sum(name.endswith("first.txt") for name in stored) == 1
    assert sum(name.startswith(f"{runs.KEPT}/") for name in stored) == 4  # alone, first, second; the manifest
    assert len(store.read_json(RUN_A, runs.KEPT_MANIFEST)["outputs"]) == 3

    again = Calls(failing=set())
    outputs = run_on(store, RUN_B, RUN_A, again, seen)
    assert again.made == ["third", "join"], "what the parent completed is reused"
    assert outputs[1].path.name == "joined.txt"
    assert not seen[RUN_B].exists()
    results = store.read_json(RUN_B, runs.RESULTS)["results"]
    alone, joined = (r["output"]["uri"] for r in results)
    # The reused output names the parent's object; the new one this run's.
    assert alone.startswith(f"s3://{BUCKET}/team/a/runs/{RUN_A}/nodes/") and alone.endswith("alone.txt")
    assert joined.startswith(f"s3://{BUCKET}/team/a/runs/{RUN_B}/nodes/")
    run, rel = store.locate(joined)
    assert store.read_bytes(run, rel) == b"FIRST+SECOND+THIRD", "the parent's files were fetched for join"
    final = store.read_json(RUN_B, runs.PROGRESS)
    assert final["done"] == final["total"] == 5 and final["error"] is None
    assert {e["state"] for e in final["instructions"]} == {"reused", "succeeded"}

    # A retry of the retry reuses everything, including what the retry itself reused from its parent.
    third = Calls(failing=set())
    run_on(store, RUN_C, RUN_B, third, seen)
    assert third.made == []
    assert store.read_json(RUN_C, runs.RESULTS)["results"][0]["output"]["uri"] == alone


def test_only_the_files_an_instruction_takes_are_fetched(s3, monkeypatch: pytest.MonkeyPatch):
    store, _ = s3
    seen: dict[str, Path] = {}
    with pytest.raises(InstructionFailed):
        run_on(store, RUN_A, None, Calls(failing={"third"}), seen)
    fetched: list[str] = []
    download = store.download

    def counting(run_id: str, rel: str, target: Path) -> int:
        fetched.append(rel.rsplit("/", 1)[-1])
        return download(run_id, rel, target)

    monkeypatch.setattr(store, "download", counting)
    run_on(store, RUN_B, RUN_A, Calls(failing=set()), seen)
    # first and second feed join; alone is a result (its file is shown). Nothing else is downloaded.
    assert sorted(fetched) == ["alone.txt", "first.txt", "second.txt"]


def test_progress_on_s3_is_throttled_but_ends_exact(s3):
    store, client = s3
    plan = build_plan(pipeline(), CATALOG)
    folder = runs.RunFolder.open(store, RUN_A)
    writes: list[dict] = []
    real = store.write_json

    def counting(run_id: str, rel: str, document) -> None:
        writes.append(document)
        real(run_id, rel, document)

    store.write_json = counting  # type: ignore[method-assign]
    try:
        progress = runs.ProgressLog(folder, plan, interval_s=10)
        calls = Calls(failing=set())
        execute(plan, CATALOG, RunContext(run_dir=folder.path, resources=calls), progress.record, max_workers=1)
        progress.close()
    finally:
        folder.close()
        del store.write_json
    assert len(writes) <= 3, "ten events, written at most every 10 s: the first, one more, and the final state"
    assert store.read_json(RUN_A, runs.PROGRESS)["done"] == 5


def test_a_failed_upload_fails_the_run_naming_the_store(s3, monkeypatch: pytest.MonkeyPatch):
    store, _ = s3

    def refuse(run_id: str, rel: str, source: Path) -> None:
        raise RunStoreError(f"cannot write {store.uri(run_id, rel)}: S3 answered AccessDenied")

    monkeypatch.setattr(store, "upload", refuse)
    with pytest.raises(RunStoreError, match=f"could not store the run's files in s3://{BUCKET}/team/a.*AccessDenied"):
        run_on(store, RUN_A, None, Calls(failing=set()), {})


def test_a_local_store_keeps_the_run_where_it_always_was(tmp_path: Path):
    store = LocalRunStore(tmp_path)
    seen: dict[str, Path] = {}
    with pytest.raises(InstructionFailed):
        run_on(store, RUN_A, None, Calls(failing={"third"}), seen)
    run_on(store, RUN_B, RUN_A, Calls(failing=set()), seen)
    assert seen[RUN_B] == tmp_path.resolve() / "runs" / RUN_B and seen[RUN_B].is_dir(), "not removed"
    results = runs.read_json(seen[RUN_B] / runs.RESULTS)["results"]
    assert results[0]["output"]["uri"].startswith((tmp_path.resolve() / "runs" / RUN_A).as_uri())
    assert results[1]["output"]["uri"].startswith((tmp_path.resolve() / "runs" / RUN_B).as_uri())


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 256 KiB filesystem (tmpfs), unmounted at the end."""
    root = tmp_path / "small"
    root.mkdir()
    with small_tmpfs(root, "256k"):
        yield root


def fill(ctx: RunContext, name: Annotated[str, Field(description="a name")]) -> Made:
    """Fill the run's disk to the last byte (as another process might), then succeed."""
    path = ctx.node_dir / f"{name}.fill"
    with path.open("wb", buffering=0) as sink:
        try:
            while True:
                sink.write(b"\0" * 4096)
        except OSError as full:
            assert full.errno == errno.ENOSPC, full
    return Made(name, path)


def test_a_full_disk_under_the_progress_file_does_not_hide_the_instructions_error(small_disk: Path):
    """Progress and kept outputs are views of the run: when the disk fills up they are skipped (with a
    warning), and the run raises the failing instruction's own error, naming it."""
    catalog = Catalog.from_functions([fill, write])
    store = LocalRunStore(small_disk)
    folder = runs.RunFolder.open(store, RUN_A)
    plan = build_plan(
        [
            {"operation": "fill", "parameters": {"name": "filler"}},
            {"operation": "write", "parameters": {"name": "after"}},
        ],
        catalog,
    )
    progress = runs.ProgressLog(folder, plan)  # written while there is room
    kept = runs.KeptOutputs(folder, None)

    def on_event(event) -> None:
        kept.track(event)
        progress.record(event)

    with pytest.raises(InstructionFailed) as failed:
        execute(
            plan,
            catalog,
            RunContext(run_dir=folder.path, resources=Calls(failing=set())),
            on_event,
            max_workers=1,
            reuse=kept,
        )
    progress.fail(failed.value)
    assert failed.value.path == "/instructions/1" and failed.value.operation == "write"
    assert "No space left on device" in str(failed.value)
    assert not list(folder.path.rglob("*.tmp")), "no half-written file left behind"
    assert store.read_json(RUN_A, runs.PROGRESS)["done"] == 0, "the progress file is the one written before"
