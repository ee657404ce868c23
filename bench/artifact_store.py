"""Benchmark: submit→SUCCESS with an s3:// artifact root vs a local folder, on the same kind of stack.

Starts a moto S3 server (the store), then two local stacks (scripts/stack.py, as run.py starts
them), identical but for CONSTELLATION_ARTIFACT_ROOT: a temp folder, and s3://<bucket>/bench on
the moto server. Both run side by side; rounds alternate between them (the first switching every
round), each one `POST /execute` of run.py's 3-node pipeline polled with `GET /runs/{id}` (which
reads progress from the store).

Then what a run's process does with each root, apart from Dagster's launch: rounds alternate
between fresh processes that import the code location (as a run worker does) and run the same
job in process (`execute_in_process`), timed in wall-clock and in CPU seconds (all threads); CPU
time is what a busy machine cannot blur. Prints Markdown tables (also bench/out/artifact_store.md).

    .venv/bin/python bench/artifact_store.py [--repeat 7] [--worker-repeat 9] [--settle 1.5] [--images 12]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import boto3
import dagster

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.run import (  # noqa: E402
    POLL_S,
    SETTLE_S,
    BenchError,
    Sample,
    Stack,
    _median,
    _min,
    _tail,
    child_env,
    free_port,
    healthy,
    measure_pipeline,
    start_stack_script,
    wait_for,
)

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out" / "artifact_store.md"
BUCKET = "constellation-bench"
S3_ENV = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench-secret", "AWS_DEFAULT_REGION": "us-east-1"}
KINDS = ("local", "s3")


def start_moto(port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )


def moto_ready(endpoint: str) -> bool:
    try:
        client(endpoint).list_buckets()
        return True
    except Exception:  # not listening yet
        return False


def client(endpoint: str):
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=S3_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=S3_ENV["AWS_SECRET_ACCESS_KEY"],
        region_name="us-east-1",
    )


def start_one(base: Path, extra: dict[str, str], images: int) -> Stack:
    ports = {name: free_port() for name in ("grpc", "dagster", "api", "model")}
    base.mkdir(parents=True)
    stack = Stack.on(ports, base / "stack.log")
    # Each stack's own model server port (unused by this pipeline), so that the two do not collide.
    env = {**child_env(base, ports), "CONSTELLATION_MODEL_SERVER_PORT": str(free_port()), **extra}
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "sample_data.py"), env["CONSTELLATION_DATA_ROOT"]],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    _more_samples(Path(env["CONSTELLATION_DATA_ROOT"]) / "samples", images)
    stack.processes.append(start_stack_script(env, stack.log))
    return stack


def _more_samples(folder: Path, images: int) -> None:
    """Copies of the sample images until the folder holds `images` of them (12 come with sample_data.py)."""
    files = sorted(p for p in folder.rglob("*.jpg"))
    for i in range(max(0, images - len(files))):
        source = files[i % len(files)]
        (source.parent / f"copy_{i}_{source.name}").write_bytes(source.read_bytes())


def objects_of(endpoint: str) -> int:
    pages = client(endpoint).get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
    return sum(len(page.get("Contents", ())) for page in pages)


CHILD = """
import json, sys, time
wall, cpu = time.perf_counter(), time.process_time()
from dagster import DagsterInstance
from orchestrator.assets.repository import build_execute_job
imported = time.perf_counter()
result = build_execute_job.execute_in_process(run_config={"ops": {"generate_dynamic_job_configs": {"config": {
    "raw_input": json.loads(sys.argv[1])}}}}, instance=DagsterInstance.ephemeral(), raise_on_error=False)
end = time.perf_counter()
print(json.dumps({"ok": result.success, "import_s": imported - wall, "job_s": end - imported,
                  "total_s": end - wall, "cpu_s": time.process_time() - cpu}))
