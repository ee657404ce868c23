"""The model server shared between runs, as a real process with a token: leases, caps, names, the token itself.

Two "runs" are two lease holders, each driving the pipeline's own ops (deploy_model, delete_model and the
clean-up a run does at its end) or the code location's client. The memory of a refused request is the
server process's own resident memory, before and after.
"""

from __future__ import annotations

import json
import struct
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import psutil
import pytest
from test_model_server import ModelServerProcess, image_file, infer_body, running_server

from services_models import FIRE_MODEL_ID, FOLDER_MODEL, MID_MODEL

TOKEN = "a-token-for-the-lease-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MAX_MODELS = 2


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, models_env: dict[str, str]) -> Iterator[ModelServerProcess]:
    env = {
        **models_env,
        "CONSTELLATION_MODEL_SERVER_TOKEN": TOKEN,
        "CONSTELLATION_MODEL_SERVER_LEASE_SWEEP_S": "0.1",
        "CONSTELLATION_MODEL_SERVER_MAX_MODELS": str(MAX_MODELS),
    }
    with running_server(env, tmp_path_factory.mktemp("lease_server") / "server.log") as running:
        yield running


@pytest.fixture
def http(server: ModelServerProcess) -> Iterator[httpx.Client]:
    """A client with the token; whatever a test leaves loaded is unloaded after it."""
    with httpx.Client(base_url=server.url, timeout=60, headers=AUTH) as client:
        yield client
        for model in client.post("/v2/repository/index", json={"ready": True}).json():
            client.post(f"/v2/repository/models/{model['name']}/unload")


@pytest.fixture
def connection(server: ModelServerProcess, monkeypatch: pytest.MonkeyPatch):
    """The code location's resource, with the token in its environment as the stack gives it."""
    from orchestrator.assets.resources import ModelServerConnection

    monkeypatch.setenv("CONSTELLATION_MODEL_SERVER_TOKEN", TOKEN)
    return ModelServerConnection(url=server.url, retry_attempts=1, lease_ttl_s=30)


def run_context(connection, tmp_path: Path, run_id: str):
    from orchestrator.engine import RunContext

    return RunContext(run_dir=tmp_path / run_id, resources=SimpleNamespace(model_server=connection))


def ready(http: httpx.Client, name: str) -> bool:
    return http.get(f"/v2/models/{name}/ready").status_code == 200


def index(http: httpx.Client) -> dict[str, dict]:
    return {m["name"]: m for m in http.post("/v2/repository/index").json()}


# The token.


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v2"),
        ("GET", "/v2/models/x"),
        ("GET", "/v2/models/x/ready"),
        ("POST", "/v2/repository/index"),
        ("POST", "/v2/repository/models/x/load"),
        ("POST", "/v2/repository/models/x/unload"),
        ("POST", "/v2/models/x/infer"),
        ("POST", "/v2/repository/models/x/renew"),
        ("GET", "/docs"),
        ("GET", "/openapi.json"),
        ("GET", "/no/such/route"),
    ],
)
def test_every_route_but_health_needs_the_token(server: ModelServerProcess, method: str, path: str):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}, {"Authorization": "Basic x"}):
        answer = httpx.request(method, server.url + path, headers=headers, json={})
        assert answer.status_code == 401, (headers, answer.text)
        assert "CONSTELLATION_MODEL_SERVER_TOKEN" in answer.json()["error"]
        assert answer.headers["www-authenticate"].startswith("Bearer")
    assert httpx.request(method, server.url + path, headers=AUTH, json={}).status_code != 401
    for health in ("/v2/health/live", "/v2/health/ready"):
        assert httpx.get(server.url + health).status_code == 200


def test_the_code_locations_client_sends_the_token(connection, http: httpx.Client, monkeypatch: pytest.MonkeyPatch):
    from orchestrator.engine import OperationError

    with connection.connect() as client:
        client.load("tiny/token", FOLDER_MODEL, "image-classification")
        assert client.classify("tiny/token", [image_file(1)], top_k=1)[0][0][0]
    monkeypatch.delenv("CONSTELLATION_MODEL_SERVER_TOKEN")
    with connection.connect() as client, pytest.raises(OperationError, match="answered 401"):
        client.metadata("tiny/token")
    assert "CONSTELLATION_MODEL_SERVER_TOKEN" not in json.dumps(connection.model_dump()), "the token is in its config"


