"""The instruction language: parse, validate, plan and execute pipelines.

Plain Python: nothing here imports Dagster or FastAPI, so the gateway, the code location
and the tests all share one implementation.
"""

from __future__ import annotations

from orchestrator.engine.catalog import (
    AssetName,
    Catalog,
    DataType,
    Failed,
    Operation,
    RunContext,
    needs,
    never_reused,
    operation,
    provides,
    reads_from,
    writes_to,
)
from orchestrator.engine.errors import (
    InstructionFailed,
    OperationError,
    PipelineInvalid,
    Problem,
)
from orchestrator.engine.execute import NodeEvent, Reuse, coerce, execute
from orchestrator.engine.parse import Limits, parse_request
from orchestrator.engine.plan import Node, Plan, build_plan, plan_launch

__all__ = [
    "AssetName",
    "Catalog",
    "DataType",
    "Failed",
    "InstructionFailed",
    "Limits",
    "Node",
    "NodeEvent",
    "Operation",
    "OperationError",
    "PipelineInvalid",
    "Reuse",
    "Plan",
    "Problem",
    "RunContext",
    "build_plan",
    "coerce",
    "execute",
    "needs",
    "never_reused",
    "operation",
    "parse_request",
    "plan_launch",
    "provides",
    "reads_from",
    "writes_to",
]
