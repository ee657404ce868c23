"""A client of the Open Inference Protocol (KServe V2 REST) and Triton's repository extension.

It speaks only the protocol, so Triton, KServe or our own `model_server/` can answer it.
Transient failures (connection refused or reset, timeouts, 502/503/504) are retried with
exponential backoff; anything else fails at once with the server's own message.

With a token it sends `Authorization: Bearer <token>`. With a lease holder (a run id) its loads
hold the model for that holder, its inferences renew the lease, its unloads let go of it; while
the holder's process lives, a thread renews its leases (LeaseKeeper), so a run that crashes
stops renewing and its leases expire on the server. Servers without leases (Triton) ignore them.

Tensors (tiles of any number of bands, a table's rows) travel with the binary tensor data extension
both ways: the JSON header, then the raw little-endian values, its length in
`Inference-Header-Content-Length` (`infer_tensor`, `predict_array`). A model's class names are read
from its metadata's `parameters.labels` (ours), or from a Triton model configuration's `labels`
parameter, or its metadata's `labels`.
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import math
import re
import socket
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx
import tenacity

from orchestrator import names
from orchestrator.contract import model_id_of, slug  # noqa: F401 - a model's name on the server, here as before
from orchestrator.engine import OperationError

if TYPE_CHECKING:
    import numpy as np  # imported where tensors are sent: a run without them does not pay for it

log = logging.getLogger(__name__)
# A Hugging Face style id: "name" or "org/name".
MODEL_ID_PATTERN = names.MODEL_ID_PATTERN
# A model's name on the server (Triton's and ours).
SERVER_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")
CANCEL_POLL_S = 0.25  # how often a wait for the model server (a load) asks whether the run is being cancelled
TRANSIENT_STATUS = {502, 503, 504}
TABULAR_TASKS = ("tabular-classification", "tabular-regression")
JOIN_BELOW = 256 * 1024  # a binary request body up to this size is sent in one write (_PlainHTTP)
BINARY_HEADER = "Inference-Header-Content-Length"
# The protocol's number datatypes as NumPy's, little-endian as the binary extension sends them.
NUMPY_TYPES = {
    "BOOL": "?",
    "UINT8": "u1",
    "UINT16": "<u2",
    "UINT32": "<u4",
    "UINT64": "<u8",
    "INT8": "i1",
    "INT16": "<i2",
    "INT32": "<i4",
    "INT64": "<i8",
    "FP16": "<f2",
    "FP32": "<f4",
    "FP64": "<f8",
}


@dataclass(frozen=True)
class Retry:
    attempts: int = 5
    first_delay_s: float = 0.5  # then doubling: 0.5, 1, 2, 4 s


class ModelServer:
    """One model server, by base URL; `token`: the bearer token it asks for; `lease`: the holder this client loads,
    infers and unloads for (a run id), its leases lasting `lease_ttl_s` unless renewed."""

    def __init__(
        self,
        base_url: str,
        timeout_s: float = 120.0,
        retry: Retry = Retry(),
        check_cancelled: Callable[[], None] = lambda: None,
        token: str | None = None,
        lease: str | None = None,
        lease_ttl_s: float = 300.0,
    ):
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.retry = retry
        self.check_cancelled = check_cancelled
        self.token = token or None
        self.lease = lease or None
        self.lease_ttl_s = lease_ttl_s
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout_s, headers=headers)
        # Binary inference requests over the standard library's http.client where it can reach the server (plain
        # HTTP, no proxy): httpx's own work was about 0.5 ms of each request, as much as the server's.
        self._plain = _PlainHTTP.reaching(self.base_url, timeout_s, headers)
        # Each model's metadata as last read by this client: predict_rows needs its input name and labels for
        # every request, and a GET per request cost about as much as the inference of a small model.
        self._metadata: dict[str, dict[str, Any]] = {}

    def close(self) -> None:
        self._http.close()
        if self._plain is not None:
            self._plain.close()

    def __enter__(self) -> ModelServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def is_ready(self, model_id: str) -> bool:
        return self.readiness(model_id) == "ready"

    def readiness(self, model_id: str) -> str:
        """ "ready", "loading" (our server answers 400 while it loads) or "absent"."""
        response = self._call("GET", f"/v2/models/{slug(model_id)}/ready", expect=(200, 404, 400))
        if response.status_code == 200 and response.json().get("ready", True) is not False:
            return "ready"
        return "loading" if response.status_code == 400 else "absent"

    def load(self, model_id: str, source: str, task: str) -> dict[str, Any]:
        """Load (or, when it is loaded from the same source for the same task, hold) the model; the server's answer.

        Ours refuses (409) a name loaded from another source or for another task: a different source is a
        different model, and the model's id names it, so an id means one source at a time on a server.
        """
        self._metadata.pop(model_id, None)
        parameters: dict[str, Any] = {"source": source, "task": task}
        if self.lease:
            parameters.update(lease=self.lease, lease_ttl_s=self.lease_ttl_s)
        response = self._until_cancelled(
            lambda: self._call(
                "POST",
                f"/v2/repository/models/{slug(model_id)}/load",
                json={"parameters": parameters},
                what=f"loading {model_id}",
            ),
            on_cancel=lambda: self._let_go_later(model_id),
        )
        try:
            answer = response.json()
        except ValueError:
            answer = {}
        answer = answer if isinstance(answer, dict) else {}
        if answer.get("task", task) != task:
            raise OperationError(
                f"loading {model_id}: the model server has it loaded for {answer['task']!r}, not {task!r}"
            )
        if self.lease and "leases" in answer:  # a server of leases: keep this one alive while we live
            KEEPER.hold(self._lease_key(model_id), self._renewer(model_id), self.lease_ttl_s / 3)
        return answer

    def check_load(self, model_id: str, source: str, task: str) -> str | None:
        """Why the server would not load `source` as `model_id` for `task`, asked without loading (our server's
        check route); None when it would, or when the server cannot tell (another server: no such route)."""
        response = self._call(
            "POST",
            f"/v2/repository/models/{slug(model_id)}/check",
            json={"parameters": {"source": source, "task": task}},
            expect=(200, 400, 404, 405),
            what=f"checking {model_id}",
        )
        try:
            answer = response.json() if response.status_code == 200 else {}
        except ValueError:
            return None
        if not isinstance(answer, dict) or answer.get("loadable") is not False:
            return None
        return str(answer.get("error") or f"the model server cannot load {source!r} for {task}")

    def _until_cancelled(self, call: Callable[[], httpx.Response], on_cancel: Callable[[], None]) -> httpx.Response:
        """`call()`'s answer, waited for in a thread of its own while `check_cancelled` is asked every
        CANCEL_POLL_S: a cancelled run stops waiting for a load that takes minutes (`on_cancel` then runs, and
        the call's thread is left to end when the server answers)."""
        answer: Future[httpx.Response] = Future()

        def run() -> None:
            try:
                answer.set_result(call())
            except BaseException as exc:  # handed to the waiting thread
                answer.set_exception(exc)

        threading.Thread(target=run, name="model-server-call", daemon=True).start()
        while True:
            try:
                return answer.result(timeout=CANCEL_POLL_S)
            except FutureTimeout:
                try:
                    self.check_cancelled()
                except BaseException:
                    on_cancel()
                    raise

    def _let_go_later(self, model_id: str) -> None:
        """After giving up waiting for a load: ask the server (from a thread of its own, with a client of its own)
        to let go of this lease, which it does once the load ends (it waits for the name's lock). Without a lease
        there is nothing this client holds. Should this process end first, the lease expires unrenewed."""
        if not self.lease:
            return
        base_url, token, lease, ttl = self.base_url, self.token, self.lease, self.lease_ttl_s
        timeout_s = max(self.timeout_s, 600.0)  # as long as a load may take

        def let_go() -> None:
            try:
                with ModelServer(
                    base_url, timeout_s, Retry(attempts=2), token=token, lease=lease, lease_ttl_s=ttl
                ) as server:
                    server.unload(model_id)
            except Exception as exc:  # the lease expires anyway
                log.warning("letting go of %s after a cancelled load failed: %s", model_id, exc)

        threading.Thread(target=let_go, name="model-unload-after-cancel", daemon=True).start()

    def unload(self, model_id: str) -> dict[str, Any]:
        """Let go of this client's lease (the server unloads the model when no lease holds it), or, without a lease,
        unload it outright; the server's answer."""
        self._metadata.pop(model_id, None)
        if self.lease:
            KEEPER.release(self._lease_key(model_id))
        body = {"parameters": {"lease": self.lease}} if self.lease else None
        response = self._call(
            "POST", f"/v2/repository/models/{slug(model_id)}/unload", json=body, what=f"unloading {model_id}"
        )
        try:
            answer = response.json()
        except ValueError:
            return {}
        return answer if isinstance(answer, dict) else {}

    def renew(self, model_id: str) -> bool:
        """Extend this client's lease on the model; False when the model is no longer loaded."""
        if not self.lease:
            raise OperationError("renew needs a lease holder")
        body = {"parameters": {"lease": self.lease, "lease_ttl_s": self.lease_ttl_s}}
        response = self._call(
            "POST",
            f"/v2/repository/models/{slug(model_id)}/renew",
            json=body,
            expect=(200, 404),
            what=f"renewing the lease on {model_id}",
        )
        return response.status_code == 200

    def _lease_key(self, model_id: str) -> tuple[str, str, str]:
        return (self.base_url, slug(model_id), self.lease or "")

    def _renewer(self, model_id: str) -> Callable[[], bool]:
        base_url, timeout_s, token, lease, ttl = self.base_url, self.timeout_s, self.token, self.lease, self.lease_ttl_s

        def renew() -> bool:
            with ModelServer(
                base_url, min(timeout_s, 30.0), Retry(attempts=2), token=token, lease=lease, lease_ttl_s=ttl
            ) as server:
                return server.renew(model_id)

        return renew

    def metadata(self, model_id: str) -> dict[str, Any]:
        """The loaded model's metadata: platform, task, source, labels (class names by id), inputs, outputs.

        Always read from the server; this client keeps the answer for its predict_rows calls."""
        self._metadata.pop(model_id, None)
        body = self._call("GET", f"/v2/models/{slug(model_id)}", what=f"reading {model_id}'s metadata").json()
        if not isinstance(body, dict):
            raise OperationError(f"{model_id}: the model server's metadata is not a JSON object")
        if "parameters" not in body and "task" not in body:
            # Not our server (Triton): its model configuration's parameters say what ours says in the metadata.
            config = self._call(
                "GET",
                f"/v2/models/{slug(model_id)}/config",
                expect=(200, 400, 404),
                what=f"reading {model_id}'s configuration",
            )
            if config.status_code == 200:
                try:
                    parameters = config.json().get("parameters")
                except (ValueError, AttributeError):
                    parameters = None
                if isinstance(parameters, dict):
                    body["parameters"] = parameters
        self._metadata[model_id] = body
        return body

    def _known_metadata(self, model_id: str) -> dict[str, Any]:
        """The model's metadata as this client last read it (read once; a load, unload or failed inference by this
        client reads it again)."""
        known = self._metadata.get(model_id)
        return known if known is not None else self.metadata(model_id)

    def classify(
        self, model_id: str, images: list[bytes], top_k: int, candidate_labels: list[str] | None = None
    ) -> list[list[tuple[str, float]]]:
        """Top-k (label, score) per image, in the order given; zero-shot among `candidate_labels` when given."""
        inputs = [_images(images)]
        if candidate_labels is not None:
            inputs.append(_strings("candidate_labels", candidate_labels))
        body = self._infer(model_id, inputs, {"top_k": top_k})
        return _predictions(body, len(images), model_id)

    def classify_texts(self, model_id: str, texts: list[str], top_k: int) -> list[list[tuple[str, float]]]:
        """Top-k (label, score) per text, in the order given."""
        return _predictions(self._infer(model_id, [_strings("text", texts)], {"top_k": top_k}), len(texts), model_id)

    def detect(self, model_id: str, images: list[bytes], threshold: float) -> list[list[dict[str, Any]]]:
        """Per image, its detections: {"label", "score", "box": [xmin, ymin, xmax, ymax]} (pixels of the image)."""
        outputs = _outputs(
            self._infer(model_id, [_images(images)], {"threshold": threshold}),
            model_id,
            ("image_index", "label", "score", "box"),
        )
        index, labels, scores, boxes = (outputs[n]["data"] for n in ("image_index", "label", "score", "box"))
        count = len(index)
        if not (len(labels) == len(scores) == count and len(boxes) == 4 * count):
            raise OperationError(f"{model_id}: the answer's detection outputs differ in length")
        found: list[list[dict[str, Any]]] = [[] for _ in images]
        for i, image in enumerate(index):
            if not isinstance(image, int) or not 0 <= image < len(images):
                raise OperationError(f"{model_id}: a detection names image {image!r} of the {len(images)} sent")
            found[image].append(
                {"label": labels[i], "score": float(scores[i]), "box": [float(v) for v in boxes[4 * i : 4 * i + 4]]}
            )
        return found

    def segment(self, model_id: str, images: list[bytes]) -> list[bytes]:
        """Per image, the PNG of its class-id mask (each pixel the class id, the image's size)."""
        mask = _outputs(self._infer(model_id, [_images(images)], {}), model_id, ("mask",))["mask"]
        if mask.get("shape") != [len(images)] or len(mask.get("data", [])) != len(images):
            raise OperationError(
                f"{model_id}: sent {len(images)} images but the answer has {len(mask.get('data', []))} masks"
            )
        try:
            return [base64.b64decode(item, validate=True) for item in mask["data"]]
        except (ValueError, TypeError) as exc:
            raise OperationError(f"{model_id}: a mask in the answer is not base64: {exc}") from None

    def predict_rows(self, model_id: str, rows: list[list[float]], task: str) -> list[dict[str, Any]]:
        """Per row: {"label": str, "scores": {class: p}} (tabular-classification; scores empty when the model gives
        no probabilities) or {"value": float} (tabular-regression). `predict_array` with rows as lists and the
        answer as a dict per row."""
        if task not in TABULAR_TASKS:
            raise OperationError(f"predict_rows serves tabular-classification and tabular-regression, not {task!r}")
        if not rows:
            return []
        answer = self.predict_array(model_id, _row_array(rows), task)
        if answer.values is not None:
            return [{"value": value} for value in answer.values.tolist()]
        assert answer.labels is not None
        if answer.scores is None:
            return [{"label": label, "scores": {}} for label in answer.labels]
        classes = answer.classes
        return [
            {"label": label, "scores": dict(zip(classes, scores, strict=True))}
            for label, scores in zip(answer.labels, answer.scores.tolist(), strict=True)
        ]

    def predict_array(
        self,
        model_id: str,
        rows: np.ndarray,
        task: str,
        row_names: Sequence[str] | None = None,
        columns: Sequence[str] | None = None,
    ) -> TabularAnswer:
        """A tabular model's predictions for rows [N, F] of numbers, in one request: the rows go in binary in the
        model's input type (FP32 unless its metadata says FP64), the scores and values come back in binary, the
        labels as JSON text (the binary tensor data extension, per output). OperationError names a row and column
        that is not a finite number of that type (by `row_names` and `columns` when given)."""
        import numpy as np

        if task not in TABULAR_TASKS:
            raise OperationError(f"predict_array serves tabular-classification and tabular-regression, not {task!r}")
        given = np.asarray(rows)
        if given.ndim != 2:
            raise OperationError(f"{model_id}: the rows have shape {list(given.shape)}; expected [rows, features]")
        metadata = self._known_metadata(model_id)
        try:
            tensor = metadata["inputs"][0]
            name = tensor["name"]
        except (KeyError, IndexError, TypeError):
            raise OperationError(f"{model_id}: the model server's metadata names no input") from None
        datatype = "FP64" if tensor.get("datatype") == "FP64" else "FP32"
        try:
            with np.errstate(over="ignore"):  # a value beyond the type becomes inf, named below
                sent = np.ascontiguousarray(given, dtype=NUMPY_TYPES[datatype])
        except (TypeError, ValueError):
            raise OperationError(f"{model_id}: the rows are {given.dtype}, not numbers") from None
        bad = np.flatnonzero(~np.isfinite(sent.ravel()))
        if bad.size:
            row, column = divmod(int(bad[0]), sent.shape[1])
            value = given[row, column].item()
            why = "not a finite number" if not math.isfinite(value) else f"beyond the range of {datatype}"
            if row_names is not None and columns is not None:
                raise OperationError(f"row {row_names[row]!r}: feature column {columns[column]!r} is {value!r}, {why}")
            raise OperationError(f"row {row} column {column} is {value!r}, {why}")
        if task == "tabular-regression":
            wanted = {"value": True}
        else:
            probabilities = _probability_output(metadata)
            # The labels as JSON text: a list of short strings is read in C, where BYTES in binary would be
            # unpacked item by item.
            wanted = {"label": False, **({probabilities: True} if probabilities else {})}
        if not len(sent):
            return _tabular_answer(model_id, task, {output: np.zeros(0) for output in wanted}, 0, metadata)
        header = {
            "inputs": [
                {
                    "name": name,
                    "shape": list(sent.shape),
                    "datatype": datatype,
                    "parameters": {"binary_data_size": sent.nbytes},
                }
            ],
            "outputs": [{"name": output, "parameters": {"binary_data": binary}} for output, binary in wanted.items()],
        }
        response = self._infer_binary(model_id, header, sent)
        outputs = _tensor_outputs(response, model_id, list(wanted))
        return _tabular_answer(model_id, task, outputs, len(sent), metadata)

    def infer_tensor(self, model_id: str, tiles: np.ndarray, outputs: list[str]) -> dict[str, np.ndarray]:
        """Send float32 tiles [N, C, H, W] to the model's input in binary and ask for `outputs` in binary (the binary
        tensor data extension); each output as an array in its shape (a server that answers JSON numbers is read
        too)."""
        import numpy as np

        metadata = self._known_metadata(model_id)
        try:
            name = metadata["inputs"][0]["name"]
        except (KeyError, IndexError, TypeError):
            raise OperationError(f"{model_id}: the model server's metadata names no input") from None
        tiles = np.ascontiguousarray(tiles, dtype="<f4")
        header = {
            "inputs": [
                {
                    "name": name,
                    "shape": list(tiles.shape),
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": tiles.nbytes},
                }
            ],
            "outputs": [{"name": output, "parameters": {"binary_data": True}} for output in outputs],
        }
        return _tensor_outputs(self._infer_binary(model_id, header, tiles), model_id, outputs)

    def _infer_binary(self, model_id: str, header: dict[str, Any], tensor: np.ndarray) -> httpx.Response:
        """POST an inference request whose one input's values (`tensor`, contiguous, little-endian) follow its JSON
        `header` in binary; the answer as it came."""
        if self.lease:
            header = {**header, "parameters": {**header.get("parameters", {}), "lease": self.lease}}
        encoded = json.dumps(header).encode()
        # The tensor goes out from its own memory, not copied into one body (megabytes per request).
        body = _Body(encoded, tensor.reshape(-1).data.cast("B"))
        headers = {
            BINARY_HEADER: str(len(encoded)),
            "Content-Type": "application/octet-stream",
            "Content-Length": str(len(encoded) + tensor.nbytes),
        }
        path = f"/v2/models/{slug(model_id)}/infer"
        plain = self._plain
        try:
            return self._call(
                "POST",
                path,
                content=body,
                headers=headers,
                what=f"inference on {model_id}",
                send=(lambda: plain.post(path, body.parts, headers)) if plain is not None else None,
            )
        except OperationError:  # the model may have been loaded again, from another graph: read it afresh next time
            self._metadata.pop(model_id, None)
            raise

    def _infer(self, model_id: str, inputs: list[dict[str, Any]], parameters: dict[str, Any]) -> dict[str, Any]:
        if self.lease:
            parameters = {**parameters, "lease": self.lease}  # renews this holder's lease
        body = {"inputs": inputs, "parameters": parameters}
        response = self._call("POST", f"/v2/models/{slug(model_id)}/infer", json=body, what=f"inference on {model_id}")
        try:
            answer = response.json()
        except ValueError:
            raise OperationError(f"{model_id}: the model server's answer is not JSON") from None
        if not isinstance(answer, dict):
            raise OperationError(f"{model_id}: the model server's answer is not a JSON object")
        return answer

    def _call(
        self,
        method: str,
        path: str,
        json: Any = None,
        expect: tuple[int, ...] = (200,),
        what: str = "",
        content: Any = None,
        headers: dict[str, str] | None = None,
        send: Callable[[], httpx.Response] | None = None,
    ) -> httpx.Response:
        """`send`: makes the request instead of httpx (the same request, sent another way)."""
        what = what or f"{method} {path}"

        def attempt() -> httpx.Response:
            self.check_cancelled()
            if send is not None:
                response = send()
            else:
                response = self._http.request(method, path, json=json, content=content, headers=headers)
            if response.status_code in expect:
                return response
            if response.status_code in TRANSIENT_STATUS:
                raise _Transient(f"HTTP {response.status_code}: {_server_message(response)}")
            raise OperationError(
                f"{what}: the model server answered {response.status_code}: {_server_message(response)}"
            )

        # Connection errors, timeouts and 502/503/504 may pass next time; anything else fails at once.
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.retry.attempts),
            wait=tenacity.wait_exponential(multiplier=self.retry.first_delay_s, exp_base=2),
            retry=tenacity.retry_if_exception_type((httpx.TransportError, httpx.TimeoutException, _Transient)),
            reraise=True,
        )
        try:
            return retrying(attempt)
        except (httpx.TransportError, httpx.TimeoutException, _Transient) as exc:
            problem = str(exc) if isinstance(exc, _Transient) else type(exc).__name__
            raise OperationError(
                f"{what}: the model server at {self.base_url} failed {self.retry.attempts} times (last: {problem})"
            ) from None


