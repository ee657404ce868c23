"""The model server over HTTP, as a real process: load, ready, infer, unload, memory, bad inputs."""

from __future__ import annotations

import base64
import io
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest
from PIL import Image, ImageDraw

from harness import ROOT, free_port
from services_models import FIRE_MODEL_ID, FOLDER_MODEL, MID_MODEL
from tiny_models import FIRE_LABELS

FIRE = "EdBianchi--vit-fire-detection"  # the client's slug of FIRE_MODEL_ID
MAX_REQUEST_BYTES = 1024 * 1024
BATCH_SIZE = 4


@dataclass
class ModelServerProcess:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def running_server(env: dict[str, str], log: Path) -> Iterator[ModelServerProcess]:
    """`python -m model_server` on a free port with `env` over this process's environment, until the block ends."""
    port = free_port()
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "model_server"],
            cwd=ROOT,
            env={**os.environ, **env, "CONSTELLATION_MODEL_SERVER_PORT": str(port)},
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    running = ModelServerProcess(f"http://127.0.0.1:{port}", process, log)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, f"the model server exited:\n{running.log_text()}"
            assert time.monotonic() < deadline, f"the model server did not start:\n{running.log_text()}"
            try:
                if httpx.get(running.url + "/v2/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        yield running
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def load_models(server: ModelServerProcess, models: dict[str, tuple[str, str]]) -> None:
    """Load every model (name -> (source, task)) on the running server; a refusal fails the test."""
    with server.client() as http:
        for name, (source, task) in models.items():
            answer = http.post(
                f"/v2/repository/models/{name}/load", json={"parameters": {"source": source, "task": task}}
            )
            assert answer.status_code == 200, answer.text


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, models_env: dict[str, str]) -> Iterator[ModelServerProcess]:
    env = {
        **models_env,
        "CONSTELLATION_MODEL_SERVER_MAX_REQUEST_BYTES": str(MAX_REQUEST_BYTES),
        "CONSTELLATION_MODEL_SERVER_BATCH_SIZE": str(BATCH_SIZE),
        # No token here: tests/model_server/test_model_leases.py runs one with a token.
        "CONSTELLATION_MODEL_SERVER_TOKEN": "",
    }
    with running_server(env, tmp_path_factory.mktemp("model_server") / "server.log") as running:
        yield running


@pytest.fixture
def http(server: ModelServerProcess) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


def image_file(seed: int, fmt: str = "PNG") -> bytes:
    """A small picture that differs with `seed`."""
    image = Image.new("RGB", (40 + seed % 7, 30 + seed % 5), ((seed * 53) % 256, (seed * 97) % 256, (seed * 31) % 256))
    ImageDraw.Draw(image).ellipse((seed % 10, 3, 25 + seed % 12, 25), fill=((seed * 11) % 256, 200, 40))
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


def infer_body(images: list[bytes], top_k: int | None = None, request_id: str = "req-1") -> dict:
    body: dict = {
        "id": request_id,
        "inputs": [
            {
                "name": "image",
                "shape": [len(images)],
                "datatype": "BYTES",
                "data": [base64.b64encode(image).decode("ascii") for image in images],
                "parameters": {"content_type": "base64"},
            }
        ],
    }
    if top_k is not None:
        body["parameters"] = {"top_k": top_k}
    return body


def load(http: httpx.Client, name: str, source: str, task: str = "image-classification") -> httpx.Response:
    return http.post(f"/v2/repository/models/{name}/load", json={"parameters": {"source": source, "task": task}})


def predictions(answer: dict) -> list[list[tuple[str, float]]]:
    outputs = {o["name"]: o for o in answer["outputs"]}
    rows, k = outputs["label"]["shape"]
    labels, scores = outputs["label"]["data"], outputs["score"]["data"]
    return [list(zip(labels[i * k : (i + 1) * k], scores[i * k : (i + 1) * k], strict=True)) for i in range(rows)]


