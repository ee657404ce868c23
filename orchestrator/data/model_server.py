"""A client of the Open Inference Protocol (KServe V2 REST) and Triton's repository extension.

It speaks only the protocol, so Triton, KServe or our own `model_server/` can answer it.
Transient failures (connection refused or reset, timeouts, 502/503/504) are retried with
exponential backoff; anything else fails at once with the server's own message.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from orchestrator.engine import OperationError

# A Hugging Face style id: "name" or "org/name".
MODEL_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}(/[A-Za-z0-9][A-Za-z0-9._-]{0,95})?$"
TRANSIENT_STATUS = {502, 503, 504}


def slug(model_id: str) -> str:
    """The model's name in URLs: its id with '/' as '--' (ids are validated, never raw text)."""
    return model_id.replace("/", "--")


@dataclass(frozen=True)
class Retry:
    attempts: int = 5
    first_delay_s: float = 0.5

    def delays(self) -> list[float]:
        return [self.first_delay_s * 2**i for i in range(self.attempts - 1)]


class ModelServer:
    """One model server, by base URL."""

    def __init__(self, base_url: str, timeout_s: float = 120.0, retry: Retry = Retry(),
                 check_cancelled: Callable[[], None] = lambda: None):
        self.base_url = base_url.rstrip("/")
        self.retry = retry
        self.check_cancelled = check_cancelled
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout_s)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ModelServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def is_ready(self, model_id: str) -> bool:
        response = self._call("GET", f"/v2/models/{slug(model_id)}/ready", expect=(200, 404, 400))
        return response.status_code == 200 and response.json().get("ready", True) is not False

    def load(self, model_id: str, source: str, task: str) -> None:
        body = {"parameters": {"source": source, "task": task}}
        self._call("POST", f"/v2/repository/models/{slug(model_id)}/load", json=body, what=f"loading {model_id}")

    def unload(self, model_id: str) -> None:
        self._call("POST", f"/v2/repository/models/{slug(model_id)}/unload", what=f"unloading {model_id}")

    def classify(self, model_id: str, images: list[bytes], top_k: int) -> list[list[tuple[str, float]]]:
        """Top-k (label, score) per image, in the order given."""
        body = {
            "inputs": [{
                "name": "image",
                "shape": [len(images)],
                "datatype": "BYTES",
                "data": [base64.b64encode(image).decode("ascii") for image in images],
                "parameters": {"content_type": "base64"},
            }],
            "parameters": {"top_k": top_k},
        }
        response = self._call("POST", f"/v2/models/{slug(model_id)}/infer", json=body, what=f"inference on {model_id}")
        return _predictions(response.json(), len(images), model_id)

    def _call(self, method: str, path: str, json: Any = None, expect: tuple[int, ...] = (200,),
              what: str = "") -> httpx.Response:
        what = what or f"{method} {path}"
        delays = self.retry.delays()
        for attempt in range(self.retry.attempts):
            self.check_cancelled()
            try:
                response = self._http.request(method, path, json=json)
            except (httpx.TransportError, httpx.TimeoutException) as exc:
                problem = f"{type(exc).__name__}"
            else:
                if response.status_code in expect:
                    return response
                if response.status_code not in TRANSIENT_STATUS:
                    raise OperationError(f"{what}: the model server answered {response.status_code}: "
                                         f"{_server_message(response)}")
                problem = f"HTTP {response.status_code}: {_server_message(response)}"
            if attempt < len(delays):
                time.sleep(delays[attempt])
        raise OperationError(f"{what}: the model server at {self.base_url} failed {self.retry.attempts} times "
                             f"(last: {problem})")


def _server_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300] or response.reason_phrase
    return str(body.get("error") or body.get("message") or body)[:500] if isinstance(body, dict) else str(body)[:300]


def _predictions(body: dict[str, Any], count: int, model_id: str) -> list[list[tuple[str, float]]]:
    outputs = {o.get("name"): o for o in body.get("outputs", [])}
    if "label" not in outputs or "score" not in outputs:
        raise OperationError(f"{model_id}: the answer lacks the 'label' and 'score' outputs")
    labels, scores = outputs["label"], outputs["score"]
    shape = labels.get("shape", [])
    if len(shape) != 2 or shape[0] != count or scores.get("shape") != shape:
        # One prediction per input, none dropped, none duplicated.
        raise OperationError(f"{model_id}: sent {count} images but the answer has shape {shape}")
    k = shape[1]
    return [
        list(zip(labels["data"][i * k:(i + 1) * k], map(float, scores["data"][i * k:(i + 1) * k]), strict=True))
        for i in range(count)
    ]