class _Transient(Exception):
    """An answer that may be different next time (502, 503, 504)."""


@dataclass
class _Held:
    renew: Callable[[], bool]
    every_s: float
    due: float


class LeaseKeeper:
    """Renews the leases this process holds, each every third of its length, until it is let go of.

    One thread for the process. A renewal that fails is tried again at the next turn; one that finds
    the model gone stops. When the process dies nothing renews: its leases expire on the server.
    """

    def __init__(self) -> None:
        self._held: dict[tuple[str, str, str], _Held] = {}
        self._lock = threading.Lock()
        self._changed = threading.Event()
        self._thread: threading.Thread | None = None

    def hold(self, key: tuple[str, str, str], renew: Callable[[], bool], every_s: float) -> None:
        every_s = max(every_s, 0.05)
        with self._lock:
            self._held[key] = _Held(renew, every_s, time.monotonic() + every_s)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="model-lease-keeper", daemon=True)
                self._thread.start()
        self._changed.set()

    def release(self, key: tuple[str, str, str]) -> None:
        with self._lock:
            self._held.pop(key, None)
        self._changed.set()

    def held(self) -> list[tuple[str, str, str]]:
        with self._lock:
            return list(self._held)

    def _run(self) -> None:
        while True:
            with self._lock:
                next_due = min((h.due for h in self._held.values()), default=None)
            self._changed.wait(None if next_due is None else max(0.0, next_due - time.monotonic()))
            self._changed.clear()
            now = time.monotonic()
            with self._lock:
                due = [(key, held) for key, held in self._held.items() if held.due <= now]
                for _, held in due:
                    held.due = now + held.every_s
            for key, held in due:
                try:
                    alive = held.renew()
                except Exception as exc:  # the server may be restarting: try again next turn
                    log.warning("renewing the lease on model %s at %s failed: %s", key[1], key[0], exc)
                    continue
                if not alive:
                    log.warning(
                        "model %s at %s is no longer loaded; its lease for %s is not renewed", key[1], key[0], key[2]
                    )
                    with self._lock:
                        if self._held.get(key) is held:
                            del self._held[key]


