"""Dagster's webserver behind the cross-site request rules of api/guard.py; `make run` starts it so:

    python -m api.dagster_ui dagster-webserver -h 127.0.0.1 -p 3000 -w workspace.yaml

(every option is dagster-webserver's own). Dagster's webserver runs whatever GraphQL it is sent,
mutations included (launch a run, terminate one, shut the code location down): from a POST of any
Content-Type (the query then rides in the URL), from a GET (`/graphql?query=mutation{...}`, which an
<img> tag sends), and over a WebSocket opened by any page. Its UI has no login, and a page of any site
reaches a webserver on 127.0.0.1 through its visitor's browser. Here dagster-webserver's own command
line runs with its app wrapped: `Host` must be an allowed name (CONSTELLATION_ALLOWED_HOSTS); a POST
with a body must be JSON (the UI's are); a POST or a WebSocket must come from the UI's own pages (or
from no page: the gateway, scripts); a GET may not carry a mutation. The UI and the gateway work as
before.
"""

from __future__ import annotations

import sys
from typing import Any

import dagster_webserver.cli as webserver_cli
from graphql import GraphQLError, OperationDefinitionNode, OperationType, parse
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Scope

from api.config import HostSettings
from api.errors import failure
from api.guard import HostGuard, WriteGuard


async def _no_mutation_by_get(scope: Scope, headers: Headers) -> tuple[int, str] | None:
    """A GraphQL mutation sent in a GET's URL is refused: only a JSON POST may change anything."""
    if scope["type"] != "http" or scope["method"] not in ("GET", "HEAD") or not scope["path"].endswith("/graphql"):
        return None
    query = Request(scope).query_params.get("query")
    if not query:
        return None
    try:
        document = parse(query)
    except GraphQLError:
        return None  # Dagster answers 400 itself; nothing runs
    if any(
        isinstance(d, OperationDefinitionNode) and d.operation is OperationType.MUTATION for d in document.definitions
    ):
        return 405, "a GraphQL mutation must be POSTed as JSON, not sent in a GET's URL"
    return None


def guard(app: ASGIApp, allowed_hosts: list[str]) -> ASGIApp:
    """`app` (Dagster's webserver) behind the Host check and the rules for writes; no other site's pages."""
    writes = WriteGuard(
        app,
        allowed_origins=[],
        answer=failure,
        extra=_no_mutation_by_get,
        others="only the Dagster UI's own pages may send them",
    )
    return HostGuard(writes, allowed_hosts, answer=failure)


def main(argv: list[str]) -> int:
    if not argv or argv[0] != "dagster-webserver":
        sys.stderr.write(__doc__ or "")
        return 2
    allowed_hosts = HostSettings().allowed_hosts  # CONSTELLATION_ALLOWED_HOSTS, read as the gateway reads it
    # dagster-webserver builds its app with this function, then serves it with uvicorn: wrap what it builds.
    build = webserver_cli.create_app_from_workspace_process_context

    def guarded(*args: Any, **kwargs: Any) -> ASGIApp:
        return guard(build(*args, **kwargs), allowed_hosts)

    # The webserver hands what this builds to uvicorn, which serves any ASGI app (its annotation says Starlette).
    webserver_cli.create_app_from_workspace_process_context = guarded  # type: ignore[assignment]
    sys.argv = argv
    status: int = webserver_cli.main()  # type: ignore[no-untyped-call]  # dagster-webserver's click entry point
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
