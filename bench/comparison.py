"""Benchmark: tabular inference through the model server vs ONNX Runtime in process, and the comparison
step's own time against the inference it compares.

    .venv/bin/python bench/comparison.py [--rows 20000] [--compare-rows 10000] [--repeat 3]

Three scikit-learn classifiers of very different cost (a logistic regression, 100 rounds of gradient
boosting, a 200-tree random forest) and three regressors are trained here on synthetic rows of 20
features, exported to ONNX with skl2onnx (zipmap off, as scripts/sample_models.py does) into a
temporary models root, and loaded by a real model server (`python -m model_server`) as
tabular-classification / tabular-regression.

1. Throughput: the client model_inference uses (`ModelServer.predict_rows`) sends `--rows` rows in
   requests of 16 (model_inference's default batch_size) and of 256; the baseline runs
   `onnxruntime.InferenceSession.run` in this process on the same rows in the same batches (float32
   arrays made before the clock starts). Interleaved rounds, the side that goes first switching every
   round; the median of `--repeat`.
2. Where one request's time goes: the same request peeled layer by layer (the real client; one raw POST
   of a body encoded beforehand; a metadata GET, which the client made before every request until
   4ff79db; the HTTP floor, GET /v2/health/ready) and the server's steps timed in this process on the same body (parsing
   into the protocol's pydantic models, the per-value check and conversion of the rows, ONNX Runtime,
   turning the outputs into lists, the answer's JSON).
1b. A table through model_inference's own path (`--table-rows`, 10,000 rows): the rows already read as this
   checkout's model_inference reads them (before the clock), then predicted through the server into prediction
   items (the clock), at its default batch size and at 256; the baseline runs ONNX Runtime in process on the
   same rows as float32 arrays in the same batches, with its default options and, beside it, with its threads
   not spinning after a run (as the server runs a tabular model). The issue's goal: server time ≤ 1.2 × in
   process + 20 ms per model at the default batch size, and the forest's throughput at 256 ≥ 0.85 × in process.
3. The comparison step: the `model_inference` op over a table of `--compare-rows` rows for the three
   models (batch 16 and 256), then the `compare_models` op on their predictions (truth from the same
   table, bootstrap intervals, McNemar, charts, Markdown, the HTML page with the rows the models disagree
   on), warm (median of `--repeat` in this process) and cold (its first call in a fresh process, as in
   a run worker: matplotlib and the statistics imported on first use). Also for the regressors, and for
   the classifiers' predictions presented as image predictions (24 disagreement thumbnails of a
   1024×768 JPEG).

4. compare_models beside a plain script (bench/plain_comparison.py: the same metrics, intervals, tests and charts
   with scikit-learn, SciPy, statsmodels and matplotlib called directly on the same classifier predictions), and,
   with `--before DIR`, beside another checkout's compare_models: each side in a fresh process per round (its
   first call is the cold one: the libraries imported on first use; then `--repeat` warm calls, median), the
   sides' order turning every round, on the batch-16 classification predictions of part 3.

`--server-from DIR` runs the model server (and the in-process server steps of part 2) from another
checkout's `model_server/`, to compare two commits. `--before DIR` (part 4) runs that checkout's compare_models.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import platform
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.inference import free_port, wait_until_ready  # noqa: E402

OUT = ROOT / "bench" / "out" / "comparison.md"
FEATURES = [f"f{i:02d}" for i in range(20)]
CLASSES = ("low", "medium", "high")
CLASSIFIERS = ("logreg", "boosting", "forest")
REGRESSORS = ("ridge", "boosting-reg", "forest-reg")
DESCRIBED = {
    "logreg": "logistic regression",
    "boosting": "gradient boosting, 100 rounds × 3 classes of depth 3",
    "forest": "random forest, 200 trees of depth ≤ 12",
    "ridge": "ridge regression",
    "boosting-reg": "gradient boosting, 100 trees of depth 3",
    "forest-reg": "random forest, 100 trees of depth ≤ 12",
}


# --- data and models ---------------------------------------------------------------------------------------------


def make_data(count: int, seed: int = 0) -> tuple[Any, Any, Any]:
    """`count` rows of 20 features (float64), their class (3, overlapping) and a regression target."""
    import numpy as np
    from sklearn.datasets import make_classification

    x, y = make_classification(
        n_samples=count,
        n_features=len(FEATURES),
        n_informative=10,
        n_redundant=4,
        n_classes=len(CLASSES),
        n_clusters_per_class=2,
        class_sep=0.8,
        flip_y=0.05,
        random_state=seed,
    )
    rng = np.random.default_rng(seed)
    target = x @ rng.normal(size=len(FEATURES)) + 2 * np.sin(x[:, 0]) + x[:, 1] * x[:, 2] + rng.normal(size=count)
    return x, np.array(CLASSES, dtype=object)[y], target


def make_models(root: Path, x: Any, classes: Any, target: Any) -> dict[str, tuple[Path, str]]:
    """Train the six models on (x, classes / target) and save them as ONNX under `root`: {name: (path, task)}."""
    from sklearn.ensemble import (
        GradientBoostingClassifier,
        GradientBoostingRegressor,
        RandomForestClassifier,
        RandomForestRegressor,
    )
    from sklearn.linear_model import LogisticRegression, Ridge

    sys.path.insert(0, str(ROOT / "scripts"))
    from tiny_models import save_sklearn_onnx

    made = {
        "logreg": LogisticRegression(max_iter=2000),
        "boosting": GradientBoostingClassifier(n_estimators=100, max_depth=3, random_state=0),
        "forest": RandomForestClassifier(n_estimators=200, max_depth=12, n_jobs=-1, random_state=0),
        "ridge": Ridge(),
        "boosting-reg": GradientBoostingRegressor(n_estimators=100, max_depth=3, random_state=0),
        "forest-reg": RandomForestRegressor(n_estimators=100, max_depth=12, n_jobs=-1, random_state=0),
    }
    models = {}
    for name, model in made.items():
        classifier = name in CLASSIFIERS
        model.fit(x, classes if classifier else target)
        path = save_sklearn_onnx(
            model, root / f"bench-{name}.onnx", len(FEATURES), {"zipmap": False} if classifier else None
        )
        models[name] = (path, "tabular-classification" if classifier else "tabular-regression")
    return models


def write_table(path: Path, x: Any, classes: Any, target: Any) -> Any:
    """The rows as a Table (JSON Lines): id, the 20 features, the class (`label`) and the value (`target`)."""
    from orchestrator.datasets import Table

    with path.open("w") as out:
        for i, (row, label, value) in enumerate(zip(x.tolist(), classes, target.tolist(), strict=True)):
            out.write(
                json.dumps(
                    {"id": f"row-{i:06d}", **dict(zip(FEATURES, row, strict=True)), "label": label, "target": value}
                )
                + "\n"
            )
    return Table(path, ["id", *FEATURES, "label", "target"], len(x))


# --- the model server --------------------------------------------------------------------------------------------


def client_takes_token() -> bool:
    from orchestrator.models.client import ModelServer

    return "token" in inspect.signature(ModelServer).parameters


def make_client(url: str, token: str | None, check_cancelled: Callable[[], None] = lambda: None) -> Any:
    from orchestrator.models.client import ModelServer

    if token is not None:
        return ModelServer(url, check_cancelled=check_cancelled, token=token)
    return ModelServer(url, check_cancelled=check_cancelled)


def start_server(models_root: Path, port: int, token: str | None, cwd: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "CONSTELLATION_MODELS_ROOT": str(models_root), "CONSTELLATION_MODEL_SERVER_PORT": str(port)}
    env.pop("CONSTELLATION_MODEL_SERVER_TOKEN", None)
    if token is not None:
        env["CONSTELLATION_MODEL_SERVER_TOKEN"] = token
    process = subprocess.Popen(
        [sys.executable, "-m", "model_server"], cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    return wait_until_ready(process, port, 60, "the model server")


class Connection:
    """What ctx.resources.model_server is to the ops: connect() gives a client."""

    def __init__(self, url: str, token: str | None):
        self.url, self.token = url, token

    def connect(self, check_cancelled: Callable[[], None] = lambda: None) -> Any:
        return make_client(self.url, self.token, check_cancelled)


# --- 1. throughput -------------------------------------------------------------------------------------------------


def through_server(client: Any, model: str, task: str, rows: list[list[float]], batch: int) -> float:
    start = time.perf_counter()
    for i in range(0, len(rows), batch):
        client.predict_rows(model, rows[i : i + batch], task)
    return time.perf_counter() - start


def in_process(session: Any, arrays: list[Any]) -> float:
    name = session.get_inputs()[0].name
    start = time.perf_counter()
    for array in arrays:
        session.run(None, {name: array})
    return time.perf_counter() - start


def throughput(
    client: Any, sessions: dict[str, Any], models: dict[str, tuple[Path, str]], x: Any, batches: list[int], repeat: int
) -> dict[tuple[str, str, int], list[float]]:
    import numpy as np

    rows = x.tolist()
    split = {b: [x[i : i + b].astype(np.float32) for i in range(0, len(x), b)] for b in batches}
    for name in CLASSIFIERS:  # warm-up, not counted; and the same labels on both sides
        task = models[name][1]
        answer = client.predict_rows(name, rows[:256], task)
        local = sessions[name].run(None, {sessions[name].get_inputs()[0].name: x[:256].astype(np.float32)})[0]
        if [a["label"] for a in answer] != [str(v) for v in local.tolist()]:
            raise RuntimeError(f"{name}: the server's labels differ from ONNX Runtime's in process")
    times: dict[tuple[str, str, int], list[float]] = {}
    for round_ in range(repeat):
        for name in CLASSIFIERS:
            for batch in batches:
                sides = [
                    ("server", lambda n=name, b=batch: through_server(client, n, models[n][1], rows, b)),
                    ("in-process", lambda n=name, b=batch: in_process(sessions[n], split[b])),
                ]
                for side, run in sides[::-1] if round_ % 2 else sides:
                    times.setdefault((name, side, batch), []).append(run())
                print(
                    f"round {round_ + 1}: {name} batch {batch}: server "
                    f"{times[(name, 'server', batch)][-1]:.2f} s, in process "
                    f"{times[(name, 'in-process', batch)][-1]:.3f} s",
                    flush=True,
                )
    return times


# --- 1b. a table through model_inference's path -------------------------------------------------------------------


def table_predictor(client: Any, table: Any, name: str, task: str, batch: int | None) -> tuple[Callable[[], Any], int]:
    """A call predicting every row of `table` as this checkout's model_inference does, from rows already read (read
    here, before any clock) to its prediction items; and the batch size it sends (None: its default)."""
    from orchestrator.models import inference

    top_k = 3  # what model_inference asks for of a 3-class model (every class's score)
    if hasattr(inference, "read_features"):  # the feature columns as one array, sent in binary
        rows = inference.read_features(table, FEATURES, "id")
        options = inference.TableOptions(top_k, FEATURES, "id", None, batch)
        size = batch or inference.TABULAR_BATCH_SIZE
        return (lambda: inference.predict_features(client, name, task, rows, options, lambda: None)[0]), size
    # Before: the rows as dicts, cut into requests of batch_size (model_inference's default 16); each request's
    # features, JSON and answer in the clock, as predict_table did them.
    size = batch or 16
    chunks = list(inference._chunks(inference.keyed_rows(table, "id"), size))
    options = inference.TableOptions(top_k, FEATURES, "id", None, size)

    def run() -> list[Any]:
        timing, items = inference.Timing(), []
        for chunk in chunks:
            items += inference._table_batch(client, name, task, chunk, options, timing)
        return items

    return run, size


def table_inference(
    client: Any,
    sessions: dict[str, Any],
    unspun: dict[str, Any],
    table: Any,
    x: Any,
    repeat: int,
    batches: list[int | None],
) -> dict[tuple[str, str, int | None], Any]:
    """Seconds per round of each side (server through model_inference's path, ONNX Runtime in process with its
    default options, and with its threads not spinning after a run), per model and batch; the sides take turns,
    the first changing every round. Also the batch sizes sent."""
    import numpy as np

    found: dict[tuple[str, str, int | None], Any] = {}
    for name in CLASSIFIERS:
        for batch in batches:
            predict, size = table_predictor(client, table, name, "tabular-classification", batch)
            arrays = [x[i : i + size].astype(np.float32) for i in range(0, len(x), size)]
            items = predict()  # warm-up, and the same labels on both sides
            local = np.concatenate(
                [sessions[name].run(None, {sessions[name].get_inputs()[0].name: a})[0] for a in arrays]
            )
            if [item["labels"][0] for item in items] != [str(v) for v in local.tolist()]:
                raise RuntimeError(f"{name}: the server's labels differ from ONNX Runtime's in process")
            found[(name, "size", batch)] = size
            sides = [
                ("server", predict),
                ("in-process", lambda s=sessions[name], a=arrays: in_process(s, a)),
                ("unspun", lambda s=unspun[name], a=arrays: in_process(s, a)),
            ]
            for round_ in range(repeat):
                turn = round_ % len(sides)
                for side, run in sides[turn:] + sides[:turn]:
                    start = time.perf_counter()
                    run()
                    found.setdefault((name, side, batch), []).append(time.perf_counter() - start)
            print(
                f"table: {name} batch {size}: server {statistics.median(found[(name, 'server', batch)]):.3f} s, "
                f"in process {statistics.median(found[(name, 'in-process', batch)]):.3f} s, not spinning "
                f"{statistics.median(found[(name, 'unspun', batch)]):.3f} s",
                flush=True,
            )
    return found


# --- 2. where a request's time goes ----------------------------------------------------------------------------


def interleaved(layers: dict[str, tuple[Callable[[Any], Any], list[Any]]]) -> dict[str, float]:
    """The median seconds per call of each layer. Call i of every layer runs next to call i of the others (in
    an order that turns), so that a busy moment of the machine hits them alike."""
    names = list(layers)
    spent: dict[str, list[float]] = {name: [] for name in names}
    count = min(len(items) for _, items in layers.values())
    for i in range(count):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            call, items = layers[name]
            start = time.perf_counter()
            call(items[i])
            spent[name].append(time.perf_counter() - start)
    return {name: statistics.median(times) for name, times in spent.items()}


def breakdown(
    url: str, token: str | None, name: str, path: Path, task: str, x: Any, batch: int, calls: int
) -> dict[str, float]:
    """Median seconds per request of each layer, for requests of `batch` rows of x."""
    from model_server.protocol import InferRequest, InferResponse
    from model_server.routes import parse
    from model_server.tasks.tabular import TabularClassifier, TabularRegressor

    try:
        from model_server.tasks.base import InferLimits

        limits: Any = InferLimits()
    except ImportError:  # before the limits object: a batch size
        limits = 8
    calls = min(calls, len(x) // batch)
    client = make_client(url, token)
    metadata = client.metadata(name)
    input_name = metadata["inputs"][0]["name"]
    chunks = [x[i * batch : (i + 1) * batch].tolist() for i in range(calls)]
    bodies = [
        {
            "inputs": [
                {
                    "name": input_name,
                    "shape": [len(c), len(c[0])],
                    "datatype": "FP32",
                    "data": [v for row in c for v in row],
                }
            ],
            "parameters": {},
        }
        for c in chunks
    ]

    def dumps(body: Any) -> bytes:  # as httpx encodes `json=`
        return json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()

    encoded = [dumps(b) for b in bodies]
    headers = {"Content-Type": "application/json"} | ({"Authorization": f"Bearer {token}"} if token else {})
    raw = httpx.Client(base_url=url, headers=headers, timeout=60)
    answers = [raw.post(f"/v2/models/{name}/infer", content=body).content for body in encoded]
    # The client alone: the same client over a transport that answers at once with the answers recorded above.
    current = {"answer": answers[0]}

    def recorded(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return httpx.Response(200, json=metadata)
        return httpx.Response(200, content=current["answer"], headers={"Content-Type": "application/json"})

    offline = make_client(url, token)
    offline._http = httpx.Client(base_url=url, transport=httpx.MockTransport(recorded))
    offline._plain = None  # every request through httpx's transport, the recorded one (the client since 2026-12-07)

    def client_alone(i: int) -> None:
        current["answer"] = answers[i]
        offline.predict_rows(name, chunks[i], task)

    model = (TabularClassifier if task == "tabular-classification" else TabularRegressor).load(str(path), None)
    parsed = [parse(body, InferRequest) for body in encoded]
    arrays = [model.rows(p.inputs) for p in parsed]
    outputs = [model.infer(p.inputs, p.parameters, limits) for p in parsed]
    ran = [model.run(a) for a in arrays]
    session_run = model.run

    def without_model(i: int) -> None:  # model.infer with the graph's answers ready: rows() and the outputs
        model.run = lambda _rows: ran[i]
        try:
            model.infer(parsed[i].inputs, parsed[i].parameters, limits)
        finally:
            model.run = session_run

    indexes = list(range(calls))
    binary = binary_layers(url, token, name, path, task, x, batch, calls, client)
    layers = interleaved(
        {
            **binary,
            "whole": (lambda c: client.predict_rows(name, c, task), chunks),
            "post": (lambda b: raw.post(f"/v2/models/{name}/infer", content=b), encoded),
            "metadata": (lambda _: client.metadata(name), chunks),
            "floor": (lambda _: raw.get("/v2/health/ready"), chunks),
            "client": (client_alone, indexes),
            "encode": (dumps, bodies),
            "decode": (json.loads, answers),
            "parse": (lambda b: parse(b, InferRequest), encoded),
            "rows": (lambda p: model.rows(p.inputs), parsed),
            "run": (model.run, arrays),
            "infer": (without_model, indexes),
            "respond": (
                lambda o: InferResponse(model_name=name, outputs=o).model_dump_json(exclude_none=True),
                outputs,
            ),
        }
    )
    for closing in (client, offline, raw, model):
        closing.close()
    return layers


def binary_layers(
    url: str, token: str | None, name: str, path: Path, task: str, x: Any, batch: int, calls: int, client: Any
) -> dict[str, tuple[Callable[[Any], Any], list[Any]]]:
    """The binary request model_inference sends (`predict_array`), and beside it the server's work on the same body
    in this process (`answer_inference`, where the checkout has it: parse, checks, model, answer) and the HTTP
    floor over the standard library's http.client (a kept-alive connection, as the client keeps it)."""
    import http.client
    import urllib.parse

    import numpy as np

    arrays = [np.ascontiguousarray(x[i * batch : (i + 1) * batch], dtype=np.float32) for i in range(calls)]
    layers: dict[str, tuple[Callable[[Any], Any], list[Any]]] = {}
    if hasattr(client, "predict_array"):
        layers["binary"] = (lambda a: client.predict_array(name, a, task), arrays)
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=60)

    def floor(_: Any) -> None:
        connection.request("GET", "/v2/health/ready")
        connection.getresponse().read()

    layers["binary floor"] = (floor, arrays)
    try:
        from model_server.registry import Limits, ModelRegistry
        from model_server.routes import answer_inference
    except ImportError:  # a checkout before 2026-12-07
        return layers
    from model_server.config import Settings

    settings = Settings(models_root=path.parent)
    registry = ModelRegistry(settings.models_root, settings.batch_size, settings.device, Limits.from_settings(settings))
    registry.load(name, path.name, task)
    input_name = client.metadata(name)["inputs"][0]["name"]
    wanted = [{"name": "label", "parameters": {"binary_data": False}}]
    if task == "tabular-classification":
        wanted.append({"name": "probabilities", "parameters": {"binary_data": True}})
    bodies = []
    for array in arrays:
        head = json.dumps(
            {
                "inputs": [
                    {
                        "name": input_name,
                        "shape": list(array.shape),
                        "datatype": "FP32",
                        "parameters": {"binary_data_size": array.nbytes},
                    }
                ],
                "outputs": wanted if task == "tabular-classification" else [{"name": "value"}],
            }
        ).encode()
        bodies.append((memoryview(head + array.tobytes()), str(len(head))))
    layers["binary server"] = (lambda b: answer_inference(registry, name, b[0], b[1]), bodies)
    return layers


