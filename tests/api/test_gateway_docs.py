"""/docs, /redoc and /openapi.json: off with a token (they would answer without it), served offline without.

Issue 17 item 6: every route but /health needs the token when one is set, the docs included.
Issue 22: /docs was a blank page without Internet access (Swagger UI came from a CDN); its scripts
and styles now come from the gateway itself (the fastapi-offline package ships them).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from api.config import Settings
from api.main import create_app
from harness import Processes, free_port, separate_processes_env

TOKEN = "s3cr3t-t0ken-for-the-docs-tests"
DOCS = ["/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"]


def gateway(**settings) -> TestClient:
    app = create_app(Settings(dagster_url=f"http://127.0.0.1:{free_port()}", **settings))
    return TestClient(app, base_url="http://localhost")


def assets(page: str) -> list[str]:
    """The scripts, styles and icons a docs page loads."""
    return re.findall(r'(?:src|href)="([^"]+)"', page)


def test_with_a_token_the_docs_are_off():
    with gateway(api_token=TOKEN) as client:
        page = client.get("/docs")
        for path in [*DOCS, "/docs-assets/swagger-ui-bundle.js"]:
            for headers in ({}, {"Authorization": f"Bearer {TOKEN}"}):
                answer = client.get(path, headers=headers)
                assert answer.status_code == 404, (path, headers, answer.text)
                assert answer.json()["status"] == "failure"
        assert "swagger" not in page.text.lower()
        # The routes themselves still answer with the token (503: no Dagster here), and refuse without it.
        assert client.get("/operations", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 503
        assert client.get("/operations").status_code == 401


def test_without_a_token_the_pages_load_only_the_gateways_own_assets():
    with gateway() as client:
        for path, wanted in [
            ("/docs", {"swagger-ui-bundle.js", "swagger-ui.css", "favicon.png"}),
            ("/redoc", {"redoc.standalone.js", "favicon.png"}),
        ]:
            page = client.get(path)
            assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
            links = assets(page.text)
            assert {link.rsplit("/", 1)[-1] for link in links} == wanted, links
            assert "http" not in " ".join(links) and "fonts.googleapis" not in page.text, links
            for link in links:
                answer = client.get(link)
                assert answer.status_code == 200 and len(answer.content) > 1000, link
                kind = {"js": "javascript", "css": "text/css", "png": "image/png"}[link.rsplit(".", 1)[-1]]
                assert kind in answer.headers["content-type"], (link, answer.headers["content-type"])
        assert "/execute" in client.get("/openapi.json").json()["paths"]


@pytest.fixture
def offline_gateway(tmp_path) -> Iterator[str]:
    """The gateway as `make run` starts it (its own process), without a token and without Dagster."""
    env = separate_processes_env(tmp_path)
    env.pop("CONSTELLATION_API_TOKEN", None)
    processes = Processes(env, tmp_path / "stack.log")
    processes.start("gateway")
    try:
        yield f"http://127.0.0.1:{processes.ports['gateway']}"
    finally:
        processes.stop_everything()


def test_swagger_ui_renders_the_operations_with_the_network_blocked(offline_gateway: str, browser):
    """What a user sees: /docs lists every route, though every request off the gateway is refused."""
    page = browser.new_page()
    outside: list[str] = []
    errors: list[str] = []

    def only_the_gateway(route, request) -> None:
        if request.url.startswith(offline_gateway + "/") or request.url.startswith("data:"):
            route.continue_()
        else:
            outside.append(request.url)
            route.abort("internetdisconnected")

    page.route("**/*", only_the_gateway)
    page.on("pageerror", lambda error: errors.append(str(error)))
    answer = page.goto(offline_gateway + "/docs", wait_until="load")
    assert answer is not None and answer.status == 200
    operations = page.locator(".opblock-summary-path")
    operations.first.wait_for(timeout=15_000)
    shown = {" ".join(text.split()) for text in operations.all_inner_texts()}
    assert {"/execute", "/validate", "/runs/{run_id}", "/operations", "/health"} <= shown, shown
    assert outside == [] and errors == [], (outside, errors)
    page.close()
