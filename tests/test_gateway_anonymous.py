"""CONSTELLATION_ALLOW_ANONYMOUS_FROM: requests from a private network may come without the token.

The Agentic Earth back-end posts to the gateway with python-requests' default headers and no
Authorization. The operator may let such requests through from the product's private network
only; from anywhere else, and with a wrong token from anywhere, the token rule stands. Dagster
is not running here: a request let through gets 503 (Dagster down), one refused gets 401.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient
from pydantic import ValidationError

from api.config import Settings
from api.main import create_app
from conftest import free_port

TOKEN = "s3cr3t-t0ken-for-the-tests"
PRIVATE = "172.30.0.0/16"


def gateway(client_host: str, **settings) -> TestClient:
    app = create_app(Settings(dagster_url=f"http://127.0.0.1:{free_port()}", api_token=TOKEN, **settings))
    return TestClient(app, client=(client_host, 50000), base_url="http://localhost")


def test_by_default_every_request_needs_the_token():
    with gateway("172.30.0.5") as client:
        answer = client.get("/operations")
        assert answer.status_code == 401 and "bearer token" in answer.json()["message"]


@pytest.mark.parametrize("host", ["172.30.0.5", "172.30.255.254", "::ffff:172.30.0.9"])
def test_a_request_from_the_allowed_network_may_come_without_the_token(host: str):
    with gateway(host, allow_anonymous_from=PRIVATE) as client:
        # What the back-end sends: python-requests' headers, no Authorization.
        headers = {"User-Agent": "python-requests/2.32.3", "Accept": "*/*", "Connection": "keep-alive"}
        answer = client.post("/execute", json={"instructions": []}, headers=headers)
        assert answer.status_code != 401, answer.text
        assert client.get("/operations").status_code == 503  # let through, to a Dagster that is down


@pytest.mark.parametrize("host", ["172.31.0.5", "10.0.0.8", "127.0.0.1", "::1", "testclient"])
def test_from_anywhere_else_the_token_is_still_needed(host: str):
    with gateway(host, allow_anonymous_from=PRIVATE) as client:
        assert client.get("/operations").status_code == 401
        assert client.get("/operations", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 503


def test_a_wrong_token_is_refused_even_from_the_allowed_network():
    with gateway("172.30.0.5", allow_anonymous_from=PRIVATE) as client:
        for headers in ({"Authorization": "Bearer wrong"}, {"Authorization": "Basic abc"}, {"Authorization": ""}):
            assert client.get("/operations", headers=headers).status_code == 401, headers


def test_the_setting_is_a_list_of_networks_and_never_everything(monkeypatch):
    monkeypatch.setenv("CONSTELLATION_ALLOW_ANONYMOUS_FROM", " 172.30.0.0/16, fd00:ae::/64 ,10.1.2.3")
    assert [str(n) for n in Settings().allow_anonymous_from] == ["172.30.0.0/16", "fd00:ae::/64", "10.1.2.3/32"]
    monkeypatch.setenv("CONSTELLATION_ALLOW_ANONYMOUS_FROM", '["192.168.5.0/24"]')
    assert [str(n) for n in Settings().allow_anonymous_from] == ["192.168.5.0/24"]
    monkeypatch.setenv("CONSTELLATION_ALLOW_ANONYMOUS_FROM", "")
    assert Settings().allow_anonymous_from == []
    for wrong, said in [("dagster_network", "not a network"), ("172.30.0.0/33", "not a network"),
                        ("0.0.0.0/0", "every address"), ("::/0", "every address")]:
        monkeypatch.setenv("CONSTELLATION_ALLOW_ANONYMOUS_FROM", wrong)
        with pytest.raises(ValidationError, match=said):
            Settings()


@pytest.fixture
def served() -> Iterator[Callable[..., str]]:
    """The gateway behind a real uvicorn socket, so the peer address is the kernel's, not a test's."""
    servers: list[uvicorn.Server] = []

    def serve(**settings) -> str:
        port = free_port()
        app = create_app(Settings(dagster_url=f"http://127.0.0.1:{free_port()}", api_token=TOKEN, **settings))
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        threading.Thread(target=server.run, daemon=True).start()
        servers.append(server)
        deadline = time.monotonic() + 20
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        return f"http://127.0.0.1:{port}"

    yield serve
    for server in servers:
        server.should_exit = True


def test_the_peer_address_decides_over_a_real_socket(served):
    allowed, elsewhere = served(allow_anonymous_from="127.0.0.0/8"), served(allow_anonymous_from=PRIVATE)
    assert httpx.get(allowed + "/operations").status_code == 503
    assert httpx.get(elsewhere + "/operations").status_code == 401