KEEPER = LeaseKeeper()


def _server_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300] or response.reason_phrase
    return str(body.get("error") or body.get("message") or body)[:500] if isinstance(body, dict) else str(body)[:300]


class _PlainHTTP:
    """POSTs to a plain-HTTP server over kept-alive connections of the standard library's `http.client`, one per
    thread. Its failures are httpx's (a connection error, a timeout), so that they are retried alike.

    Used for the binary inference requests only: a request through httpx cost about 0.6 ms on a 2-CPU machine
    against 0.16 ms through http.client (the same POST of 20 KB to a bare ASGI app on uvicorn), as much as the
    server's own work, and a table's rows go in hundreds of requests (bench/RESULTS.md, "Tabular inference in
    binary")."""

    def __init__(self, host: str, port: int, prefix: str, timeout_s: float, headers: dict[str, str]):
        self.host, self.port, self.prefix = host, port, prefix
        self.timeout_s = timeout_s
        self.headers = headers
        self._local = threading.local()
        self._lock = threading.Lock()
        self._opened: list[http.client.HTTPConnection] = []

    @classmethod
    def reaching(cls, base_url: str, timeout_s: float, headers: dict[str, str]) -> _PlainHTTP | None:
        """One for `base_url` when it is plain HTTP that no proxy of the environment is for (httpx would use that
        proxy); None otherwise (HTTPS, a proxy: httpx sends every request)."""
        try:
            parts = urllib.parse.urlsplit(base_url)
            port = parts.port or 80
        except ValueError:
            return None
        if parts.scheme != "http" or not parts.hostname or parts.username or parts.password or parts.query:
            return None
        proxies = urllib.request.getproxies()
        if ("http" in proxies or "all" in proxies) and not urllib.request.proxy_bypass(parts.hostname):
            return None
        return cls(parts.hostname, port, parts.path.rstrip("/"), timeout_s, headers)

    def post(self, path: str, parts: Sequence[bytes | memoryview], headers: dict[str, str]) -> httpx.Response:
        """The answer to a POST of `parts` one after the other (their length in `headers`' Content-Length)."""
        connection = self._connection()
        # A small body is joined (a copy of microseconds) and goes in one write after the request line and headers,
        # not one write per part.
        body: Any = b"".join(parts) if sum(len(part) for part in parts) <= JOIN_BELOW else parts
        try:
            connection.request("POST", self.prefix + path, body=body, headers={**self.headers, **headers})
            answer = connection.getresponse()
            content = answer.read()
        except TimeoutError as exc:
            connection.close()
            raise httpx.ReadTimeout(f"no answer within {self.timeout_s} s: {exc}") from None
        except (OSError, http.client.HTTPException) as exc:
            connection.close()
            raise httpx.ConnectError(f"{type(exc).__name__}: {exc}") from None
        if answer.will_close:
            connection.close()
        return httpx.Response(answer.status, headers=answer.getheaders(), content=content)

    def _connection(self) -> http.client.HTTPConnection:
        connection: http.client.HTTPConnection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = _NoDelay(self.host, self.port, timeout=self.timeout_s)
            self._local.connection = connection
            with self._lock:
                self._opened.append(connection)
        elif connection.sock is not None and _unusable(connection.sock, self.timeout_s):
            connection.close()  # the server closed it while idle (uvicorn after 5 s): http.client opens a new one
        return connection

    def close(self) -> None:
        with self._lock:
            for connection in self._opened:
                connection.close()
            self._opened.clear()


