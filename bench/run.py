"""Benchmark: submit→SUCCESS of a 3-node Constellation pipeline vs a trivial Dagster job.

Starts one local stack (scripts/stack.py on free ports and temp folders) plus the baseline
code server (bench/baseline_repo.py), then alternates N times between
  pipeline  POST /execute of resize_image(dict_to_list(import_from_local)), polled with GET /runs/{id}
  baseline  GraphQL launchRun of trivial_job, polled with GraphQL runOrError
and prints a Markdown table (also written to bench/out/latest.md). See bench/README.md.

    .venv/bin/python bench/run.py [--repeat 5] [--settle 1.5]
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster
import httpx

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
OUT = ROOT / "bench" / "out" / "latest.md"
HOST = "127.0.0.1"
POLL_S = 0.1
# Pause before each submission. Right after a run's SUCCESS its worker is still shutting down;
# submitting then made about half the submits 4-5 times slower (0.11 s → 0.4-0.55 s, 2 CPUs).
SETTLE_S = 1.5
START_TIMEOUT_S = 120.0
RUN_TIMEOUT_S = 120.0
ENDED = {"SUCCESS", "FAILURE", "CANCELED"}

BASELINE_LOCATION = "baseline"
BASELINE_SELECTOR = {"repositoryLocationName": BASELINE_LOCATION, "repositoryName": "baseline"}
BASELINE_JOB = "trivial_job"


def pipeline(folder: str = "samples") -> dict[str, Any]:
    """import_from_local(folder) → dict_to_list → resize_image to 64×64."""
    imported = {"operation": "import_from_local", "parameters": {"path": folder}}
    listed = {"operation": "dict_to_list", "parameters": {"data": imported}}
    return {
        "instructions": [
            {"operation": "resize_image", "parameters": {"width": 64, "height": 64, "data": listed}},
        ]
    }


PIPELINE = pipeline()

_LAUNCH = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on Error { message }
  }
}"""

_RUN = """
query Run($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run { status startTime endTime }
    ... on Error { message }
  }
}"""

_JOB = """
query Job($selector: PipelineSelector!) {
  pipelineOrError(params: $selector) { __typename }
}"""


class BenchError(RuntimeError):
    """The stack or a run did not behave; the message says what to look at."""


@dataclass(frozen=True)
class Sample:
    submit_s: float  # request sent → the launch answer (a run id) received
    total_s: float  # request sent → the first poll answer that says SUCCESS
    run_s: float | None  # Dagster's own startTime → endTime of the run


@dataclass(frozen=True)
class Poll:
    status: str
    started_at: float | None
    ended_at: float | None


@dataclass
class Stack:
    api: httpx.Client  # the gateway
    dagster: httpx.Client  # the Dagster webserver
    log: Path  # the output of every process we start
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    pipeline: dict[str, Any] = field(default_factory=pipeline)  # what POST /execute sends
    images: int = 0  # how many it resizes

    @classmethod
    def on(cls, ports: dict[str, int], log: Path) -> Stack:
        return cls(
            httpx.Client(base_url=f"http://{HOST}:{ports['api']}", timeout=30),
            httpx.Client(base_url=f"http://{HOST}:{ports['dagster']}", timeout=30),
            log,
        )

    def close(self) -> None:
        """Close the clients, then SIGTERM each process (stack.py stops its own children) and wait."""
        self.api.close()
        self.dagster.close()
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


# -- the two measured kinds ------------------------------------------------------------------