"""


def worker_round(env: dict[str, str]) -> dict[str, float]:
    """One fresh process: import the code location, run the pipeline in process; its timings."""
    from bench.run import PIPELINE

    answer = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(PIPELINE["instructions"])],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [line for line in answer.stdout.splitlines() if line.startswith("{")]
    if answer.returncode != 0 or not lines or not json.loads(lines[-1])["ok"]:
        raise BenchError(f"the in-process run failed:\n{answer.stdout[-2000:]}\n{answer.stderr[-2000:]}")
    return json.loads(lines[-1])


def measure_workers(base: Path, endpoint: str, repeat: int) -> dict[str, list[dict[str, float]]]:
    """Fresh processes of each kind, alternating (the first switching every round)."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("CONSTELLATION_")}
    common = {**inherited, "PYTHONPATH": str(ROOT), "DAGSTER_HOME": str(base / "worker_home")}
    (base / "worker_home").mkdir(exist_ok=True)
    envs = {
        "local": {
            **common,
            "CONSTELLATION_DATA_ROOT": str(base / "local" / "data"),
            "CONSTELLATION_ARTIFACT_ROOT": str(base / "local" / "worker_artifacts"),
        },
        "s3": {
            **common,
            **S3_ENV,
            "CONSTELLATION_DATA_ROOT": str(base / "s3" / "data"),
            "CONSTELLATION_ARTIFACT_ROOT": f"s3://{BUCKET}/worker",
            "CONSTELLATION_S3_ENDPOINT_URL": endpoint,
        },
    }
    rounds: dict[str, list[dict[str, float]]] = {kind: [] for kind in KINDS}
    for round_ in range(repeat):
        for kind in KINDS if round_ % 2 == 0 else tuple(reversed(KINDS)):
            timing = worker_round(envs[kind])
            rounds[kind].append(timing)
            print(
                f"  process {round_ + 1}/{repeat} {kind:5} {timing['total_s']:.3f} s, CPU {timing['cpu_s']:.3f} s",
                flush=True,
            )
    return rounds


def render_workers(rounds: dict[str, list[dict[str, float]]]) -> str:
    rows = []
    for label, key in (
        ("import of the code location", "import_s"),
        ("the job, in process", "job_s"),
        ("process total, wall-clock", "total_s"),
        ("process total, CPU (all threads)", "cpu_s"),
    ):
        local, s3 = (_median([r[key] for r in rounds[k]]) for k in KINDS)
        rows.append(f"| {label} | {local:.3f} | {s3:.3f} | {s3 - local:+.3f} | {s3 / local:.3f} |")
    return (
        f"\n## A run's process: the same job in process, {len(rounds['local'])} alternating fresh processes each\n\n"
        "| seconds (median) | local folder | s3:// (moto) | s3 − local | s3 / local |\n"
        "|---|---:|---:|---:|---:|\n" + "\n".join(rows) + "\n"
    )


