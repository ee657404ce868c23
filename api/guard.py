"""Refuse what a web page could make a browser send to a local server: the cross-site request rules.

A page on any site can make its visitor's browser send a "simple" request to a server the visitor
reaches (a local stack on 127.0.0.1 included) without asking it first: a form or `fetch` POST whose
Content-Type is text/plain, application/x-www-form-urlencoded or multipart/form-data, or no body at
all, and no header of its own. The page cannot read the answer, but the request does its work. With
DNS rebinding, the page's own host name comes to point at 127.0.0.1, and then it can read answers too;
its requests carry that name in `Host`. The rules, for the gateway and the local Dagster webserver:

- `Host` must name this server: one of the allowed hosts (CONSTELLATION_ALLOWED_HOSTS), checked by
  Starlette's TrustedHostMiddleware. Otherwise 400.
- A request that changes state (every method but GET, HEAD, OPTIONS) with a body, or with a
  Content-Type, must say `Content-Type: application/json` (a charset may follow): a page of another
  site cannot send that without the server's CORS consent. Otherwise 415.
- Its `Origin`, when present, must be this server's own (scheme://host[:port] naming the `Host` the
  request came to) or one of the allowed origins (the gateway's CONSTELLATION_CORS_ORIGINS; none
  for the Dagster webserver). Otherwise 403. Browsers put `Origin` on every
  request other than GET/HEAD that a page makes, so this is what stops a page of another site from
  sending a write without a body (POST /runs/{id}/cancel): clients other than browsers send none and
  need no header of their own (the constellation CLI cancels without one).

Clients other than browsers (python-requests `json=`, httpx, curl -H 'Content-Type: application/json',
the constellation CLI) send no Origin and pass.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
ORIGINS_HINT = "only this server's own pages and those listed in CONSTELLATION_CORS_ORIGINS may send them"
_PASSED = "constellation.host_checked"

Answer = Callable[[int, str], Response]


def is_json(content_type: str | None) -> bool:
    """Whether a Content-Type header says application/json (parameters such as charset allowed)."""
    return content_type is not None and content_type.split(";", 1)[0].strip().lower() == "application/json"


def _has_body(headers: Headers) -> bool:
    return "transfer-encoding" in headers or headers.get("content-length", "0").strip() not in ("", "0")


def _address(scheme: str, netloc: str) -> tuple[str, int] | None:
    try:
        parts = urlsplit(f"{scheme}://{netloc}")
        return (parts.hostname or "").lower(), parts.port or (443 if scheme in ("https", "wss") else 80)
    except ValueError:
        return None


def same_origin(origin: str, host: str | None) -> bool:
    """Whether `origin` (scheme://host[:port]) is the server the request came to (its Host header)."""
    try:
        scheme, netloc = urlsplit(origin).scheme, urlsplit(origin).netloc
    except ValueError:
        return False
    if scheme not in ("http", "https") or not netloc or host is None:
        return False
    page, server = _address(scheme, netloc), _address(scheme, host)
    return page is not None and page == server


def write_refusal(
    headers: Headers, method: str, allowed_origins: Sequence[str], others: str = ORIGINS_HINT
) -> tuple[int, str] | None:
    """Why a request is refused under the rules above (status, message), or None when it may pass."""
    if method.upper() in SAFE_METHODS:
        return None
    content_type = headers.get("content-type")
    if (content_type is not None or _has_body(headers)) and not is_json(content_type):
        given = f"Content-Type {content_type[:100]!r}" if content_type is not None else "no Content-Type"
        return 415, f"a {method.upper()} with a body must be sent with Content-Type: application/json ({given} given)"
    origin = headers.get("origin")
    if origin is not None and not origin_allowed(origin, headers.get("host"), allowed_origins):
        return 403, f"requests from the page {origin[:200]!r} are not allowed here: {others}"
    return None


def origin_allowed(origin: str, host: str | None, allowed_origins: Sequence[str]) -> bool:
    origin = origin.strip().rstrip("/")
    return "*" in allowed_origins or origin in allowed_origins or same_origin(origin, host)


class HostGuard:
    """Starlette's TrustedHostMiddleware, answering `answer(400, ...)` instead of its plain text."""

    def __init__(self, app: ASGIApp, allowed_hosts: Sequence[str], answer: Answer) -> None:
        self.app, self.answer = app, answer
        self.trusted = TrustedHostMiddleware(self._passed, allowed_hosts=list(allowed_hosts), www_redirect=False)

    async def _passed(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope[_PASSED] = True
        await self.app(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return

        async def through(message: Message) -> None:
            if scope.get(_PASSED):  # the app's own answer; TrustedHostMiddleware's refusal is replaced below
                await send(message)

        await self.trusted(scope, receive, through)
        if not scope.get(_PASSED):
            host = Headers(scope=scope).get("host", "")
            message = f"the Host header {host[:200]!r} names no host this server answers for"
            await _refuse(scope, receive, send, self.answer(400, message + " (CONSTELLATION_ALLOWED_HOSTS)"))


class WriteGuard:
    """Refuse state-changing requests (and WebSocket handshakes) that break the rules above."""

    def __init__(
        self,
        app: ASGIApp,
        allowed_origins: Sequence[str],
        answer: Answer,
        extra: Callable[[Scope, Headers], Awaitable[tuple[int, str] | None]] | None = None,
        others: str = ORIGINS_HINT,
    ) -> None:
        self.app, self.allowed_origins, self.answer, self.extra = app, list(allowed_origins), answer, extra
        self.others = others

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if scope["type"] == "websocket":
            # Browsers open WebSockets to any site without asking it; they always say whose page asks.
            origin = headers.get("origin")
            refusal = (
                None
                if origin is None or origin_allowed(origin, headers.get("host"), self.allowed_origins)
                else (403, f"WebSocket from the page {origin[:200]!r}: {self.others}")
            )
        else:
            refusal = write_refusal(headers, scope["method"], self.allowed_origins, self.others)
        if refusal is None and self.extra is not None:
            refusal = await self.extra(scope, headers)
        if refusal is None:
            await self.app(scope, receive, send)
        else:
            await _refuse(scope, receive, send, self.answer(*refusal))


async def _refuse(scope: Scope, receive: Receive, send: Send, response: Response) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008})  # before accept: the handshake gets a 403
    else:
        await response(scope, receive, send)