def test_health_and_server_metadata(http: httpx.Client):
    assert http.get("/v2/health/live").status_code == 200
    assert http.get("/v2/health/ready").status_code == 200
    metadata = http.get("/v2").json()
    assert "model_repository" in metadata["extensions"]


def test_load_a_hugging_face_id_from_the_local_cache(http: httpx.Client):
    loaded = load(http, FIRE, FIRE_MODEL_ID)
    assert loaded.status_code == 200, loaded.text
    assert loaded.json()["state"] == "READY"
    assert http.get(f"/v2/models/{FIRE}/ready").json() == {"name": FIRE, "ready": True}
    metadata = http.get(f"/v2/models/{FIRE}").json()
    assert metadata["platform"] == "transformers"
    assert (metadata["task"], metadata["source"]) == ("image-classification", FIRE_MODEL_ID)
    assert metadata["labels"] == list(FIRE_LABELS)
    assert [i["name"] for i in metadata["inputs"]] == ["image"]
    assert [o["name"] for o in metadata["outputs"]] == ["label", "score"]
    index = {m["name"]: m for m in http.post("/v2/repository/index").json()}
    assert index[FIRE]["state"] == "READY"


def test_load_a_folder_under_the_models_root(http: httpx.Client):
    loaded = load(http, FOLDER_MODEL, FOLDER_MODEL)
    assert loaded.status_code == 200, loaded.text
    assert http.get(f"/v2/models/{FOLDER_MODEL}").json()["source"] == FOLDER_MODEL
    ready_only = http.post("/v2/repository/index", json={"ready": True}).json()
    assert {FOLDER_MODEL} <= {m["name"] for m in ready_only}
    assert all(m["state"] == "READY" for m in ready_only)


def test_infer_returns_top_k_labels_best_first(http: httpx.Client):
    assert load(http, FIRE, FIRE_MODEL_ID).status_code == 200
    answer = http.post(f"/v2/models/{FIRE}/infer", json=infer_body([image_file(i) for i in range(3)], top_k=2))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["model_name"], body["id"]) == (FIRE, "req-1")
    assert [(o["name"], o["datatype"], o["shape"]) for o in body["outputs"]] == [
        ("label", "BYTES", [3, 2]),
        ("score", "FP32", [3, 2]),
    ]
    for row in predictions(body):
        labels, scores = [label for label, _ in row], [score for _, score in row]
        assert set(labels) <= set(FIRE_LABELS) and len(set(labels)) == 2
        assert scores == sorted(scores, reverse=True)
        assert all(0 <= s <= 1 for s in scores) and sum(scores) <= 1 + 1e-6


def test_top_k_defaults_and_is_capped_at_the_label_count(http: httpx.Client):
    assert load(http, FIRE, FIRE_MODEL_ID).status_code == 200
    for top_k in (None, 50):
        body = http.post(f"/v2/models/{FIRE}/infer", json=infer_body([image_file(1)], top_k=top_k)).json()
        (row,) = predictions(body)
        assert sorted(label for label, _ in row) == sorted(FIRE_LABELS)
        assert sum(score for _, score in row) == pytest.approx(1, abs=1e-5)


def test_a_batch_answers_as_one_by_one_with_two_models_loaded(http: httpx.Client):
    assert load(http, FIRE, FIRE_MODEL_ID).status_code == 200
    assert load(http, FOLDER_MODEL, FOLDER_MODEL).status_code == 200
    images = [image_file(i, "JPEG" if i % 2 else "PNG") for i in range(11)]  # 3 batches of BATCH_SIZE
    answers = {}
    for name in (FIRE, FOLDER_MODEL):
        batch = predictions(http.post(f"/v2/models/{name}/infer", json=infer_body(images, top_k=3)).json())
        singles = [
            predictions(http.post(f"/v2/models/{name}/infer", json=infer_body([im], top_k=3)).json())[0]
            for im in images
        ]
        assert len(batch) == len(images)
        for got, expected in zip(batch, singles, strict=True):
            assert [label for label, _ in got] == [label for label, _ in expected]
            assert [score for _, score in got] == pytest.approx([score for _, score in expected], abs=1e-5)
        answers[name] = batch
    assert answers[FIRE] != answers[FOLDER_MODEL], "two different models gave the same scores"