def derived(layers: dict[str, float]) -> list[tuple[str, float]]:
    """The table's rows, in seconds per request: each layer measured, and what is left between them."""
    nan = float("nan")
    server = layers["parse"] + layers["infer"] + layers["run"] + layers["respond"]
    return [
        ("whole request through the client (`predict_rows`)", layers["whole"]),
        ("client CPU alone (same client, recorded answers, no server)", layers["client"]),
        ("  JSON encoding of the request (`json.dumps`, as httpx does)", layers["encode"]),
        ("  JSON decoding of the answer", layers["decode"]),
        (
            "  the rest: float() and finite check per value, httpx, per-row dicts",
            layers["client"] - layers["encode"] - layers["decode"],
        ),
        ("metadata GET round trip (once per model since 4ff79db; before it, once per request)", layers["metadata"]),
        ("inference POST of a body encoded beforehand (round trip)", layers["post"]),
        ("  server: JSON → `InferRequest` (pydantic, flatten)", layers["parse"]),
        ("  server: `rows()` per-value type check, list → ndarray", layers["rows"]),
        ("  server: ONNX Runtime `session.run` (the model)", layers["run"]),
        ("  server: outputs → lists, labels", layers["infer"] - layers["rows"]),
        ("  server: `InferResponse` → JSON", layers["respond"]),
        ("  HTTP, uvicorn, FastAPI, threadpool, access log (POST − server steps)", layers["post"] - server),
        ("bare GET /v2/health/ready (the HTTP floor)", layers["floor"]),
        ("binary request through the client (`predict_array`, model_inference's path)", layers.get("binary", nan)),
        ("  server: the request's work in this process (`answer_inference`)", layers.get("binary server", nan)),
        ("  of which ONNX Runtime `session.run` (the model)", layers["run"]),
        (
            "  HTTP both ways, uvicorn, the threadpool hand-off, the client (binary − server work)",
            layers.get("binary", nan) - layers.get("binary server", nan),
        ),
        ("bare GET /v2/health/ready over http.client (the HTTP floor without httpx)", layers["binary floor"]),
    ]