def test_make_run_gives_both_processes_a_fresh_token_unless_one_is_set():
    import stack as launcher

    name = "CONSTELLATION_MODEL_SERVER_TOKEN"
    first, second = (launcher.stack_env({})[name] for _ in range(2))
    assert len(first) >= 40 and first != second
    assert launcher.stack_env({name: "mine"})[name] == "mine" and launcher.stack_env({name: " "})[name].strip()


def test_the_placeholder_token_is_refused():
    from pydantic import ValidationError

    from model_server.config import Settings

    with pytest.raises(ValidationError, match="change-me"):
        Settings(token="change-me")
    assert Settings(token="").token is None


# Leases: runs share a model; the last to let go unloads it; a run that stops renewing loses it.


def test_two_runs_share_a_model_and_the_last_to_let_go_unloads_it(connection, http: httpx.Client, tmp_path: Path):
    from orchestrator.assets import ops

    run_a, run_b = (run_context(connection, tmp_path, f"run-{x}") for x in "ab")
    model = "org/shared-model"
    for run in (run_a, run_b):
        deployed = ops.deploy_model(run, model=model, source=FOLDER_MODEL)
        assert deployed["loaded"] is True and deployed["name"] == "org--shared-model"
    run_a.cleanup.run_all(run_a.log)  # run A ends first: its clean-up lets go of its lease
    assert ready(http, "org--shared-model"), "the first run to end unloaded the model the second still uses"
    with connection.connect(lease=run_b.run_id) as client:
        assert len(client.classify(model, [image_file(i) for i in range(3)], top_k=2)) == 3
    assert ops.delete_model(run_b, model=model)["unloaded"] is True
    assert not ready(http, "org--shared-model")
    assert "last lease (run-b)" in index(http)["org--shared-model"]["reason"]


def test_delete_model_lets_go_of_its_own_run_only(connection, http: httpx.Client, tmp_path: Path):
    from orchestrator.assets import ops

    run_a, run_b = (run_context(connection, tmp_path, f"run-{x}") for x in "cd")
    ops.deploy_model(run_a, model="shared-2", source=FOLDER_MODEL)
    ops.deploy_model(run_b, model="shared-2", source=FOLDER_MODEL)
    assert ops.delete_model(run_a, model="shared-2")["unloaded"] is False
    run_a.cleanup.run_all(run_a.log)
    assert ready(http, "shared-2")
    run_b.cleanup.run_all(run_b.log)  # run B fails before its delete_model: its clean-up lets go
    assert not ready(http, "shared-2")


def test_an_expired_lease_frees_the_model(http: httpx.Client):
    body = {"parameters": {"source": FOLDER_MODEL, "lease": "a-crashed-run", "lease_ttl_s": 0.5}}
    loaded = http.post("/v2/repository/models/expiring/load", json=body)
    assert loaded.status_code == 200 and loaded.json()["leases"] == 1 and loaded.json()["pinned"] is False
    deadline = time.monotonic() + 20
    while ready(http, "expiring") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not ready(http, "expiring")
    reason = index(http)["expiring"]["reason"]
    assert "every lease expired" in reason and "a-crashed-run" in reason
    answer = http.post(
        "/v2/models/expiring/infer", json={**infer_body([image_file(0)]), "parameters": {"lease": "a-crashed-run"}}
    )
    assert answer.status_code == 404 and "every lease expired" in answer.json()["error"]


def test_a_live_clients_lease_is_renewed_past_its_length(server: ModelServerProcess, http: httpx.Client):
    from orchestrator.models.client import KEEPER, ModelServer, Retry

    with ModelServer(server.url, retry=Retry(attempts=1), token=TOKEN, lease="live-run", lease_ttl_s=0.6) as client:
        client.load("kept", FOLDER_MODEL, "image-classification")
        time.sleep(2.0)  # more than three lease lengths, with no inference: the keeper renews it
        assert ready(http, "kept")
        client.unload("kept")
    assert not ready(http, "kept") and KEEPER.held() == []