def render(samples: dict[str, list[Sample]], repeat: int, settle_s: float, images: int, objects: int) -> str:
    rows = []
    for label, attr in (
        ("submit→SUCCESS", "total_s"),
        ("submit answered", "submit_s"),
        ("run start→end (Dagster)", "run_s"),
    ):
        for stat_name, stat in (("median", _median), ("min", _min)):
            local, s3 = (stat([getattr(s, attr) for s in samples[k]]) for k in KINDS)
            ratio = f"{s3 / local:.3f}" if local and s3 is not None else "–"
            cells = [f"{v:.3f}" if v is not None else "–" for v in (local, s3)]
            rows.append(f"| {label}, {stat_name} | {cells[0]} | {cells[1]} | {ratio} |")
    per_round = "\n".join(f"- {kind}: " + ", ".join(f"{s.total_s:.2f}" for s in samples[kind]) for kind in KINDS)
    return (
        "## submit→SUCCESS: s3:// artifact root vs a local folder\n\n"
        f"resize_image(64×64) over dict_to_list(import_from_local) of {images} JPEGs, two local stacks side by "
        f"side (one with CONSTELLATION_ARTIFACT_ROOT a temp folder, one s3:// on a moto server), {repeat} "
        f"alternating rounds after one warm-up each, {settle_s} s pause before each submission, polling "
        f"every {POLL_S} s; dagster {dagster.__version__}, Python {platform.python_version()}, "
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs. Objects in the bucket at the end: "
        f"{objects}.\n\n"
        "| seconds | local folder | s3:// (moto) | s3 / local |\n"
        "|---|---:|---:|---:|\n" + "\n".join(rows) + f"\n\nsubmit→SUCCESS per round, in seconds:\n{per_round}\n"
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=7, help="rounds of each kind (default 7)")
    parser.add_argument(
        "--settle", type=float, default=SETTLE_S, help=f"seconds of pause before each submission (default {SETTLE_S})"
    )
    parser.add_argument("--images", type=int, default=12, help="sample images the pipeline resizes (default 12)")
    parser.add_argument(
        "--worker-repeat",
        type=int,
        default=9,
        help="fresh processes of each kind for the run-process table (default 9; 0: none)",
    )
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.images < 1 or args.worker_repeat < 0:
        parser.error("--repeat and --images must be at least 1, --worker-repeat at least 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="constellation-bench-store-") as tmp:
        base = Path(tmp)
        port = free_port()
        endpoint = f"http://127.0.0.1:{port}"
        moto = start_moto(port, base / "moto.log")
        stacks: dict[str, Stack] = {}
        workers: dict[str, list[dict[str, float]]] = {}
        try:
            wait_for(lambda: moto_ready(endpoint), "moto server", [moto])
            client(endpoint).create_bucket(Bucket=BUCKET)
            print("starting the two stacks ...", flush=True)
            stacks["local"] = start_one(base / "local", {}, args.images)
            stacks["s3"] = start_one(
                base / "s3",
                {
                    **S3_ENV,
                    "CONSTELLATION_ARTIFACT_ROOT": f"s3://{BUCKET}/bench",
                    "CONSTELLATION_S3_ENDPOINT_URL": endpoint,
                },
                args.images,
            )
            for kind, stack in stacks.items():
                wait_for(lambda stack=stack: healthy(stack.api), f"{kind} gateway /health", stack.processes)
            print("warming up ...", flush=True)
            for stack in stacks.values():
                measure_pipeline(stack)
            samples: dict[str, list[Sample]] = {kind: [] for kind in KINDS}
            print(f"measuring {args.repeat} rounds ...", flush=True)
            for round_ in range(args.repeat):
                for kind in KINDS if round_ % 2 == 0 else tuple(reversed(KINDS)):
                    time.sleep(args.settle)
                    samples[kind].append(measure_pipeline(stacks[kind]))
                    print(f"  round {round_ + 1}/{args.repeat} {kind:5} {samples[kind][-1].total_s:.3f} s", flush=True)
            local_files = (
                [p for p in (base / "s3" / "artifacts").rglob("*")] if (base / "s3" / "artifacts").exists() else []
            )
            if local_files:
                raise BenchError(f"the s3 stack wrote {len(local_files)} files to a local artifact folder")
            objects = objects_of(endpoint)
            if args.worker_repeat:
                print(f"stopping the stacks; {args.worker_repeat} fresh processes of each kind ...", flush=True)
                for stack in stacks.values():
                    stack.close()
                stacks.clear()
                workers = measure_workers(base, endpoint, args.worker_repeat)
        except BenchError:
            for kind, stack in stacks.items():
                print(f"--- last lines of the {kind} stack's output ---\n{_tail(stack.log)}", file=sys.stderr)
            raise
        finally:
            print("stopping ...", flush=True)
            for stack in stacks.values():
                stack.close()
            moto.terminate()
            moto.wait(30)
    table = render(samples, args.repeat, args.settle, args.images, objects)
    if workers:
        table += render_workers(workers)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(table)
    print("\n" + table + f"\n(written to {OUT.relative_to(ROOT)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