def measure(submit: Callable[[], str], poll: Callable[[str], Poll]) -> Sample:
    """Submit a run, then poll every POLL_S until it ends; raise unless it succeeded."""
    started = time.perf_counter()
    run_id = submit()
    submitted = time.perf_counter()
    deadline = submitted + RUN_TIMEOUT_S
    while True:
        state = poll(run_id)
        now = time.perf_counter()
        if state.status in ENDED:
            break
        if now > deadline:
            raise BenchError(f"run {run_id} still {state.status} after {RUN_TIMEOUT_S:.0f} s")
        time.sleep(POLL_S)
    if state.status != "SUCCESS":
        raise BenchError(f"run {run_id} ended {state.status}")
    run_s = state.ended_at - state.started_at if state.started_at and state.ended_at else None
    return Sample(submit_s=submitted - started, total_s=now - started, run_s=run_s)


def measure_pipeline(stack: Stack) -> Sample:
    def submit() -> str:
        body = _ok(stack.api.post("/execute", json=stack.pipeline))
        if body.get("status") != "success":
            raise BenchError(f"POST /execute answered {body}")
        return body["run_id"]

    def poll(run_id: str) -> Poll:
        body = _ok(stack.api.get(f"/runs/{run_id}"))
        return Poll(body["run_status"], body.get("started_at"), body.get("ended_at"))

    return measure(submit, poll)


def measure_baseline(stack: Stack) -> Sample:
    def submit() -> str:
        params = {"selector": {**BASELINE_SELECTOR, "jobName": BASELINE_JOB}, "runConfigData": {}}
        result = graphql(stack.dagster, _LAUNCH, {"params": params})["launchRun"]
        if result["__typename"] != "LaunchRunSuccess":
            raise BenchError(f"launchRun answered {result}")
        return result["run"]["runId"]

    def poll(run_id: str) -> Poll:
        result = graphql(stack.dagster, _RUN, {"runId": run_id})["runOrError"]
        if result["__typename"] != "Run":
            raise BenchError(f"runOrError answered {result}")
        return Poll(result["status"], result.get("startTime"), result.get("endTime"))

    return measure(submit, poll)


KINDS: dict[str, Callable[[Stack], Sample]] = {"pipeline": measure_pipeline, "baseline": measure_baseline}


def run_interleaved(stack: Stack, repeat: int, settle_s: float) -> dict[str, list[Sample]]:
    """Alternate the kinds, swapping which goes first each round so neither always follows the other."""
    samples: dict[str, list[Sample]] = {kind: [] for kind in KINDS}
    for round_ in range(repeat):
        order = list(KINDS) if round_ % 2 == 0 else list(reversed(KINDS))
        for kind in order:
            time.sleep(settle_s)
            samples[kind].append(KINDS[kind](stack))
            print(f"  round {round_ + 1}/{repeat} {kind:8} {samples[kind][-1].total_s:.3f} s", flush=True)
    return samples


def _ok(response: httpx.Response) -> dict[str, Any]:
    if response.status_code != 200:
        raise BenchError(
            f"{response.request.method} {response.request.url} answered {response.status_code}: {response.text[:500]}"
        )
    return response.json()


