"""Model instructions before launch, as the model server answers them (with the code location's token).

deploy_model: the server would find the source (in its models root, its Hugging Face cache, or on
the Hub when it is online) and may load it under that name (not loaded from another source or
for another task). model_inference: a deploy_model before it deploys the model, or the server
holds it already. A server that does not answer in time, or cannot tell (another server than
ours), leaves the question to the run.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from orchestrator.engine import OperationError

if TYPE_CHECKING:
    from orchestrator.models.client import ModelServer
    from orchestrator.preflight import Finding, Preflight

PREFLIGHT_TIMEOUT_S = 3.0


def deploy(check: Preflight, params: Mapping[str, Any]) -> Iterator[Finding]:
    """deploy_model before launch: the model server would find and load its source under its name."""
    from orchestrator.preflight import Finding

    model = params["model"]
    source = params.get("source") or model
    refusal = _ask(check, lambda server: server.check_load(model, source, params.get("task", "image-classification")))
    if refusal:
        yield Finding("source" if params.get("source") else "model", f"deploy_model {model!r}: {refusal}")


def inference(check: Preflight, params: Mapping[str, Any]) -> Iterator[Finding]:
    """model_inference before launch: a deploy_model before it deploys the model, or the server holds it."""
    from orchestrator.preflight import Finding

    model = params["model"]
    if model in check.deployed:
        return
    if _ask(check, lambda server: server.readiness(model)) == "absent":
        deploy_it = json.dumps({"operation": "deploy_model", "parameters": {"model": model}})
        yield Finding(
            "model",
            f"model {model!r} is not deployed: no deploy_model before this instruction deploys it, "
            f"and the model server does not hold it; add {deploy_it} before it",
        )


def _ask(check: Preflight, question: Any) -> Any:
    """`question(server)`'s answer; None when there is no server to ask, or it does not answer as it should (then
    it is not asked again for this pipeline)."""
    server = _server(check)
    if server is None:
        return None
    try:
        return question(server)
    except (OperationError, ValueError):  # no answer in time, or not the answer of a model server
        check.cache["model-server"] = None
        return None


def _server(check: Preflight) -> ModelServer | None:
    def connect() -> ModelServer | None:
        connection = getattr(check.resources, "model_server", None)
        if connection is None:
            return None
        brief = connection.model_copy(update={"timeout_s": PREFLIGHT_TIMEOUT_S, "retry_attempts": 1})
        return brief.connect()

    return check.once("model-server", connect, close=lambda server: server.close())
