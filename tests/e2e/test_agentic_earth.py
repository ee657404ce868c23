"""The original Agentic Earth clients, replayed against our stack as they really behave.

- the back-end's `run_pipeline` (pipeline_controller.py at agentic-earth/constellation@17e3f4a):
  python-requests `post(".../execute", json={"instructions": config})` with its default headers,
  no Authorization, then reads only `response.json()["status"]` and `["run_id"]`;
- the assistant's pipeline (agent/README.md): deploy_model(model), export_to_s3(inference_results=
  model_inference(model, data=dict_to_list(data=import_from_google_drive(file_id)))), delete_model;
- the back-end's status route `PUT /pipelines/status/{run_id}/{status}`: 200 for a run it stored,
  400 for one it does not know; the front-end shows `completed` green, `running` yellow;
- its ops mock_csv_data and math_block (dagster/orchestrator/assets/ops.py): a pipeline computes on the
  mock table and writes it with write_csv; the operator is a name, which the original looked up in `operator`.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from harness import Stack, start_stack, stop_stack
from services_drive import SEED_FILE_ID
from services_s3 import s3_client
from tiny_models import make_image_classifier

pytestmark = pytest.mark.e2e
EXPORT_BUCKET = "agenticexportbucket"  # the bucket the original export_to_s3 wrote to
MODEL = "vit-fire-detection"  # the assistant names models by their block name

ASSISTANT_PIPELINE = [
    {"operation": "deploy_model", "parameters": {"model": MODEL}},
    {
        "operation": "export_to_s3",
        "parameters": {
            "inference_results": {
                "operation": "model_inference",
                "parameters": {
                    "data": {
                        "operation": "dict_to_list",
                        "parameters": {
                            "data": {"operation": "import_from_google_drive", "parameters": {"file_id": SEED_FILE_ID}}
                        },
                    },
                    "model": MODEL,
                },
            }
        },
    },
    {"operation": "delete_model", "parameters": {"model": MODEL}},
]


class BackEnd:
    """The back-end's pipeline table and its status route, as the original serves them."""

    def __init__(self) -> None:
        self.known: set[str] = set()
        self.statuses: dict[str, list[tuple[str, dict]]] = {}
        self.refused: list[str] = []
        self.lock = threading.Lock()
        self.server = HTTPServer(threaded=True)
        self.server.expect_request(re.compile("/.*"), method="PUT").respond_with_handler(self.put)
        self.server.start()

    def put(self, request: Request) -> Response:
        parts = request.path.strip("/").split("/")
        body = json.loads(request.get_data() or b"{}")
        with self.lock:
            if parts[:2] != ["pipelines", "status"] or len(parts) != 4 or parts[2] not in self.known:
                self.refused.append(request.path)
                return Response("{}", status=400, content_type="application/json")
            self.statuses.setdefault(parts[2], []).append((parts[3], body))
        return Response("{}", status=200, content_type="application/json")

    @property
    def status_url(self) -> str:
        return self.server.url_for("/pipelines/status/{run_id}/{status}")

    def run_pipeline(self, gateway: str, config: list) -> str | None:
        """pipeline_controller.run_pipeline, line for line where it talks to us."""
        response = requests.post(f"{gateway}/execute", json={"instructions": config})
        response = response.json()
        if response["status"] == "success":
            with self.lock:
                self.known.add(response["run_id"])  # stored with the pipeline, marked running
            return response["run_id"]
        assert response["status"] == "failure"
        return None

    def words(self, run_id: str) -> list[str]:
        with self.lock:
            return [word for word, _ in self.statuses.get(run_id, [])]


@pytest.fixture(scope="module")
def backend() -> Iterator[BackEnd]:
    receiver = BackEnd()
    yield receiver
    receiver.server.stop()


@pytest.fixture(scope="module")
def agentic_stack(tmp_path_factory, stack_env: dict[str, str], backend: BackEnd) -> Iterator[Stack]:
    """Our stack as the product's profile runs it: callbacks on, a default bucket, public Drive files."""
    models_root = Path(stack_env["CONSTELLATION_MODELS_ROOT"])
    if not (models_root / MODEL).exists():
        make_image_classifier(models_root / MODEL, seed=5)
    env = {k: v for k, v in stack_env.items() if k != "GOOGLE_APPLICATION_CREDENTIALS"}  # shared by link only
    s3_client(env).create_bucket(Bucket=EXPORT_BUCKET)
    env.update({"CONSTELLATION_NOTIFY_URL": backend.status_url, "CONSTELLATION_EXPORT_BUCKET": EXPORT_BUCKET})
    running = start_stack(tmp_path_factory.mktemp("agentic"), env)
    yield running
    stop_stack(running)


def wait_for_words(backend: BackEnd, run_id: str, last: str, timeout_s: float = 90) -> list[str]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if last in backend.words(run_id):
            return backend.words(run_id)
        time.sleep(0.5)
    raise AssertionError(f"the back-end heard {backend.words(run_id)} for {run_id}, never {last!r}")