def test_load_is_idempotent_and_never_runs_twice_at_once(server: ModelServerProcess, http: httpx.Client):
    name = "tiny-fire-b.twice"

    def load_once(_: int) -> int:
        with server.client() as client:
            return load(client, name, FOLDER_MODEL).status_code

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(load_once, range(4))) == [200] * 4
    assert load(http, name, FOLDER_MODEL).status_code == 200
    log = server.log_text()
    # Loaded once, or (when another name holds the same source already) given that name's copy once.
    assert log.count(f"loading model {name} ") + log.count(f"model {name} shares the copy of") == 1, log[-2000:]


def test_unload_then_the_model_is_gone(http: httpx.Client):
    name = "tiny-fire-b.unload"
    assert load(http, name, FOLDER_MODEL).status_code == 200
    assert http.post(f"/v2/repository/models/{name}/unload").status_code == 200
    answer = http.post(f"/v2/models/{name}/infer", json=infer_body([image_file(0)]))
    assert answer.status_code == 404 and name in answer.json()["error"]
    assert http.get(f"/v2/models/{name}/ready").status_code == 404
    index = {m["name"]: m for m in http.post("/v2/repository/index").json()}
    assert (index[name]["state"], index[name]["reason"]) == ("UNAVAILABLE", "unloaded")
    assert http.post(f"/v2/repository/models/{name}/unload").status_code == 200  # twice is fine
    assert load(http, name, FOLDER_MODEL).status_code == 200  # and it can come back


def test_unload_gives_the_memory_back(server: ModelServerProcess, http: httpx.Client):
    process = psutil.Process(server.process.pid)
    # Warm up: the first ViT load and inference import code that stays; only the model should move RSS.
    assert load(http, FOLDER_MODEL, FOLDER_MODEL).status_code == 200
    http.post(f"/v2/models/{FOLDER_MODEL}/infer", json=infer_body([image_file(0)]))
    before = process.memory_info().rss
    assert load(http, MID_MODEL, MID_MODEL).status_code == 200
    assert http.post(f"/v2/models/{MID_MODEL}/infer", json=infer_body([image_file(i) for i in range(4)])).is_success
    loaded = process.memory_info().rss
    unloaded_answer = http.post(f"/v2/repository/models/{MID_MODEL}/unload").json()
    after = process.memory_info().rss
    rise, fall = (loaded - before) / 1e6, (loaded - after) / 1e6
    print(
        f"\nmodel server RSS: {before / 1e6:.1f} MB, with {MID_MODEL} loaded {loaded / 1e6:.1f} MB (+{rise:.1f}), "
        f"after unload {after / 1e6:.1f} MB (-{fall:.1f}); the server says {unloaded_answer}"
    )
    assert rise > 30, f"loading {MID_MODEL} (50 MB of weights) raised RSS by only {rise:.1f} MB"
    assert fall > 0.8 * rise, f"unload gave back {fall:.1f} MB of the {rise:.1f} MB the load took"


# Bad input: each answers its status with a JSON message that names the problem; never a 500.


def test_unknown_model(http: httpx.Client):
    for answer in (
        http.post("/v2/models/no-such-model/infer", json=infer_body([image_file(0)])),
        http.get("/v2/models/no-such-model"),
        http.get("/v2/models/no-such-model/ready"),
        http.post("/v2/repository/models/no-such-model/unload"),
    ):
        assert answer.status_code == 404, answer.text
        assert "no-such-model" in answer.json()["error"]


@pytest.mark.parametrize("name", ["-leading-dash", "a%20space", "x" * 202, "semi;colon"])
def test_a_name_that_is_not_a_slug(http: httpx.Client, name: str):
    answer = load(http, name, FOLDER_MODEL)
    assert answer.status_code == 400, answer.text
    assert "not a valid name" in answer.json()["error"]