def test_inference_renews_the_holders_lease(http: httpx.Client):
    http.post(
        "/v2/repository/models/renewed/load",
        json={"parameters": {"source": FOLDER_MODEL, "lease": "busy-run", "lease_ttl_s": 0.8}},
    )
    for _ in range(6):  # 6 x 0.3 s: more than twice the lease's length
        time.sleep(0.3)
        answer = http.post(
            "/v2/models/renewed/infer", json={**infer_body([image_file(0)]), "parameters": {"lease": "busy-run"}}
        )
        assert answer.status_code == 200, answer.text
    renewed = http.post("/v2/repository/models/renewed/renew", json={"parameters": {"lease": "busy-run"}})
    assert renewed.status_code == 200 and 0 < renewed.json()["expires_in_s"] <= 0.8


def test_a_plain_unload_still_unloads_whoever_holds_it(http: httpx.Client):
    http.post("/v2/repository/models/plain/load", json={"parameters": {"source": FOLDER_MODEL, "lease": "run-x"}})
    answer = http.post("/v2/repository/models/plain/unload")  # Triton's unload: no lease
    assert answer.status_code == 200 and answer.json()["state"] == "UNAVAILABLE"
    assert not ready(http, "plain")


# Names: one id, one name, one model.


def test_org_slash_x_and_org_dash_dash_x_are_two_models(connection, http: httpx.Client):
    from orchestrator.models.client import slug

    with connection.connect(lease="run-names") as client:
        client.load("org/x", FOLDER_MODEL, "image-classification")
        client.load("org--x", MID_MODEL, "image-classification")
        sources = {model_id: client.metadata(model_id)["source"] for model_id in ("org/x", "org--x")}
        assert sources == {"org/x": FOLDER_MODEL, "org--x": MID_MODEL}
        images = [image_file(i) for i in range(4)]
        assert client.classify("org/x", images, 3) != client.classify("org--x", images, 3)
        client.unload("org/x")
        client.unload("org--x")
    assert (slug("org/x"), slug("org--x")) == ("org--x", "org---x")


@pytest.mark.parametrize(
    "ids",
    [
        ("org/x", "org--x", "org-/x", "org---x", "org----x", "org--/x", "org/x-", "org/x--"),
        ("a-b/c", "a--b/c", "a-b--c", "a/b-c", "a/b--c", "a-/b-c", "a--/b-c"),
    ],
)
def test_the_name_rule_is_one_to_one_and_reversible(ids: tuple[str, ...]):
    import re

    from orchestrator.models.client import MODEL_ID_PATTERN, SERVER_NAME_PATTERN, model_id_of, slug

    ids = tuple(i for i in ids if re.match(MODEL_ID_PATTERN, i))
    names = [slug(i) for i in ids]
    assert len(set(names)) == len(ids), dict(zip(ids, names, strict=True))
    for model_id, name in zip(ids, names, strict=True):
        assert SERVER_NAME_PATTERN.match(name) and model_id_of(name) == model_id
    for plain in ("EdBianchi/vit-fire-detection", "distilbert-base-uncased", "google/vit-base-patch16-224"):
        assert slug(plain) == plain.replace("/", "--")  # plain ids read as they always did


def test_every_id_gets_a_valid_name_of_its_own():
    from orchestrator.models.client import SERVER_NAME_PATTERN, slug

    longest = [
        "a" + "-" * 95 + "/" + "b" + "-" * 95,
        "a" + "-" * 95 + "/" + "b" + "-" * 94 + "c",
        "a" + "-" * 95,
        "x" * 96 + "/" + "y" * 96,
        "a-" * 48 + "/" + "b-" * 48,
    ]
    names = [slug(i) for i in longest]
    assert all(SERVER_NAME_PATTERN.match(n) for n in names), names
    assert len(set(names)) == len(longest)