def graphql(client: httpx.Client, document: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    payload = _ok(client.post("/graphql", json={"query": document, "variables": variables or {}}))
    if payload.get("errors"):
        raise BenchError(f"GraphQL error: {payload['errors'][0].get('message')}")
    return payload["data"]


# -- the stack -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((HOST, port)) == 0


def wait_for(
    ready: Callable[[], bool],
    what: str,
    processes: Sequence[subprocess.Popen[bytes]],
    timeout_s: float = START_TIMEOUT_S,
    every_s: float = 0.2,
) -> None:
    deadline = time.monotonic() + timeout_s
    while not ready():
        for process in processes:
            if process.poll() is not None:
                raise BenchError(f"{what}: a process exited with code {process.returncode}")
        if time.monotonic() > deadline:
            raise BenchError(f"{what}: not ready after {timeout_s:.0f} s")
        time.sleep(every_s)


def child_env(base: Path, ports: dict[str, int]) -> dict[str, str]:
    """This environment minus any CONSTELLATION_* / DAGSTER_HOME of the caller, plus the bench's."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("CONSTELLATION_") and k != "DAGSTER_HOME"}
    return {
        **inherited,
        "CONSTELLATION_HOST": HOST,
        "CONSTELLATION_GRPC_PORT": str(ports["grpc"]),
        "CONSTELLATION_DAGSTER_PORT": str(ports["dagster"]),
        "CONSTELLATION_API_PORT": str(ports["api"]),
        # Nothing listens there: /health then answers without waiting on a model server.
        "CONSTELLATION_MODEL_SERVER_URL": f"http://{HOST}:{ports['model']}",
        "CONSTELLATION_DATA_ROOT": str(base / "data"),
        "CONSTELLATION_ARTIFACT_ROOT": str(base / "artifacts"),
        "DAGSTER_HOME": str(base / "dagster_home"),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }


def start_baseline_server(env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    command = [
        str(BIN / "dagster"),
        "api",
        "grpc",
        "-m",
        "bench.baseline_repo",
        "-h",
        HOST,
        "-p",
        str(port),
        "--location-name",
        BASELINE_LOCATION,
    ]
    with log.open("ab") as sink:
        return subprocess.Popen(command, cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT)


def start_stack_script(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as sink:
        return subprocess.Popen(
            [sys.executable, str(ROOT / "scripts" / "stack.py")],
            cwd=ROOT,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )


def baseline_workspace(base: Path, port: int) -> Path:
    """The baseline code server as an extra workspace entry for stack.py."""
    path = base / "baseline_workspace.yaml"
    path.write_text(
        f"  - grpc_server:\n      host: {HOST}\n      port: {port}\n      location_name: {BASELINE_LOCATION}\n"
    )
    return path


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def healthy(api: httpx.Client) -> bool:
    try:
        return api.get("/health").status_code == 200
    except httpx.HTTPError:
        return False


def webserver_serves_baseline(dagster_client: httpx.Client) -> bool:
    selector = {**BASELINE_SELECTOR, "pipelineName": BASELINE_JOB}
    result = graphql(dagster_client, _JOB, {"selector": selector})["pipelineOrError"]
    return result["__typename"] == "Pipeline"


def ensure_baseline_loaded(stack: Stack) -> None:
    """Check that the webserver serves the baseline job, and warm up both kinds once."""
    if not webserver_serves_baseline(stack.dagster):
        raise BenchError(f"the webserver does not serve {BASELINE_JOB}@{BASELINE_LOCATION}")
    measure_baseline(stack)
    measure_pipeline(stack)


def scale_samples(data_root: Path, times: int) -> str:
    """The sample images `times` over (hard links under other names) in a folder of their own."""
    source, folder = data_root / "samples", data_root / f"samples_x{times}"
    folder.mkdir(exist_ok=True)
    for copy in range(times):
        for path in sorted(source.rglob("*.jpg")):
            link = folder / f"{copy:03d}_{path.parent.name}_{path.name}"
            if not link.exists():
                os.link(path, link)
    return folder.name


def start(stack: Stack, base: Path, ports: dict[str, int], scale: int = 1) -> None:
    """Sample data, the baseline code server, then stack.py; return once all answer.

    Every process goes into stack.processes as soon as it exists, for main's `finally`.
    """
    env = {**child_env(base, ports), "CONSTELLATION_EXTRA_WORKSPACE": str(baseline_workspace(base, ports["baseline"]))}
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "sample_data.py"), env["CONSTELLATION_DATA_ROOT"]],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    data_root = Path(env["CONSTELLATION_DATA_ROOT"])
    stack.images = len(list((data_root / "samples").rglob("*.jpg"))) * scale
    if scale > 1:
        stack.pipeline = pipeline(scale_samples(data_root, scale))
    stack.processes.append(start_baseline_server(env, ports["baseline"], stack.log))
    wait_for(lambda: port_open(ports["baseline"]), "baseline code server", stack.processes)
    # Stopped first: the daemon stops launching before the baseline server goes away.
    stack.processes.insert(0, start_stack_script(env, stack.log))
    wait_for(lambda: healthy(stack.api), "gateway /health", stack.processes)


# -- the report ------------------------------------------------------------------------------


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _min(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return min(present) if present else None


def _row(label: str, pipeline: float | None, baseline: float | None) -> str:
    ratio = f"{pipeline / baseline:.2f}" if pipeline is not None and baseline else "–"
    cells = [f"{v:.3f}" if v is not None else "–" for v in (pipeline, baseline)]
    return f"| {label} | {cells[0]} | {cells[1]} | {ratio} |"


def render(samples: dict[str, list[Sample]], repeat: int, settle_s: float, images: int) -> str:
    pipeline, baseline = samples["pipeline"], samples["baseline"]
    rows = []
    for label, attr in (
        ("submit→SUCCESS", "total_s"),
        ("submit answered", "submit_s"),
        ("run start→end (Dagster)", "run_s"),
    ):
        for stat_name, stat in (("median", _median), ("min", _min)):
            rows.append(
                _row(
                    f"{label}, {stat_name}",
                    stat([getattr(s, attr) for s in pipeline]),
                    stat([getattr(s, attr) for s in baseline]),
                )
            )
    per_round = "\n".join(
        f"- {kind}: " + ", ".join(f"{s.total_s:.2f} ({s.submit_s:.2f})" for s in kind_samples)
        for kind, kind_samples in samples.items()
    )
    return (
        "## submit→SUCCESS: 3-node Constellation pipeline vs trivial Dagster job\n\n"
        f"The pipeline resizes {images} images. {repeat} interleaved rounds after one warm-up each, "
        f"one local stack, {settle_s} s pause before "
        f"each submission, polling every {POLL_S} s; "
        f"dagster {dagster.__version__}, Python {platform.python_version()}, {platform.system()} "
        f"{platform.machine()}, {os.cpu_count()} CPUs.\n\n"
        "| seconds | pipeline (POST /execute) | baseline (GraphQL launchRun) | pipeline / baseline |\n"
        "|---|---:|---:|---:|\n"
        + "\n".join(rows)
        + f"\n\nsubmit→SUCCESS (submit answered) per round, in seconds:\n{per_round}\n"
    )


# -- main --------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="rounds of each kind (default 5)")
    parser.add_argument(
        "--settle", type=float, default=SETTLE_S, help=f"seconds of pause before each submission (default {SETTLE_S})"
    )
    parser.add_argument(
        "--scale",
        type=int,
        default=1,
        help="the pipeline resizes the sample images this many times over (default 1: 12 images)",
    )
    args = parser.parse_args(argv)
    if args.scale < 1:
        parser.error("--scale must be at least 1")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.settle < 0:
        parser.error("--settle must not be negative")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    ports = {name: free_port() for name in ("grpc", "dagster", "api", "model", "baseline")}
    with tempfile.TemporaryDirectory(prefix="constellation-bench-") as tmp:
        stack = Stack.on(ports, Path(tmp) / "stack.log")
        try:
            print("starting the stack ...", flush=True)
            start(stack, Path(tmp), ports, args.scale)
            print("warming up ...", flush=True)
            ensure_baseline_loaded(stack)
            print(f"measuring {args.repeat} rounds ...", flush=True)
            samples = run_interleaved(stack, args.repeat, args.settle)
        except BenchError:
            print(f"--- last lines of the stack's output ---\n{_tail(stack.log)}", file=sys.stderr)
            raise
        finally:
            print("stopping the stack ...", flush=True)
            stack.close()
    table = render(samples, args.repeat, args.settle, stack.images)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(table)
    print("\n" + table + f"\n(written to {OUT.relative_to(ROOT)})")
    return 0


def _tail(log: Path, lines: int = 40) -> str:
    return "\n".join(_read(log).splitlines()[-lines:])


if __name__ == "__main__":
    sys.exit(main())