def test_unsupported_task(http: httpx.Client):
    answer = load(http, "tiny-text", FOLDER_MODEL, task="summarization")
    assert answer.status_code == 400
    assert "summarization" in answer.json()["error"] and "image-classification" in answer.json()["error"]


def test_a_model_of_another_task_is_refused_naming_its_task(http: httpx.Client):
    answer = load(http, "tiny-text", FOLDER_MODEL, task="text-classification")
    assert answer.status_code == 400
    message = answer.json()["error"]
    assert all(
        words in message
        for words in (
            "tiny-text",
            "text-classification",
            "ViTForImageClassification",
            "a model for image-classification",
        )
    ), message


def test_a_missing_source_is_refused_at_once_saying_where_it_was_looked_for(http: httpx.Client):
    started = time.monotonic()
    answer = load(http, "Org--absent", "Org/absent-model")  # offline (HF_HUB_OFFLINE): the Hub is not asked
    assert answer.status_code == 404, answer.text
    assert time.monotonic() - started < 2
    message = answer.json()["error"]
    assert message == (
        "could not load model 'Org--absent': model source 'Org/absent-model' is not in the models root "
        "or the local Hugging Face cache, and this server is offline (HF_HUB_OFFLINE); put the model "
        "in its models root or its Hugging Face cache"
    )
    checked = http.post(
        "/v2/repository/models/Org--absent/check", json={"parameters": {"source": "Org/absent-model"}}
    ).json()
    assert checked["loadable"] is False and "not in the models root or the local Hugging Face cache" in checked["error"]
    assert http.post("/v2/repository/models/tiny-fire-b/check").json() == {
        "name": "tiny-fire-b",
        "source": "tiny-fire-b",
        "task": "image-classification",
        "loadable": True,
        "found_in": "models root",
        "error": None,
    }


@pytest.mark.parametrize("source", ["../models/tiny-fire-b", "/etc", "tests", "tiny-fire-b/../../x"])
def test_a_source_outside_the_models_root_is_refused(http: httpx.Client, source: str):
    answer = load(http, "escape", source)
    assert answer.status_code == 400, answer.text
    assert source in answer.json()["error"]


def test_a_folder_that_is_not_a_model(http: httpx.Client, models_env: dict[str, str]):
    (Path(models_env["CONSTELLATION_MODELS_ROOT"]) / "not-a-model").mkdir(exist_ok=True)
    answer = load(http, "not-a-model", "not-a-model")
    assert answer.status_code in (400, 404), answer.text
    assert "not-a-model" in answer.json()["error"]


def test_undecodable_image_is_named(http: httpx.Client):
    assert load(http, FIRE, FIRE_MODEL_ID).status_code == 200
    images = [image_file(0), b"this is not an image", image_file(2)]
    answer = http.post(f"/v2/models/{FIRE}/infer", json=infer_body(images))
    assert answer.status_code == 422
    assert "item 1" in answer.json()["error"]
    body = infer_body([image_file(0), image_file(1)])
    body["inputs"][0]["data"][1] = "%%% not base64 %%%"
    answer = http.post(f"/v2/models/{FIRE}/infer", json=body)
    assert answer.status_code == 422 and "item 1" in answer.json()["error"]


def test_oversized_request_is_answered_413(server: ModelServerProcess, http: httpx.Client):
    assert load(http, FIRE, FIRE_MODEL_ID).status_code == 200
    big = infer_body([os.urandom(MAX_REQUEST_BYTES)])  # base64 makes it 1.33 MiB
    answer = http.post(f"/v2/models/{FIRE}/infer", json=big)
    assert answer.status_code == 413
    assert str(MAX_REQUEST_BYTES) in answer.json()["error"]
    assert server.process.poll() is None
    assert http.post(f"/v2/models/{FIRE}/infer", json=infer_body([image_file(0)])).status_code == 200