def test_a_different_source_under_the_same_id_fails_clearly(connection, http: httpx.Client, tmp_path: Path):
    from orchestrator.assets import ops
    from orchestrator.engine import OperationError

    first, second = (run_context(connection, tmp_path, f"run-{x}") for x in "ef")
    ops.deploy_model(first, model="org/model", source=FOLDER_MODEL)
    with pytest.raises(OperationError) as refused:
        ops.deploy_model(second, model="org/model", source=MID_MODEL)
    message = str(refused.value)
    assert "409" in message and f"loaded from {FOLDER_MODEL!r}" in message and repr(MID_MODEL) in message
    assert second.cleanup.pending() == []  # nothing to let go of: it holds nothing
    metadata = http.get("/v2/models/org--model").json()
    assert metadata["source"] == FOLDER_MODEL, "the first run's model was swapped"
    first.cleanup.run_all(first.log)
    ops.deploy_model(second, model="org/model", source=MID_MODEL)  # once nobody holds it, the other may load
    assert http.get("/v2/models/org--model").json()["source"] == MID_MODEL
    second.cleanup.run_all(second.log)


# Caps.


def test_the_cap_on_loaded_models_answers_429_naming_it(http: httpx.Client):
    for name, source in (("cap-a", FOLDER_MODEL), ("cap-a2", FOLDER_MODEL), ("cap-b", MID_MODEL)):
        assert (
            http.post(f"/v2/repository/models/{name}/load", json={"parameters": {"source": source}}).status_code == 200
        )
    answer = http.post("/v2/repository/models/cap-c/load", json={"parameters": {"source": FIRE_MODEL_ID}})
    assert answer.status_code == 429, answer.text
    assert f"CONSTELLATION_MODEL_SERVER_MAX_MODELS={MAX_MODELS}" in answer.json()["error"]


def big_png(side: int) -> bytes:
    """A black side x side PNG, written a row at a time (this process never holds its pixels)."""
    packer = zlib.compressobj(9)
    row = b"\x00" * (1 + 3 * side)
    data = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


class PeakMemory:
    """A process's peak resident memory over a block: the kernel's high-water mark, reset first (clear_refs)."""

    def __init__(self, pid: int):
        self.process = psutil.Process(pid)
        self.status = Path(f"/proc/{pid}/status")

    def __enter__(self) -> PeakMemory:
        Path(f"/proc/{self.process.pid}/clear_refs").write_text("5")  # VmHWM := current RSS
        self.before = self.process.memory_info().rss
        return self

    def __exit__(self, *exc: object) -> None:
        line = next(line for line in self.status.read_text().splitlines() if line.startswith("VmHWM:"))
        self.peak = int(line.split()[1]) * 1024

    @property
    def rise(self) -> int:
        return self.peak - self.before


def test_eight_big_pngs_are_refused_before_they_are_decoded(server: ModelServerProcess, http: httpx.Client):
    assert http.post("/v2/repository/models/pixels/load", json={"parameters": {"source": FOLDER_MODEL}}).is_success
    assert http.post("/v2/models/pixels/infer", json=infer_body([image_file(0)])).is_success  # warm up
    png = big_png(6000)  # 36 Mpx each: under the 40 Mpx per image, 288 Mpx for 8 of them
    body = json.dumps(infer_body([png] * 8)).encode()
    assert len(body) < 2_000_000
    with PeakMemory(server.process.pid) as memory:
        started = time.monotonic()
        answer = http.post("/v2/models/pixels/infer", content=body, headers={"content-type": "application/json"})
        took = time.monotonic() - started
    print(
        f"\n8 PNGs of 6000x6000 in {len(body) / 1e6:.2f} MB: {answer.status_code} in {took:.2f} s; server RSS "
        f"{memory.before / 1e6:.0f} MB, at most {memory.peak / 1e6:.0f} MB while it answered"
    )
    assert answer.status_code == 413, answer.text
    assert "288,000,000 pixels" in answer.json()["error"] and "MAX_REQUEST_PIXELS" in answer.json()["error"]
    # Decoded, they took about 1.6 GB (measured on the server before the pixel caps).
    assert memory.peak - memory.before < 60e6, f"the refused request took {memory.rise / 1e6:.0f} MB"
    one = http.post(
        "/v2/models/pixels/infer",
        content=json.dumps(infer_body([big_png(6000)])).encode(),
        headers={"content-type": "application/json"},
    )
    assert one.status_code == 200, one.text  # one of them alone is within the caps


def test_no_internal_error_was_logged(server: ModelServerProcess):
    log = server.log_text()
    assert "Traceback" not in log and " 500 " not in log, log[-3000:]