# --- 3. the comparison step ------------------------------------------------------------------------------------


def run_context(base: Path, key: str, url: str, token: str | None) -> Any:
    from orchestrator.engine import RunContext

    return RunContext(run_dir=base, resources=SimpleNamespace(model_server=Connection(url, token)), node_key=key)


def inference_ops(
    base: Path, url: str, token: str | None, table: Any, names: tuple[str, ...], batch: int
) -> tuple[list[Any], float]:
    """model_inference for each model over the table: the predictions, and the seconds of the three calls."""
    from orchestrator.assets import ops

    results, spent = [], 0.0
    for name in names:
        ctx = run_context(base, f"infer-{name}-{batch}", url, token)
        start = time.perf_counter()
        results.append(ops.model_inference(ctx, name, table, batch_size=batch, features=FEATURES, key="id"))
        spent += time.perf_counter() - start
    return results, spent


def compare_step(base: Path, key: str, results: list[Any], table: Any, column: str) -> float:
    from orchestrator.assets import ops

    ctx = run_context(base, key, "http://127.0.0.1:1", None)
    start = time.perf_counter()
    ops.compare_models(ctx, results, truth=table, truth_key="id", truth_column=column)
    return time.perf_counter() - start


def compare_pieces(folder: Path, results: list[Any], table: Any, column: str) -> dict[str, float]:
    """The calls compare_models makes, each timed: {piece: seconds}."""
    from orchestrator import compare
    from orchestrator.compare import reporting
    from orchestrator.compare import truth as truth_sources

    spent: dict[str, float] = {}

    def timed(piece: str, call: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        answer = call()
        spent[piece] = time.perf_counter() - start
        return answer

    task = results[0].task
    truth = timed("truth from the table", lambda: truth_sources.from_table(table, task, "id", column))
    runs = [
        compare.ModelRun(model=r.model, task=r.task, items=r.items, stats=r.stats, labels=r.labels) for r in results
    ]
    report = timed("compare(): metrics, bootstrap intervals, tests", lambda: compare.compare(runs, truth))
    charts = timed("charts() (matplotlib PNGs)", lambda: compare.charts(report, folder / "charts"))
    timed("markdown() + comparison.json", lambda: (compare.markdown(report), json.dumps(report, indent=1)))
    shown = timed("disagreements (rows or thumbnails)", lambda: reporting.disagreements(results, runs, truth))
    timed("html_report()", lambda: compare.html_report(report, charts, shown, title="Comparison"))
    return spent


def as_images(results: list[Any], jpeg: Path) -> list[Any]:
    """The same predictions as image-classification predictions, every input an image file (for thumbnails)."""
    from orchestrator.datasets import Predictions

    images = []
    for r in results:
        inputs = {item["name"]: jpeg for item in r.items}
        images.append(
            Predictions(r.model, r.items, r.stats, r.path, task="image-classification", labels=r.labels, inputs=inputs)
        )
    return images


def make_jpeg(path: Path) -> Path:
    from PIL import Image, ImageDraw

    image = Image.linear_gradient("L").resize((1024, 768)).convert("RGB")
    draw = ImageDraw.Draw(image)
    for k in range(12):
        draw.ellipse((k * 70, k * 50, k * 70 + 160, k * 50 + 120), fill=((k * 40) % 256, (k * 70) % 256, 90))
    image.save(path, quality=90)
    return path


def cold_step(spec_path: Path) -> float:
    """Run in a fresh process: load the saved predictions, then time compare_models' first call."""
    from orchestrator.assets import ops  # noqa: F401  (a run worker has imported the ops before any runs)
    from orchestrator.datasets import Predictions, Table

    spec = json.loads(spec_path.read_text())
    table = Table(Path(spec["table"]), spec["columns"], spec["count"])
    results = []
    for path in spec["predictions"]:
        saved = json.loads(Path(path).read_text())
        result = Predictions(
            saved["model"], saved["predictions"], saved["stats"], Path(path), task=saved["task"], labels=saved["labels"]
        )
        result.table, result.table_key = table, "id"
        results.append(result)
    if spec.get("jpeg"):
        results = as_images(results, Path(spec["jpeg"]))
    return compare_step(Path(spec["run_dir"]), "cold", results, table, spec["column"])


def cold_in_subprocess(spec: dict[str, Any], folder: Path) -> float:
    path = folder / f"cold-{time.monotonic_ns()}.json"
    path.write_text(json.dumps(spec))
    answer = subprocess.run(
        [sys.executable, __file__, "--cold", str(path)], capture_output=True, text=True, cwd=ROOT, check=True
    )
    return float(answer.stdout.strip().splitlines()[-1])


def side_step(spec_path: Path) -> dict[str, Any]:
    """Run in a fresh process: one side of part 4, its first (cold) call then `warm` more; the seconds of each."""
    spec = json.loads(spec_path.read_text())
    sys.path.insert(0, spec["root"])  # that checkout's orchestrator (the plain script imports none of it)
    predictions = [json.loads(Path(path).read_text()) for path in spec["predictions"]]
    table = Path(spec["table"])
    if spec["side"] == "plain":
        from bench import plain_comparison

        def call(k: int) -> float:
            start = time.perf_counter()
            plain_comparison.compare(predictions, table, spec["column"], "id", Path(spec["run_dir"]) / f"plain-{k}")
            return time.perf_counter() - start
    else:
        from orchestrator.assets import ops  # noqa: F401  (a run worker has imported the ops before any runs)
        from orchestrator.datasets import Predictions, Table

        rows = Table(table, spec["columns"], spec["count"])
        results = []
        for path, saved in zip(spec["predictions"], predictions, strict=True):
            result = Predictions(
                saved["model"],
                saved["predictions"],
                saved["stats"],
                Path(path),
                task=saved["task"],
                labels=saved["labels"],
            )
            result.table, result.table_key = rows, "id"
            results.append(result)

        def call(k: int) -> float:
            return compare_step(Path(spec["run_dir"]), f"{spec['side']}-{k}", results, rows, spec["column"])

    times = [call(k) for k in range(spec["warm"] + 1)]
    where = sys.modules["orchestrator"].__file__ if "orchestrator" in sys.modules else None
    if spec["side"] == "ours" and not str(where).startswith(spec["root"]):
        raise RuntimeError(f"compare_models ran from {where}, not from {spec['root']}")
    return {"cold": times[0], "warm": times[1:]}


def beside_plain(base: Path, table: Any, results: list[Any], repeat: int, before: Path | None) -> dict[str, Any]:
    """Part 4: compare_models (this checkout's, and `before`'s) and the plain script, cold and warm."""
    sides = (
        {"compare_models": ("ours", ROOT)}
        | ({"compare_models before": ("ours", before)} if before else {})
        | {"plain script": ("plain", ROOT)}
    )
    found: dict[str, dict[str, list[float]]] = {name: {"cold": [], "warm": []} for name in sides}
    names = list(sides)
    for round_ in range(repeat):
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            side, root = sides[name]
            spec = {
                "side": side,
                "root": str(root),
                "table": str(table.path),
                "columns": table.columns,
                "count": table.count,
                "column": "label",
                "predictions": [str(r.path) for r in results],
                "run_dir": str(base / f"side-{round_}-{len(found[name]['cold'])}-{side}"),
                "warm": repeat,
            }
            path = base / f"side-{time.monotonic_ns()}.json"
            path.write_text(json.dumps(spec))
            answer = subprocess.run(
                [sys.executable, __file__, "--side", str(path)], capture_output=True, text=True, cwd=ROOT, check=True
            )
            times = json.loads(answer.stdout.strip().splitlines()[-1])
            found[name]["cold"].append(times["cold"])
            found[name]["warm"] += times["warm"]
            print(
                f"round {round_ + 1}: {name}: cold {times['cold']:.2f} s, warm "
                f"{statistics.median(times['warm']):.2f} s",
                flush=True,
            )
    return {
        name: {"cold": statistics.median(t["cold"]), "warm": statistics.median(t["warm"]), "rounds": t}
        for name, t in found.items()
    }


def comparison(base: Path, url: str, token: str | None, table: Any, repeat: int, batches: list[int]) -> dict[str, Any]:
    kinds = {"classification": (CLASSIFIERS, "label"), "regression": (REGRESSORS, "target")}
    found: dict[str, Any] = {}
    jpeg = make_jpeg(base / "input.jpg")
    for kind, (names, column) in kinds.items():
        inference, by_batch = {}, {}
        for batch in batches:
            by_batch[batch], inference[batch] = inference_ops(base, url, token, table, names, batch)
            print(
                f"{kind}: model_inference of {len(names)} models, batch {batch}: {inference[batch]:.2f} s", flush=True
            )
        results = by_batch[batches[0]]  # compared: the predictions made with the first batch size
        variants = {kind: (results, None)}
        if kind == "classification":
            variants["classification, image inputs (thumbnails)"] = (as_images(results, jpeg), jpeg)
        for variant, (shown, image) in variants.items():
            warm, cold, pieces = [], [], []
            spec = {
                "table": str(table.path),
                "columns": table.columns,
                "count": table.count,
                "column": column,
                "predictions": [str(r.path) for r in results],
                "run_dir": str(base),
                "jpeg": str(image) if image else None,
            }
            compare_step(base, "warm-up", shown, table, column)
            for i in range(repeat):
                cold.append(cold_in_subprocess(spec, base))
                warm.append(compare_step(base, f"compare-{i}", shown, table, column))
                pieces.append(compare_pieces(base / f"pieces-{i}", shown, table, column))
            found[variant] = {
                "inference": inference,
                "warm": statistics.median(warm),
                "cold": statistics.median(cold),
                "pieces": {k: statistics.median(p[k] for p in pieces) for k in pieces[0]},
                "predictions": len(names) * table.count,
                "results": results,
            }
            print(
                f"{variant}: compare_models warm {found[variant]['warm']:.2f} s, cold {found[variant]['cold']:.2f} s",
                flush=True,
            )
    return found


# --- main --------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000, help="rows sent in part 1 (default 20,000)")
    parser.add_argument("--compare-rows", type=int, default=10_000, help="rows per model in part 3 (default 10,000)")
    parser.add_argument("--table-rows", type=int, default=10_000, help="rows per model in part 1b (default 10,000)")
    parser.add_argument(
        "--table-batches",
        type=int,
        nargs="+",
        default=[0, 256],
        help="part 1b's batch sizes (0: model_inference's default; default: 0 256)",
    )
    parser.add_argument("--train-rows", type=int, default=5_000)
    parser.add_argument("--repeat", type=int, default=3, help="rounds; the median is reported (default 3)")
    parser.add_argument("--batches", type=int, nargs="+", default=[16, 256])
    parser.add_argument("--calls", type=int, default=200, help="requests per layer in part 2 (default 200)")
    parser.add_argument("--skip", choices=["throughput", "table", "breakdown", "comparison"], nargs="*", default=[])
    parser.add_argument(
        "--server-from", type=Path, default=ROOT, help="the checkout whose model_server/ runs (default: this one)"
    )
    parser.add_argument("--before", type=Path, help="part 4: also run this checkout's compare_models")
    parser.add_argument("--cold", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--side", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.cold:
        print(cold_step(args.cold))
        return 0
    if args.side:
        print(json.dumps(side_step(args.side)))
        return 0
    server_from = args.server_from.resolve()
    sys.path.insert(0, str(server_from))
    import onnxruntime

    token = secrets.token_urlsafe(24) if client_takes_token() else None
    started = time.strftime("%Y-%m-%d")
    with tempfile.TemporaryDirectory(prefix="constellation-bench-") as tmp:
        base = Path(tmp)
        count = args.train_rows + max(args.rows, args.compare_rows, args.table_rows)
        x, classes, target = make_data(count)
        train, test = slice(0, args.train_rows), slice(args.train_rows, None)
        print(f"training {len(CLASSIFIERS) + len(REGRESSORS)} models on {args.train_rows} rows ...", flush=True)
        models = make_models(base / "models", x[train], classes[train], target[train])
        sessions = {
            name: onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            for name, (path, _) in models.items()
        }
        # ONNX Runtime as our model server runs a tabular model since 406a957: threads that do not spin after a run.
        still = onnxruntime.SessionOptions()
        still.add_session_config_entry("session.intra_op.allow_spinning", "0")
        unspun = {
            name: onnxruntime.InferenceSession(str(path), still, providers=["CPUExecutionProvider"])
            for name, (path, _) in models.items()
            if name in CLASSIFIERS
        }
        port = free_port()
        server = start_server(base / "models", port, token, server_from)
        url = f"http://127.0.0.1:{port}"
        try:
            client = make_client(url, token)
            for name, (path, task) in models.items():
                client.load(name, path.name, task)
            times = layers = found = tabled = None
            load_before = os.getloadavg()[0]
            if "throughput" not in args.skip:
                times = throughput(client, sessions, models, x[test][: args.rows], args.batches, args.repeat)
            if "table" not in args.skip:
                rows = x[test][: args.table_rows]
                table = write_table(
                    base / "table-1b.jsonl", rows, classes[test][: args.table_rows], target[test][: args.table_rows]
                )
                tabled = table_inference(
                    client, sessions, unspun, table, rows, args.repeat, [b or None for b in args.table_batches]
                )
                tabled["load"] = (load_before, os.getloadavg()[0])
            if "breakdown" not in args.skip:
                layers = {}
                for name in ("logreg", "forest"):
                    for batch in args.batches:
                        calls = max(20, args.calls * 16 // batch)
                        layers[(name, batch)] = breakdown(
                            url, token, name, models[name][0], models[name][1], x[test], batch, calls
                        )
                        print(f"breakdown {name} batch {batch}: done", flush=True)
            if "comparison" not in args.skip:
                table = write_table(
                    base / "table.jsonl",
                    x[test][: args.compare_rows],
                    classes[test][: args.compare_rows],
                    target[test][: args.compare_rows],
                )
                found = comparison(base, url, token, table, args.repeat, args.batches)
                if "plain" not in args.skip:
                    found["beside the plain script"] = beside_plain(
                        base,
                        table,
                        found["classification"]["results"],
                        args.repeat,
                        args.before.resolve() if args.before else None,
                    )
            client.close()
        finally:
            server.terminate()
            server.wait(30)
    report = render(args, started, token is not None, times, layers, found, tabled)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(report)
    print(report)
    return 0


# --- the report --------------------------------------------------------------------------------------------------


def machine(started: str) -> str:
    import onnxruntime
    import sklearn

    return (
        f"Python {platform.python_version()}, onnxruntime {onnxruntime.__version__}, scikit-learn "
        f"{sklearn.__version__}, {os.cpu_count()} CPUs ({platform.machine()}), {started}"
    )


def render(
    args: argparse.Namespace,
    started: str,
    token: bool,
    times: dict | None,
    layers: dict | None,
    found: dict | None,
    tabled: dict | None = None,
) -> str:
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    rows = [
        f"Measured with {machine(started)}; model server {'with' if token else 'without'} a bearer token; "
        f"median of {args.repeat} rounds; load average at the end {load} (other work on the machine shows "
        "here: compare runs made on a quiet machine).",
        "",
    ]
    if times:
        rows += [
            "## Tabular inference: through the model server vs ONNX Runtime in process",
            "",
            f"{args.rows} rows × {len(FEATURES)} features, 3 classes; `ModelServer.predict_rows` vs "
            "`InferenceSession.run` on the same batches, interleaved.",
            "",
            "| model | batch | server rows/s | in-process rows/s | server / in-process throughput |",
            "|---|---:|---:|---:|---:|",
        ]
        for name in CLASSIFIERS:
            for batch in args.batches:
                server = statistics.median(times[(name, "server", batch)])
                local = statistics.median(times[(name, "in-process", batch)])
                rows.append(
                    f"| {name} ({DESCRIBED[name]}) | {batch} | {args.rows / server:,.0f} | "
                    f"{args.rows / local:,.0f} | {local / server:.3f} |"
                )
        rows.append("")
    if tabled:
        code = "this checkout" if args.server_from.resolve() == ROOT else f"the code of {args.server_from}"
        rows += [
            "## A table through model_inference's path vs ONNX Runtime in process",
            "",
            f"{args.table_rows:,} rows × {len(FEATURES)} features, already read as {code}'s model_inference "
            "reads them; timed: predicted through the server into prediction items (server) or "
            "`InferenceSession.run` on float32 arrays of the same batches (in process: ONNX Runtime's default "
            "options; not spinning: `session.intra_op.allow_spinning` 0, as the server runs it). Load average "
            f"{tabled['load'][0]:.1f} before, {tabled['load'][1]:.1f} after.",
            "",
            "| model | batch | server | in process | not spinning | server / in-process throughput | "
            "server / not spinning | goal: server ≤ 1.2 × in process + 20 ms |",
            "|---|---:|---:|---:|---:|---:|---:|---|",
        ]
        for name in CLASSIFIERS:
            for batch in [b or None for b in args.table_batches]:
                server = statistics.median(tabled[(name, "server", batch)])
                local = statistics.median(tabled[(name, "in-process", batch)])
                still = statistics.median(tabled[(name, "unspun", batch)])
                size = tabled[(name, "size", batch)]
                goal = "met" if server <= 1.2 * local + 0.02 else "not met"
                rows.append(
                    f"| {name} ({DESCRIBED[name]}) | {size}{' (default)' if batch is None else ''} | "
                    f"{server * 1e3:,.1f} ms | {local * 1e3:,.1f} ms | {still * 1e3:,.1f} ms | "
                    f"{local / server:.3f} | {still / server:.3f} | {goal if batch is None else ''} |"
                )
        rows.append("")
    if layers:
        columns = list(layers)
        rows += [
            "## Where one request's time goes (µs per request, median)",
            "",
            "| | " + " | ".join(f"{n} × {b}" for n, b in columns) + " |",
            "|---|" + "---:|" * len(columns),
        ]
        table = [derived(layers[c]) for c in columns]
        for i, (label, _) in enumerate(table[0]):
            rows.append(f"| {label} | " + " | ".join(f"{t[i][1] * 1e6:,.0f}" for t in table) + " |")
        rows.append("")
    beside = found.pop("beside the plain script", None) if found else None
    if found:
        rows += [
            "## The comparison step vs the inference it compares",
            "",
            f"3 models × {args.compare_rows} rows = {3 * args.compare_rows:,} predictions; `model_inference` "
            "(the op, through the server) then `compare_models` (the op: truth from the table, bootstrap "
            "intervals of 1,000 resamples, McNemar / paired bootstrap, charts, Markdown, JSON, the HTML page with "
            "24 disagreeing inputs). Warm: median in one process; cold: the first call in a fresh process.",
            "",
        ]
        head = (
            "| comparison | "
            + " | ".join(f"inference, batch {b}" for b in args.batches)
            + " | compare_models warm | cold | "
            + " | ".join(f"warm / inference {b}" for b in args.batches)
            + " | "
            + " | ".join(f"cold / inference {b}" for b in args.batches)
            + " |"
        )
        rows += [head, "|---|" + "---:|" * (3 * len(args.batches) + 2)]
        for variant, f in found.items():
            inference = [f["inference"][b] for b in args.batches]
            rows.append(
                f"| {variant} | "
                + " | ".join(f"{s:.2f} s" for s in inference)
                + f" | {f['warm']:.2f} s | {f['cold']:.2f} s | "
                + " | ".join(f"{100 * f['warm'] / s:.1f} %" for s in inference)
                + " | "
                + " | ".join(f"{100 * f['cold'] / s:.1f} %" for s in inference)
                + " |"
            )
        variants = list(found)
        rows += [
            "",
            "Where compare_models' warm time goes (seconds, median):",
            "",
            "| piece | " + " | ".join(variants) + " |",
            "|---|" + "---:|" * len(variants),
        ]
        for piece in found[variants[0]]["pieces"]:
            rows.append(f"| {piece} | " + " | ".join(f"{found[v]['pieces'][piece]:.3f}" for v in variants) + " |")
        rows.append("")
    if beside:
        plain = beside["plain script"]
        rows += [
            "## compare_models beside a plain script (bench/plain_comparison.py)",
            "",
            f"The classification predictions above (3 models × {args.compare_rows} rows); each side in a fresh "
            f"process per round: cold = its first call, warm = the median of the {args.repeat} calls after it "
            f"over {args.repeat} rounds.",
            "",
            "| side | cold (s) | warm (s) | cold / plain cold | warm / plain warm |",
            "|---|---:|---:|---:|---:|",
        ]
        for name, f in beside.items():
            rows.append(
                f"| {name} | {f['cold']:.2f} | {f['warm']:.2f} | {f['cold'] / plain['cold']:.2f} | "
                f"{f['warm'] / plain['warm']:.2f} |"
            )
        rows += [
            "",
            "Rounds (s): "
            + "; ".join(
                f"{name}: cold "
                + ", ".join(f"{v:.2f}" for v in f["rounds"]["cold"])
                + ", warm "
                + ", ".join(f"{v:.2f}" for v in f["rounds"]["warm"])
                for name, f in beside.items()
            ),
            "",
        ]
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())