def test_the_assistants_pipeline_runs_and_the_backend_hears_running_then_completed(agentic_stack, backend, s3_env):
    run_id = backend.run_pipeline(agentic_stack.api_url, ASSISTANT_PIPELINE)
    assert run_id is not None, "the back-end would have deleted the user's pipeline"
    run = agentic_stack.wait_for_run(run_id, timeout_s=120)
    assert run["run_status"] == "SUCCESS", run
    assert wait_for_words(backend, run_id, "completed") == ["running", "completed"]
    # The predictions are in the configured bucket, as JSON Lines, one line per image.
    s3 = s3_client(s3_env)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=EXPORT_BUCKET, Prefix=f"constellation/{run_id}/")["Contents"]]
    [key] = keys
    lines = s3.get_object(Bucket=EXPORT_BUCKET, Key=key)["Body"].read().decode().splitlines()
    predictions = [json.loads(line) for line in lines]
    assert predictions and all(p["model"] == MODEL and p["labels"] for p in predictions)
    assert len({p["name"] for p in predictions}) == len(predictions)


def test_a_failing_pipeline_reaches_the_backend_as_failed_with_its_reason(agentic_stack, backend):
    broken = json.loads(json.dumps(ASSISTANT_PIPELINE))
    broken[1]["parameters"]["inference_results"]["parameters"]["data"]["parameters"]["data"]["parameters"][
        "file_id"
    ] = "1missingFileIdOfTheAssistant0000"
    run_id = backend.run_pipeline(agentic_stack.api_url, broken)
    assert run_id is not None
    assert agentic_stack.wait_for_run(run_id, timeout_s=120)["run_status"] == "FAILURE"
    words = wait_for_words(backend, run_id, "failed")
    assert words == ["running", "failed"]
    message = backend.statuses[run_id][-1][1]["message"]
    assert "1missingFileIdOfTheAssistant0000" in message


def test_an_invalid_pipeline_answers_failure_so_the_backend_deletes_it(agentic_stack, backend):
    run_id = backend.run_pipeline(agentic_stack.api_url, [{"operation": "no_such_op", "parameters": {}}])
    assert run_id is None


def test_the_original_write_csv_and_export_names_validate(agentic_stack):
    # Its model deployed first, as the original's pipelines do (validation checks that the model is there).
    pipeline = [
        ASSISTANT_PIPELINE[0],
        {"operation": "write_csv", "parameters": {"result": ASSISTANT_PIPELINE[1]["parameters"]["inference_results"]}},
    ]
    answer = requests.post(f"{agentic_stack.api_url}/validate", json={"instructions": pipeline}).json()
    assert answer["status"] == "success", answer


def original_math(operand: str, constant: float) -> list:
    """A pipeline written for the original's mock_csv_data and math_block: write_csv of the computed table."""
    return [
        {
            "operation": "write_csv",
            "parameters": {
                "result": {
                    "operation": "math_block",
                    "parameters": {
                        "data": {"operation": "mock_csv_data", "parameters": {}},
                        "operand": operand,
                        "constant": constant,
                    },
                }
            },
        }
    ]


def test_the_originals_mock_csv_data_and_math_block_run_as_written(agentic_stack, backend):
    run_id = backend.run_pipeline(agentic_stack.api_url, original_math("add", 10.0))
    assert run_id is not None
    assert agentic_stack.wait_for_run(run_id)["run_status"] == "SUCCESS"
    assert wait_for_words(backend, run_id, "completed") == ["running", "completed"]
    with agentic_stack.client() as client:
        [written] = client.get(f"/runs/{run_id}/results").json()["results"]
    [csv_file] = written["output"]["files"]
    assert agentic_stack.fetch(csv_file["uri"]).decode().splitlines() == [
        "column1,column2,column3",
        "11.0,12.0,13.0",
        "14.0,15.0,16.0",
        "17.0,18.0,19.0",
    ]


def test_a_division_by_zero_reaches_the_backend_as_failed_naming_row_and_column(agentic_stack, backend):
    run_id = backend.run_pipeline(agentic_stack.api_url, original_math("truediv", 0))
    assert run_id is not None
    assert agentic_stack.wait_for_run(run_id)["run_status"] == "FAILURE"
    assert wait_for_words(backend, run_id, "failed") == ["running", "failed"]
    assert "row 0, column 'column1': 1.0 truediv 0.0 divides by zero" in backend.statuses[run_id][-1][1]["message"]


def test_names_the_original_reached_through_getattr_are_refused_before_launch(agentic_stack, backend):
    for name in ("attrgetter", "methodcaller", "__import__"):
        assert backend.run_pipeline(agentic_stack.api_url, original_math(name, 1)) is None
    answer = requests.post(f"{agentic_stack.api_url}/validate", json={"instructions": original_math("methodcaller", 1)})
    assert answer.status_code == 422 and answer.json()["status"] == "failure"
    [problem] = answer.json()["errors"]
    assert problem["path"] == "/instructions/0/parameters/result/parameters/operand"
    assert all(f"'{name}'" in problem["message"] for name in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow"))
