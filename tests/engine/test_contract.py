"""The run-state vocabularies of orchestrator/contract.py against Dagster's own, and their mappings."""

from __future__ import annotations

from dagster import DagsterRunStatus as DagstersStatus
from dagster._core.events import EVENT_TYPE_TO_PIPELINE_RUN_STATUS

from orchestrator import contract
from orchestrator.assets import notifications
from orchestrator.contract import DagsterRunStatus, InstructionState, NodeEventKind, RunChange


def test_run_statuses_are_dagsters():
    """A Dagster upgrade that adds a status fails here, not as a 500 of GET /runs/{id}."""
    assert {s.value for s in DagsterRunStatus} == {s.value for s in DagstersStatus}


def test_each_vocabulary_maps_whole():
    assert set(contract.STATE_OF_EVENT) == set(NodeEventKind)
    assert set(contract.STATE_OF_EVENT.values()) == set(InstructionState) - {InstructionState.PENDING}
    assert set(contract.CHANGE_OF_STATUS.values()) == set(RunChange) == set(contract.CHANGE_RANK)
    assert set(contract.DEFAULT_CALLBACK_WORDS) == set(RunChange)
    assert contract.FINAL_STATUSES >= contract.RESUMABLE_STATUSES


def test_callbacks_read_the_events_that_set_the_reported_statuses():
    for event_type, change in notifications.STATUS_EVENTS.items():
        assert contract.CHANGE_OF_STATUS[EVENT_TYPE_TO_PIPELINE_RUN_STATUS[event_type].value] is change
    assert set(notifications.STATUS_EVENTS.values()) == set(RunChange)


def test_values_are_the_json_words():
    """str enums: the JSON a client reads is the word it always was."""
    assert [str(s) for s in NodeEventKind] == ["started", "finished", "failed", "reused"]
    assert [str(s) for s in InstructionState] == ["pending", "running", "succeeded", "failed", "reused"]
    assert [str(s) for s in RunChange] == ["started", "success", "failure", "canceled"]
    assert dict(contract.DEFAULT_CALLBACK_WORDS) == {
        "started": "running",
        "success": "completed",
        "failure": "failed",
        "canceled": "failed",
    }


def test_the_model_tag_is_the_models_name_on_the_server():
    """The gateway's constellation/model tag and the model client name a model alike (contract.slug)."""
    from api.routes.pipelines import _concurrency_tags
    from orchestrator.assets.repository import CATALOG
    from orchestrator.engine import build_plan
    from orchestrator.models import client

    for model_id in ("org/model", "org--model", "a-/b"):
        plan = build_plan([{"operation": "delete_model", "parameters": {"model": model_id}}], CATALOG)
        assert _concurrency_tags(plan, None)[contract.Tags.MODEL] == client.slug(model_id) == contract.slug(model_id)
        assert contract.model_id_of(contract.slug(model_id)) == model_id


def test_our_model_server_serves_the_task_table():
    """The server ships without orchestrator/: its classes must answer to exactly the table's task names."""
    from model_server.tasks import ONNX_IMAGE_TASKS, TASKS
    from orchestrator.models import tasks

    assert set(TASKS) == set(tasks.NAMES)
    assert set(ONNX_IMAGE_TASKS) <= set(tasks.names(reads=tasks.Reads.IMAGES))