class _NoDelay(http.client.HTTPConnection):
    """A connection whose small writes go at once (TCP_NODELAY, as uvicorn sets it on its side): http.client writes
    the headers, then the body; without it the body could wait for the headers' acknowledgement."""

    def connect(self) -> None:
        super().connect()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _unusable(sock: socket.socket, timeout_s: float) -> bool:
    """Whether a kept-alive connection, idle between requests, was closed by the server (or holds bytes nobody
    asked for): a request sent on it would fail."""
    try:
        sock.settimeout(0)
        sock.recv(1, socket.MSG_PEEK)  # at once: b"" (closed) or bytes; BlockingIOError when there is nothing
        return True
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        try:
            sock.settimeout(timeout_s)
        except OSError:
            pass


class _Body:
    """A request body of parts sent one after the other, any number of times (a retry sends it again)."""

    def __init__(self, *parts: bytes | memoryview):
        self.parts = parts

    def __iter__(self) -> Any:
        return iter(self.parts)


def _tensor_outputs(response: httpx.Response, model_id: str, wanted: list[str]) -> dict[str, np.ndarray]:
    """The outputs of an answer, binary (JSON header, then each binary output's bytes in order) or plain JSON; a
    BYTES output as an array of str objects."""
    import numpy as np

    body = response.content
    length = response.headers.get(BINARY_HEADER)
    if length is not None and (not length.isdigit() or int(length) > len(body)):
        raise OperationError(
            f"{model_id}: the answer's {BINARY_HEADER} is {length[:40]!r}, not the length of its JSON header"
        )
    head, binary = (body[: int(length)], body[int(length) :]) if length is not None else (body, b"")
    try:
        answer = json.loads(head)
    except ValueError:
        raise OperationError(f"{model_id}: the model server's answer is not JSON") from None
    found: dict[str, np.ndarray] = {}
    offset = 0
    for output in answer.get("outputs", []) if isinstance(answer, dict) else []:
        if not isinstance(output, dict):
            continue
        name, shape, datatype = output.get("name"), output.get("shape"), output.get("datatype")
        dtype = NUMPY_TYPES.get(str(datatype)) if datatype != "BYTES" else object
        if dtype is None or not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise OperationError(
                f"{model_id}: the answer's output {name!r} is {datatype} {shape}, not a tensor of numbers"
            )
        size = (output.get("parameters") or {}).get("binary_data_size")
        if size is not None and dtype is object:
            if not isinstance(size, int) or offset + size > len(binary):
                raise OperationError(
                    f"{model_id}: the answer's output {name!r} says {size} bytes of binary data, "
                    f"but {len(binary) - offset} are left"
                )
            values = np.array(_unpacked(binary[offset : offset + size], model_id, str(name)), dtype=object)
            offset += size
        elif size is not None:
            if not isinstance(size, int) or offset + size > len(binary):
                raise OperationError(
                    f"{model_id}: the answer's output {name!r} says {size} bytes of binary data, "
                    f"but {len(binary) - offset} are left"
                )
            values = np.frombuffer(binary, dtype=dtype, count=size // np.dtype(dtype).itemsize, offset=offset)
            offset += size
        elif dtype is object:
            values = np.array(output.get("data") or [], dtype=object)
        else:
            values = np.asarray(output.get("data") or [], dtype=dtype)
        if values.size != math.prod(shape):
            raise OperationError(f"{model_id}: the answer's output {name!r} has shape {shape} but {values.size} values")
        found[str(name)] = values.reshape(shape)
    missing = [name for name in wanted if name not in found]
    if missing:
        raise OperationError(
            f"{model_id}: the answer lacks the {', '.join(map(repr, missing))} output(s); "
            f"it has {', '.join(map(repr, found)) or 'none'}"
        )
    return found


def _unpacked(raw: bytes, model_id: str, name: str) -> list[str]:
    """A BYTES output in binary: each element's 4-byte little-endian length, then its bytes (UTF-8 text)."""
    items: list[str] = []
    offset = 0
    while offset < len(raw):
        length = int.from_bytes(raw[offset : offset + 4], "little")
        if offset + 4 + length > len(raw):
            raise OperationError(f"{model_id}: the answer's output {name!r} ends inside element {len(items)}")
        items.append(raw[offset + 4 : offset + 4 + length].decode("utf-8", "replace"))
        offset += 4 + length
    return items


@dataclass
class TabularAnswer:
    """A tabular model's answer for N rows: classification's `labels` (each row's class) and, when the model gives
    probabilities, `scores` [N, C] with the `classes` naming their columns; regression's `values` [N]."""

    labels: list[str] | None = None
    scores: np.ndarray | None = None
    classes: list[str] = field(default_factory=list)
    values: np.ndarray | None = None


def _probability_output(metadata: dict[str, Any]) -> str | None:
    """The name of a classifier's probability table: a float output [N, C] (one named like it first), if any."""
    tables = [
        str(o.get("name"))
        for o in metadata.get("outputs") or []
        if isinstance(o, dict)
        and o.get("name") != "label"
        and o.get("datatype") in ("FP32", "FP64")
        and isinstance(o.get("shape"), list)
        and len(o["shape"]) == 2
    ]
    tables.sort(key=lambda name: "prob" not in name.lower())
    return tables[0] if tables else None


def _tabular_answer(
    model_id: str, task: str, outputs: dict[str, Any], count: int, metadata: dict[str, Any]
) -> TabularAnswer:
    """The answer's outputs for `count` rows, checked: one prediction per row, none dropped, none duplicated."""
    import numpy as np

    if task == "tabular-regression":
        values = np.asarray(outputs["value"]).reshape(-1)
        _expect_rows(values, count, model_id, "value")
        return TabularAnswer(values=values)
    labels = np.asarray(outputs["label"]).reshape(-1)
    _expect_rows(labels, count, model_id, "label")
    texts = labels.tolist()
    answer = TabularAnswer(labels=texts if set(map(type, texts)) <= {str} else labels.astype(str).tolist())
    table = next((np.asarray(v) for k, v in outputs.items() if k != "label"), None)
    if table is not None and table.ndim == 2 and len(table) == count:
        names = labels_of(metadata)
        answer.scores = table
        answer.classes = names if len(names) == table.shape[1] else [str(i) for i in range(table.shape[1])]
    return answer


def _row_array(rows: list[list[float]]) -> np.ndarray:
    """Rows of numbers (or numeric text) as float64 [N, F], converted by NumPy; OperationError names a row of
    another length, or a value that is not a finite number."""
    import numpy as np

    try:
        array = np.array(rows, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        array = None
    if array is not None and array.ndim == 2:
        bad = np.flatnonzero(~np.isfinite(array.ravel()))
        if not bad.size:
            return array
    width = len(rows[0])
    for i, row in enumerate(rows):  # only to name what NumPy could not convert
        if len(row) != width:
            raise OperationError(f"row {i} has {len(row)} values but row 0 has {width}")
        for j, value in enumerate(row):
            try:
                number = float(value)
            except (TypeError, ValueError, OverflowError):
                number = math.nan
            if not math.isfinite(number):
                # A missing value has to be filled in before the model sees it.
                raise OperationError(f"row {i} column {j} is {value!r}, not a finite number")
    raise OperationError(f"the rows are not a table of numbers ({len(rows)} rows of {width})")


def parameter(metadata: dict[str, Any], key: str) -> Any:
    """A model's parameter, as our server answers it (a JSON value) or as a Triton configuration holds it (a
    {"string_value": JSON text}); None when it has none."""
    parameters = metadata.get("parameters")
    value = parameters.get(key) if isinstance(parameters, dict) else None
    if isinstance(value, dict) and set(value) == {"string_value"}:
        value = value["string_value"]
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise OperationError(f"the model's parameter {key!r} is {value[:80]!r}, not JSON") from None
    return value


def labels_of(metadata: dict[str, Any]) -> list[str]:
    """The model's class names by id: `parameters.labels`, else the metadata's own `labels`."""
    labels = parameter(metadata, "labels")
    if labels is None:
        labels = metadata.get("labels")
    if labels is None:
        return []
    if not isinstance(labels, list):
        raise OperationError(f"the model's labels are {str(labels)[:80]}, not a list of class names")
    return [str(label) for label in labels]


def _images(images: list[bytes]) -> dict[str, Any]:
    return {
        "name": "image",
        "shape": [len(images)],
        "datatype": "BYTES",
        "data": [base64.b64encode(image).decode("ascii") for image in images],
        "parameters": {"content_type": "base64"},
    }


def _strings(name: str, strings: list[str]) -> dict[str, Any]:
    return {"name": name, "shape": [len(strings)], "datatype": "BYTES", "data": list(strings)}


def _outputs(body: dict[str, Any], model_id: str, wanted: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    outputs: dict[str, dict[str, Any]] = {
        o["name"]: o for o in body.get("outputs", []) if isinstance(o, dict) and isinstance(o.get("name"), str)
    }
    missing = [name for name in wanted if not isinstance(outputs.get(name, {}).get("data"), list)]
    if missing:
        raise OperationError(
            f"{model_id}: the answer lacks the {', '.join(map(repr, missing))} output(s); "
            f"it has {', '.join(map(repr, outputs)) or 'none'}"
        )
    return outputs


def _expect_rows(data: Any, count: int, model_id: str, name: str) -> None:
    if len(data) != count:
        # One prediction per input, none dropped, none duplicated.
        raise OperationError(f"{model_id}: sent {count} rows but the answer's {name!r} has {len(data)} values")


def _predictions(body: dict[str, Any], count: int, model_id: str) -> list[list[tuple[str, float]]]:
    outputs = _outputs(body, model_id, ("label", "score"))
    labels, scores = outputs["label"], outputs["score"]
    shape = labels.get("shape", [])
    if len(shape) != 2:
        raise OperationError(
            f"{model_id}: the answer's 'label' has shape {shape}, not [inputs, k] as a classifier's "
            f"(its outputs: {', '.join(str(o.get('name')) for o in body.get('outputs', []))})"
        )
    if shape[0] != count or scores.get("shape") != shape:
        # One prediction per input, none dropped, none duplicated.
        raise OperationError(f"{model_id}: sent {count} inputs but the answer has shape {shape}")
    k = shape[1]
    if len(labels["data"]) != count * k or len(scores["data"]) != count * k:
        raise OperationError(f"{model_id}: the answer's shape {shape} does not match its data")
    return [
        list(zip(labels["data"][i * k : (i + 1) * k], map(float, scores["data"][i * k : (i + 1) * k]), strict=True))
        for i in range(count)
    ]
