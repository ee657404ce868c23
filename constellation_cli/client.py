"""The gateway's routes, as plain method calls; every failure is one of two exceptions."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

TOKEN_ENV = "CONSTELLATION_API_TOKEN"


class GatewayUnreachable(Exception):
    """Nothing answered at the gateway's URL (refused, timed out, not a host)."""

    def __init__(self, url: str, reason: str):
        super().__init__(f"cannot reach the gateway at {url} ({reason}); is it running? (--url or CONSTELLATION_URL)")
        self.url = url
        self.reason = reason


class GatewayError(Exception):
    """The gateway answered with an error: its status code, message, for 422 every problem, and its JSON answer."""

    def __init__(
        self,
        status_code: int,
        message: str,
        errors: list[dict[str, str]] | None = None,
        body: dict[str, Any] | None = None,
    ):
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.errors = errors or []
        self.body = body


class Gateway:
    """A client of one gateway; the token, when given, goes in the Authorization header only."""

    def __init__(self, base_url: str, token: str | None = None, timeout_s: float = 30.0):
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._has_token = bool(token)
        try:
            self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout_s)
        except httpx.InvalidURL as exc:
            raise GatewayUnreachable(base_url, f"not a URL: {exc}") from None

    def __enter__(self) -> Gateway:
        return self

    def __exit__(self, *_: object) -> None:
        self._http.close()

    def execute(self, body: bytes, idempotency_key: str | None = None) -> dict[str, Any]:
        headers = {"content-type": "application/json"}
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        return self._call("POST", "/execute", content=body, headers=headers, expect={"run_id": str})

    def validate(self, body: bytes) -> dict[str, Any]:
        return self._call(
            "POST",
            "/validate",
            content=body,
            headers={"content-type": "application/json"},
            expect={"instructions": int, "nodes": int},
        )

    def run(self, run_id: str) -> dict[str, Any]:
        return self._call("GET", f"/runs/{_segment(run_id)}", expect={"run_id": str})

    def runs(self, state: str | None = None, limit: int | None = None, cursor: str | None = None) -> dict[str, Any]:
        """A page of runs, newest first, and the cursor of the next page."""
        given = {"state": state, "limit": limit, "cursor": cursor}
        return self._call(
            "GET", "/runs", params={k: v for k, v in given.items() if v is not None}, expect={"runs": list}
        )

    def results(self, run_id: str) -> dict[str, Any]:
        return self._call("GET", f"/runs/{_segment(run_id)}/results", expect={"results": list})

    def report(self, run_id: str) -> str:
        """The run's comparison report: one HTML page."""
        path = f"/runs/{_segment(run_id)}/report"
        try:
            response = self._http.get(path)
        except httpx.TransportError as exc:
            raise GatewayUnreachable(self.base_url, type(exc).__name__) from None
        except httpx.InvalidURL as exc:
            raise _unsendable(exc) from None
        if response.is_success and response.headers.get("content-type", "").startswith("text/html"):
            return response.text
        self._call("GET", path)  # an error: _call raises it with the gateway's message
        raise GatewayError(
            response.status_code,
            f"GET {self.base_url}{path} answered {response.status_code} without an HTML page; "
            "is this a Constellation gateway?",
        )

    def cancel(self, run_id: str) -> dict[str, Any]:
        return self._call("POST", f"/runs/{_segment(run_id)}/cancel", expect={"run_id": str, "run_status": str})

    def retry(self, run_id: str) -> dict[str, Any]:
        """A new run of a failed run's pipeline that reuses what its succeeded instructions produced."""
        return self._call("POST", f"/runs/{_segment(run_id)}/retry", expect={"run_id": str})

    def operations(self) -> dict[str, Any]:
        return self._call("GET", "/operations", expect={"operations": list})

    def leaderboard(
        self, dataset: str, fingerprint: str | None = None, limit: int | None = None, cursor: str | None = None
    ) -> dict[str, Any]:
        """Every model compared on a dataset, best first, and the versions of its data (fingerprints)."""
        given = {"dataset": dataset, "fingerprint": fingerprint, "limit": limit, "cursor": cursor}
        return self._call(
            "GET",
            "/comparisons/leaderboard",
            params={k: v for k, v in given.items() if v is not None},
            expect={"models": list},
        )

    def _call(self, method: str, path: str, expect: dict[str, type] | None = None, **kwargs: Any) -> dict[str, Any]:
        """The gateway's JSON answer; a success must hold each key of `expect` with a value of its type."""
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise GatewayUnreachable(self.base_url, type(exc).__name__) from None
        except httpx.InvalidURL as exc:
            raise _unsendable(exc) from None
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise GatewayError(
                response.status_code,
                f"{method} {self.base_url}{path} answered {response.status_code} without a JSON object; "
                "is this a Constellation gateway?",
            )
        if response.is_success:
            wrong = next((k for k, kind in (expect or {}).items() if not isinstance(body.get(k), kind)), None)
            if wrong is not None:
                raise GatewayError(
                    response.status_code,
                    f"{method} {self.base_url}{path} answered {response.status_code} without a valid {wrong!r}; "
                    "is this a Constellation gateway?",
                )
            return body
        message = str(body.get("message") or body.get("detail") or response.reason_phrase)
        if response.status_code == 401:
            hint = f"{TOKEN_ENV} is not the gateway's token" if self._has_token else f"set {TOKEN_ENV}"
            message = f"{message} ({hint})"
        listed = body.get("errors")
        errors = [e for e in listed if isinstance(e, dict)] if isinstance(listed, list) else None
        raise GatewayError(response.status_code, message, errors, body)


def _segment(run_id: str) -> str:
    """A run id as one URL path segment, whatever the user typed.

    The gateway decodes %2F before routing, and '', '.' and '..' are no segment: none of these can name a
    run, so they get the gateway's own answer to a run id it does not know, without asking it."""
    if run_id in ("", ".", "..") or "/" in run_id:
        raise GatewayError(404, f"no run {run_id!r}")
    return quote(run_id, safe="")


def _unsendable(exc: httpx.InvalidURL) -> GatewayError:
    """A request httpx refuses to build from the user's arguments (a run id or an option too long for a URL)."""
    return GatewayError(414, f"the request cannot be sent: {exc} (an argument is too long or not valid in a URL)")
