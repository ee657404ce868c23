"""A run cancelled while its model loads stops waiting at once, and lets go of the model it asked for.

The model server here is a stand-in of the protocol's repository routes whose load answers only when the
test lets it (a load of a large model takes minutes); what is checked is the client the ops use.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from orchestrator.engine import OperationError
from orchestrator.models.client import CANCEL_POLL_S, ModelServer


class SlowServer:
    """Answers a load when `released` is set; records the unloads it is sent."""

    def __init__(self, server: HTTPServer):
        self.server = server
        self.released = threading.Event()
        self.unloads: list[dict] = []
        server.expect_request("/v2/repository/models/big-model/load", method="POST").respond_with_handler(self.load)
        server.expect_request("/v2/repository/models/big-model/unload", method="POST").respond_with_handler(self.unload)

    def load(self, request: Request) -> Response:
        self.released.wait(30)
        return Response(
            json.dumps(
                {
                    "name": "big-model",
                    "state": "READY",
                    "source": "big-model",
                    "task": "image-classification",
                    "leases": 1,
                    "pinned": False,
                    "weight_bytes": 1,
                }
            ),
            content_type="application/json",
        )

    def unload(self, request: Request) -> Response:
        self.unloads.append(request.get_json())
        return Response(
            json.dumps({"name": "big-model", "state": "UNAVAILABLE", "leases": 0}), content_type="application/json"
        )


@pytest.fixture
def slow() -> Iterator[SlowServer]:
    server = HTTPServer("127.0.0.1", threaded=True)  # the held load must not hold the unload back
    server.start()
    stand_in = SlowServer(server)
    yield stand_in
    stand_in.released.set()
    server.stop()


def test_a_cancel_stops_waiting_for_a_load_and_lets_go_of_the_runs_lease(slow: SlowServer):
    cancelled = threading.Event()

    def check_cancelled() -> None:
        if cancelled.is_set():
            raise OperationError("stopped: the run is being cancelled")

    client = ModelServer(slow.server.url_for("/"), timeout_s=60, check_cancelled=check_cancelled, lease="run-1")
    threading.Timer(0.5, cancelled.set).start()
    started = time.monotonic()
    with pytest.raises(OperationError, match="stopped"):
        client.load("big-model", "big-model", "image-classification")
    waited = time.monotonic() - started
    client.close()
    assert waited < 0.5 + CANCEL_POLL_S + 2, f"the load was waited for {waited:.2f} s after the cancel"
    deadline = time.monotonic() + 5
    while not slow.unloads and time.monotonic() < deadline:  # sent at once; the server acts once its load ends
        time.sleep(0.05)
    assert slow.unloads == [{"parameters": {"lease": "run-1"}}]


def test_a_load_that_is_not_cancelled_is_waited_for(slow: SlowServer):
    threading.Timer(0.6, slow.released.set).start()
    with ModelServer(slow.server.url_for("/"), timeout_s=60) as client:
        answer = client.load("big-model", "big-model", "image-classification")
    assert answer["state"] == "READY" and slow.unloads == []
