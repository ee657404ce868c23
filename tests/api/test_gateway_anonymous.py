"""CONSTELLATION_ALLOW_ANONYMOUS_FROM: requests from a private network may come without the token.

The Agentic Earth back-end posts to the gateway with python-requests' default headers and no
Authorization. The operator may let such requests through from the product's private network
only; from anywhere else, and with a wrong token from anywhere, the token rule stands. Dagster
is not running here: a request let through gets 503 (Dagster down), one refused gets 401.

The network is the socket peer's: X-Forwarded-For names the client only when the peer is one of
CONSTELLATION_TRUSTED_PROXIES (issue 17, item 4: uvicorn believed it from 127.0.0.1).
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
from harness import Processes, free_port, separate_processes_env

TOKEN = "s3cr3t-t0ken-for-the-tests"
PRIVATE = "172.30.0.0/16"
RUN = "/runs/00000000-0000-0000-0000-000000000000"


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
    for wrong, said in [
        ("dagster_network", "not a network"),
        ("172.30.0.0/33", "not a network"),
        ("0.0.0.0/0", "every address"),
        ("::/0", "every address"),
    ]:
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


# --- X-Forwarded-For: only from a trusted proxy ---------------------------------------------------

FORGED = ["10.99.0.5", "10.99.0.7, 127.0.0.1", "10.99.0.5, 10.99.0.6"]


@pytest.fixture
def started(tmp_path) -> Iterator[Callable[..., str]]:
    """The gateway as `make run` starts it (scripts/stack.py's command, a process of its own), Dagster down."""
    running: list[Processes] = []

    def start(**env: str) -> str:
        base = tmp_path / f"gateway{len(running)}"
        base.mkdir()
        processes = Processes(
            separate_processes_env(base, {"CONSTELLATION_API_TOKEN": TOKEN, **env}), base / "stack.log"
        )
        running.append(processes)
        processes.start("gateway")
        return f"http://127.0.0.1:{processes.ports['gateway']}"

    yield start
    for processes in running:
        processes.stop_everything()


def test_a_forged_forwarded_for_is_not_an_allowed_network(started):
    """From 127.0.0.1, with no trusted proxy (the default) or another one, X-Forwarded-For is not believed."""
    for proxies in ("", "10.1.2.3"):
        url = started(CONSTELLATION_ALLOW_ANONYMOUS_FROM="10.99.0.0/16", CONSTELLATION_TRUSTED_PROXIES=proxies)
        for forged in FORGED:
            answer = httpx.get(url + RUN, headers={"X-Forwarded-For": forged})
            assert answer.status_code == 401, (proxies, forged, answer.text)
        assert httpx.get(url + RUN, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 503


def test_behind_a_trusted_proxy_the_forwarded_client_decides(started):
    """The test is the proxy (127.0.0.1): the client is the right-most address that is not a trusted proxy."""
    url = started(CONSTELLATION_ALLOW_ANONYMOUS_FROM="10.99.0.0/16", CONSTELLATION_TRUSTED_PROXIES="127.0.0.1")
    for client in FORGED:
        assert httpx.get(url + RUN, headers={"X-Forwarded-For": client}).status_code == 503, client
    # A client that wrote an allowed address itself: the proxy appended the client's real one.
    for refused in ("10.99.0.5, 203.0.113.9", "10.99.0.5, 203.0.113.9, 127.0.0.1", ""):
        assert httpx.get(url + RUN, headers={"X-Forwarded-For": refused}).status_code == 401, refused
    assert httpx.get(url + RUN).status_code == 401  # the proxy itself is not in the allowed network


@pytest.mark.parametrize(
    "peer,forwarded,let_through",
    [
        ("10.0.0.2", "172.30.0.5", True),  # the proxy's network is trusted
        ("10.0.0.2", "172.30.0.5, 10.0.0.9", True),  # through two proxies of it
        ("::ffff:10.0.0.2", "172.30.0.5", True),  # a dual-stack socket's IPv4 peer
        ("10.0.0.2", "172.30.0.5, 8.8.8.8", False),
        ("10.1.0.2", "172.30.0.5", False),  # not a trusted proxy: its header is ignored
        ("172.30.0.5", "8.8.8.8", True),  # not a proxy, from the allowed network itself
    ],
)
def test_the_forwarded_for_walk_in_process(peer: str, forwarded: str, let_through: bool):
    with gateway(peer, allow_anonymous_from=PRIVATE, trusted_proxies="10.0.0.0/24") as client:
        status = client.get("/operations", headers={"X-Forwarded-For": forwarded}).status_code
        assert status == (503 if let_through else 401)


def test_trusted_proxies_is_a_list_of_networks_and_never_everything(monkeypatch):
    monkeypatch.setenv("CONSTELLATION_TRUSTED_PROXIES", "10.0.0.1, fd00::/64")
    assert [str(n) for n in Settings().trusted_proxies] == ["10.0.0.1/32", "fd00::/64"]
    monkeypatch.setenv("CONSTELLATION_TRUSTED_PROXIES", '["10.0.0.0/8"]')
    assert [str(n) for n in Settings().trusted_proxies] == ["10.0.0.0/8"]
    monkeypatch.delenv("CONSTELLATION_TRUSTED_PROXIES")
    assert Settings().trusted_proxies == []
    for wrong, said in [
        ("proxy.example.com", "CONSTELLATION_TRUSTED_PROXIES: 'proxy.example.com' is not a network"),
        ("0.0.0.0/0", "CONSTELLATION_TRUSTED_PROXIES: '0.0.0.0/0' is every address"),
    ]:
        monkeypatch.setenv("CONSTELLATION_TRUSTED_PROXIES", wrong)
        with pytest.raises(ValidationError, match=said):
            Settings()