@pytest.mark.parametrize(
    ("content", "status", "words"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b"[]", 422, "InferRequest"),
        (b'{"inputs": []}', 422, "inputs"),
        (b'{"inputs": [{"name": "image", "shape": [3], "datatype": "BYTES", "data": ["aGk="]}]}', 422, "shape [3]"),
        # Inputs that are well formed but not the model's: 400 naming the model, its task and its inputs.
        (b'{"inputs": [{"name": "image", "shape": [1], "datatype": "FP32", "data": ["aGk="]}]}', 400, "datatype"),
        (b'{"inputs": [{"name": "pixels", "shape": [1], "datatype": "BYTES", "data": ["aGk="]}]}', 400, "pixels"),
        (b'{"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": [7]}]}', 422, "data"),
        (
            b'{"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": ["aGk="]}], '
            b'"parameters": {"top_k": 0}}',
            422,
            "top_k",
        ),
    ],
)
def test_malformed_infer_request(http: httpx.Client, content: bytes, status: int, words: str):
    assert load(http, FIRE, FIRE_MODEL_ID).status_code == 200
    answer = http.post(f"/v2/models/{FIRE}/infer", content=content, headers={"content-type": "application/json"})
    assert answer.status_code == status, answer.text
    assert words in answer.json()["error"]


def test_malformed_load_request(http: httpx.Client):
    json_body = {"content-type": "application/json"}
    answer = http.post(
        f"/v2/repository/models/{FOLDER_MODEL}/load", content=b'{"parameters": "tiny"}', headers=json_body
    )
    assert answer.status_code == 422 and "parameters" in answer.json()["error"]
    assert http.post(f"/v2/repository/models/{FOLDER_MODEL}/load", content=b"{", headers=json_body).status_code == 400
    answer = http.post(
        f"/v2/repository/models/{FOLDER_MODEL}/load", content=b'{"parameters": {"lease": "a b"}}', headers=json_body
    )
    assert answer.status_code == 422 and "lease" in answer.json()["error"]


LOAD_BODY = b'{"parameters": {"source": "tiny-fire-b"}}'


@pytest.mark.parametrize(
    "route",
    [
        "repository/models/tiny-fire-b.csrf/load",
        "repository/models/tiny-fire-b.csrf/unload",
        "models/tiny-fire-b.csrf/infer",
        "repository/index",
        "repository/models/tiny-fire-b.csrf/renew",
    ],
)
@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/jsonx", None],
)
def test_state_changing_routes_take_json_only(http: httpx.Client, route: str, content_type: str | None):
    # What a web page can send cross-site without a preflight: text/plain, a form; and a body with no type.
    headers = {"content-type": content_type} if content_type else {}
    answer = http.post(f"/v2/{route}", content=LOAD_BODY, headers=headers)
    assert answer.status_code == 415, answer.text
    assert "application/json" in answer.json()["error"]
    assert http.get("/v2/models/tiny-fire-b.csrf/ready").status_code == 404, "a refused load loaded the model"


def test_json_with_a_charset_and_no_body_where_none_is_needed_are_taken(http: httpx.Client):
    name = "tiny-fire-b.charset"
    answer = http.post(
        f"/v2/repository/models/{name}/load",
        content=LOAD_BODY,
        headers={"content-type": "Application/JSON; charset=utf-8"},
    )
    assert answer.status_code == 200, answer.text
    assert http.post("/v2/repository/index").status_code == 200  # no body, no type: the index takes none
    assert http.post(f"/v2/repository/models/{name}/unload").status_code == 200
    infer = http.post(f"/v2/models/{name}/infer")
    assert infer.status_code == 415, infer.text  # infer needs a body


def test_requests_from_other_sites_pages_are_refused(http: httpx.Client):
    for site in ("cross-site", "same-site"):
        answer = http.post("/v2/repository/index", json={}, headers={"sec-fetch-site": site})
        assert answer.status_code == 403 and "other sites" in answer.json()["error"]
    assert http.post("/v2/repository/index", json={}, headers={"sec-fetch-site": "same-origin"}).status_code == 200


def test_no_internal_error_was_logged(server: ModelServerProcess):
    log = server.log_text()
    assert "Traceback" not in log and " 500 " not in log, log[-3000:]
