"""Cross-site requests (api/guard.py): what a web page could make its visitor's browser send to the
local stack is refused by the gateway and by the Dagster webserver `make run` starts; real clients pass.

Against the test stack (`make run`'s launcher), and a gateway of its own behind uvicorn where a test
needs CORS origins, with Debian's Chromium for what a browser really sends.
"""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
import requests
import uvicorn

from api.config import Settings
from api.main import create_app
from harness import Stack, cli, free_port, local_pipeline

pytestmark = pytest.mark.e2e

EVIL = "https://evil.example"
BODY = json.dumps(local_pipeline())
RUN_COUNT = "{runsOrError { __typename ... on Runs { count } } }"
LAUNCH_CONFIG = {"ops": {"generate_dynamic_job_configs": {"config": {"raw_input": local_pipeline()["instructions"]}}}}
MUTATION_LAUNCH = (
    'mutation { launchPipelineExecution(executionParams: {selector: {repositoryLocationName: "constellation", '
    'repositoryName: "main", pipelineName: "build_execute_job"}, runConfigData: '
    + json.dumps(json.dumps(LAUNCH_CONFIG))
    + "}) { __typename } }"
)


def run_count(stack: Stack) -> int:
    answer = httpx.post(stack.dagster_url + "/graphql", json={"query": RUN_COUNT}, timeout=30)
    return answer.json()["data"]["runsOrError"]["count"]


def refused(answer: httpx.Response | requests.Response, status: int, words: str) -> bool:
    body = answer.json()
    return answer.status_code == status and body["status"] == "failure" and words in body["message"]


# ---- the gateway ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "text/plain;charset=UTF-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        None,
    ],
)
def test_a_cross_site_simple_post_is_415_and_launches_nothing(stack: Stack, content_type: str | None):
    """What a form or a no-cors fetch sends: a simple Content-Type (or none) with a JSON body."""
    before = run_count(stack)
    headers = {"origin": EVIL} if content_type is None else {"origin": EVIL, "content-type": content_type}
    for route in ("/execute", "/validate"):
        for given in (headers, {k: v for k, v in headers.items() if k != "origin"}):  # old browsers: no Origin
            answer = httpx.post(stack.api_url + route, content=BODY, headers=given, timeout=30)
            assert refused(answer, 415, "Content-Type: application/json"), answer.text
    assert run_count(stack) == before


@pytest.mark.parametrize("host", ["rebind.evil.example", "evil.example:8000", "127.0.0.2", "[::2]", "a b"])
def test_a_host_it_does_not_answer_for_is_400_on_every_route(stack: Stack, host: str):
    """DNS rebinding: the page's own name, now pointing at 127.0.0.1, arrives in Host."""
    before = run_count(stack)
    with httpx.Client(base_url=stack.api_url, headers={"host": host}, timeout=30) as client:
        launch = client.post("/execute", content=BODY, headers={"content-type": "application/json"})
        for answer in (client.get("/health"), client.get("/operations"), launch):
            assert refused(answer, 400, "Host header"), answer.text
    assert run_count(stack) == before


@pytest.mark.parametrize("origin", [EVIL, "null", "http://127.0.0.1:1", "http://localhost:5173"])
def test_a_post_from_a_page_of_another_origin_is_403(stack: Stack, origin: str):
    before = run_count(stack)
    for route in ("/execute", "/validate", "/runs/00000000-0000-0000-0000-000000000000/cancel"):
        answer = httpx.post(stack.api_url + route, json=local_pipeline(), headers={"origin": origin}, timeout=30)
        assert refused(answer, 403, "not allowed"), answer.text
    # Reading is not a write: a GET with a foreign Origin is answered (without CORS headers, unreadable to it).
    assert httpx.get(stack.api_url + "/operations", headers={"origin": origin}).status_code == 200
    assert run_count(stack) == before


def test_the_gateways_own_pages_may_post(stack: Stack):
    """Swagger UI at /docs posts from the gateway's own origin."""
    for origin in (stack.api_url, stack.api_url.replace("127.0.0.1", "localhost")):
        host = origin.split("//")[1]
        answer = httpx.post(
            stack.api_url + "/validate", json=local_pipeline(), headers={"origin": origin, "host": host}
        )
        assert answer.status_code == 200, answer.text


