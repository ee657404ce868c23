"""CORS: browsers may call the gateway only from the origins CONSTELLATION_CORS_ORIGINS lists (none by default)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from api.config import Settings
from api.main import create_app
from harness import free_port

LISTED = "https://app.example.com"
PREFLIGHT = {
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization, content-type, idempotency-key",
}


def gateway(**settings) -> TestClient:
    # Nothing listens at this Dagster URL: a preflight never reaches Dagster.
    app = create_app(Settings(dagster_url=f"http://127.0.0.1:{free_port()}", **settings))
    return TestClient(app, base_url="http://localhost")


def preflight(client: TestClient, origin: str, path: str = "/execute"):
    return client.options(path, headers={"Origin": origin, **PREFLIGHT})


def test_closed_by_default(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("CONSTELLATION_CORS_ORIGINS", raising=False)
    with gateway() as client:
        for origin in (LISTED, "http://localhost:3000", "null"):
            assert "access-control-allow-origin" not in preflight(client, origin).headers
            assert "access-control-allow-origin" not in client.get("/health", headers={"Origin": origin}).headers


def test_a_listed_origin_is_allowed_and_an_unlisted_one_is_not():
    with gateway(cors_origins=[LISTED, "http://localhost:5173"]) as client:
        allowed = preflight(client, LISTED)
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == LISTED
        assert {"authorization", "content-type", "idempotency-key"} <= {
            h.strip().lower() for h in allowed.headers["access-control-allow-headers"].split(",")
        }
        assert "POST" in allowed.headers["access-control-allow-methods"]
        refused = preflight(client, "https://evil.example.net")
        assert refused.status_code == 400
        assert "access-control-allow-origin" not in refused.headers
        # The actual request from a listed origin carries the header the browser checks.
        health = client.get("/health", headers={"Origin": LISTED})
        assert health.headers["access-control-allow-origin"] == LISTED


@pytest.mark.parametrize("value", [f"{LISTED}, http://localhost:5173/", f'["{LISTED}", "http://localhost:5173"]'])
def test_origins_come_from_the_environment_as_a_list_or_json(monkeypatch: pytest.MonkeyPatch, value: str):
    monkeypatch.setenv("CONSTELLATION_CORS_ORIGINS", value)
    assert Settings().cors_origins == [LISTED, "http://localhost:5173"]


def test_empty_variable_as_compose_passes_it_means_closed(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CONSTELLATION_CORS_ORIGINS", "")
    assert Settings().cors_origins == []


@pytest.mark.parametrize("bad", ["app.example.com", "https://app.example.com/path"])
def test_something_that_is_not_an_origin_is_refused_at_start(bad: str):
    with pytest.raises(ValidationError, match="is not an origin"):
        Settings(cors_origins=[bad])