def test_python_requests_json_as_the_agentic_earth_back_end_posts(stack: Stack):
    assert requests.post(f"{stack.api_url}/validate", json=local_pipeline(), timeout=30).json()["status"] == "success"
    launched = requests.post(f"{stack.api_url}/execute", json=local_pipeline(), timeout=30).json()
    assert launched["status"] == "success", launched
    assert stack.wait_for_run(launched["run_id"])["run_status"] == "SUCCESS"
    # A charset after the media type is still JSON.
    answer = requests.post(
        f"{stack.api_url}/validate",
        data=BODY.encode(),
        headers={"Content-Type": "application/json; charset=utf-8"},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text


def test_the_cli_validates_launches_and_cancels_without_a_body(stack: Stack, tmp_path, slow_file_url: str):
    """`constellation cancel` posts no body and no Content-Type: no Origin either, so it is no page's."""
    pipeline = tmp_path / "pipeline.json"
    pipeline.write_text(
        json.dumps({"instructions": [{"operation": "import_from_url", "parameters": {"url": slow_file_url}}]})
    )
    assert cli(stack.api_url, "validate", str(pipeline)).returncode == 0
    submitted = cli(stack.api_url, "submit", str(pipeline), "--no-wait")
    assert submitted.returncode == 0, submitted
    run_id = submitted.stdout.strip()
    # Dagster refuses to terminate a run while it is STARTING: cancel it once it runs.
    deadline = time.monotonic() + 60
    with stack.client() as client:
        while client.get(f"/runs/{run_id}").json().get("run_status") != "STARTED" and time.monotonic() < deadline:
            time.sleep(0.2)
    cancelled = cli(stack.api_url, "cancel", run_id)
    assert cancelled.returncode == 0, cancelled
    assert stack.wait_for_run(run_id)["run_status"] == "CANCELED"


# ---- the Dagster webserver of `make run` ------------------------------------------------------------


def test_dagster_refuses_mutations_a_page_could_send_and_keeps_the_gateways(stack: Stack):
    before = run_count(stack)
    graphql = stack.dagster_url + "/graphql"
    # An <img> or a link: a GET with the mutation in its URL.
    answer = httpx.get(graphql, params={"query": MUTATION_LAUNCH}, timeout=30)
    assert refused(answer, 405, "mutation"), answer.text
    # A form or no-cors fetch: the query in the URL, a simple body (Dagster reads the URL then).
    for headers in (
        {"content-type": "text/plain", "origin": EVIL},
        {"content-type": "text/plain"},
        {"content-type": "application/x-www-form-urlencoded", "origin": "null"},
    ):
        answer = httpx.post(graphql, params={"query": MUTATION_LAUNCH}, content=b"x=1", headers=headers, timeout=30)
        assert refused(answer, 415, "application/json"), answer.text
    # JSON from a page of another site (only possible with a CORS consent Dagster never gives), DNS rebinding.
    answer = httpx.post(graphql, json={"query": MUTATION_LAUNCH}, headers={"origin": EVIL}, timeout=30)
    assert refused(answer, 403, "Dagster UI's own pages"), answer.text
    answer = httpx.post(graphql, json={"query": RUN_COUNT}, headers={"host": "rebind.evil.example"}, timeout=30)
    assert refused(answer, 400, "Host header"), answer.text
    assert run_count(stack) == before
    # Reading by GET stays (Dagster's GraphiQL); the gateway's JSON POSTs stay (it launched runs above).
    assert httpx.get(graphql, params={"query": RUN_COUNT}).json()["data"]["runsOrError"]["count"] == before


def test_dagster_refuses_a_websocket_opened_by_another_sites_page(stack: Stack):
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    url = stack.dagster_url.replace("http://", "ws://") + "/graphql"
    with pytest.raises(InvalidStatus, match="403"):
        connect(url, origin=EVIL, subprotocols=["graphql-ws"], open_timeout=10)
    with connect(url, origin=stack.dagster_url, subprotocols=["graphql-ws"], open_timeout=10) as socket:
        socket.send(json.dumps({"type": "connection_init"}))
        assert json.loads(socket.recv(timeout=10))["type"] == "connection_ack"


# ---- in a real browser --------------------------------------------------------------------------------


@pytest.fixture
def site() -> Iterator[Callable[[str], str]]:
    """A web site on a port of its own (another origin than the stack's), serving the page given."""
    servers = []

    def serve(html: str) -> str:
        class Page(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("content-type", "text/html")
                self.end_headers()
                self.wfile.write(html.encode())

            def log_message(self, *args: object) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield serve
    for server in servers:
        server.shutdown()


@pytest.fixture
def recorded_gateway(stack: Stack) -> Iterator[Callable[[list[str]], tuple[str, list]]]:
    """A gateway of its own behind uvicorn, in front of the stack's Dagster, recording what it answered."""
    servers: list[uvicorn.Server] = []

    def serve(cors_origins: list[str]) -> tuple[str, list]:
        seen: list[tuple[str, str, int]] = []
        app = create_app(
            Settings(dagster_url=stack.dagster_url, artifact_root=stack.artifact_root, cors_origins=cors_origins)
        )

        async def recording(scope, receive, send):
            async def sending(message):
                if message["type"] == "http.response.start":
                    seen.append((scope["method"], scope["path"], message["status"]))
                await send(message)

            await app(scope, receive, sending if scope["type"] == "http" else send)

        port = free_port()
        server = uvicorn.Server(uvicorn.Config(recording, host="127.0.0.1", port=port, log_level="warning"))
        threading.Thread(target=server.run, daemon=True).start()
        servers.append(server)
        deadline = time.monotonic() + 20
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        return f"http://127.0.0.1:{port}", seen

    yield serve
    for server in servers:
        server.should_exit = True


ATTACK = """<!doctype html><body><form id=f method=post enctype=text/plain action="{gateway}/execute">
<input name='{{"instructions": [], "x": "' value='"}}'></form><script>
fetch("{gateway}/execute", {{method: "POST", mode: "no-cors", body: {body!r}}});
fetch("{gateway}/execute", {{method: "POST", mode: "no-cors", headers: {{"Content-Type": "text/plain"}},
                            body: {body!r}}});
fetch("{gateway}/runs/00000000-0000-0000-0000-000000000000/cancel", {{method: "POST", mode: "no-cors"}});
new Image().src = "{dagster}/graphql?query=" + encodeURIComponent({mutation!r});
fetch("{dagster}/graphql?query=" + encodeURIComponent({mutation!r}), {{method: "POST", mode: "no-cors", body: "x"}});
setTimeout(() => document.getElementById("f").submit(), 500);
</script></body>"""


def test_a_hostile_page_in_a_real_browser_launches_nothing(stack: Stack, browser, site, recorded_gateway):
    gateway, seen = recorded_gateway([])
    before = run_count(stack)
    page = browser.new_page()
    page.goto(site(ATTACK.format(gateway=gateway, dagster=stack.dagster_url, body=BODY, mutation=MUTATION_LAUNCH)))
    deadline = time.monotonic() + 20
    while len([s for s in seen if s[0] == "POST"]) < 4 and time.monotonic() < deadline:
        page.wait_for_timeout(200)
    page.close()
    posts = sorted(s for s in seen if s[0] == "POST")
    # The browser did send them (so the refusal is the gateway's, not the browser's), and each was refused.
    assert posts == sorted(
        [
            ("POST", "/execute", 415),
            ("POST", "/execute", 415),
            ("POST", "/execute", 415),
            ("POST", "/runs/00000000-0000-0000-0000-000000000000/cancel", 403),
        ]
    ), seen
    assert run_count(stack) == before


ALLOWED = """<!doctype html><body><script>
window.answers = Promise.all([
  fetch("{gateway}/validate", {{method: "POST", headers: {{"Content-Type": "application/json"}}, body: {body!r}}})
    .then(r => r.json()),
  fetch("{gateway}/validate", {{method: "POST", headers: {{"Content-Type": "text/plain"}}, body: {body!r}}})
    .then(r => r.status),
]);
</script></body>"""


def test_a_browser_fetch_with_json_from_an_allowed_origin_works(browser, site, recorded_gateway):
    page_port = free_port()  # the page's origin must be known before the gateway that allows it starts
    origin = f"http://127.0.0.1:{page_port}"
    gateway, seen = recorded_gateway([origin])
    html = ALLOWED.format(gateway=gateway, body=BODY)

    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "text/html")
            self.end_headers()
            self.wfile.write(html.encode())

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", page_port), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        page = browser.new_page()
        page.goto(origin)
        valid, plain = page.evaluate("window.answers")
        page.close()
    finally:
        server.shutdown()
    assert valid["status"] == "success" and valid["nodes"] == 3, valid
    # From an allowed page, text/plain is still refused, and the page can read why (CORS headers on the 415).
    assert plain == 415
    assert ("OPTIONS", "/validate", 200) in seen  # the preflight its JSON Content-Type needs


def test_the_dagster_ui_still_works_behind_the_guard(stack: Stack, browser):
    """The UI's own requests (GraphQL POSTs, its WebSocket) pass: no 4xx from the guard, runs listed."""
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    answers: list[tuple[int, str]] = []
    page.on("response", lambda r: answers.append((r.status, r.url)) if r.url.startswith(stack.dagster_url) else None)
    page.goto(stack.dagster_url + "/runs", wait_until="networkidle")
    page.wait_for_timeout(1000)
    graphql = [status for status, url in answers if "/graphql" in url]
    assert graphql and all(status == 200 for status in graphql), answers
    assert not [a for a in answers if a[0] in (400, 403, 405, 415)], answers
    # is_visible() answers at once (its timeout is ignored): wait for the runs table as a user would
    page.locator("text=build_execute_job").first.wait_for(state="visible", timeout=20_000)
    page.close()
