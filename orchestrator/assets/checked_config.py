"""The instruction list as a Dagster config type whose validation runs the server's checks.

Dagster validates a launch's run config twice: the webserver against the job's config schema (types
only), then the code server, which builds the execution plan and post-processes every config value
on the way. A config type's `post_process` is Dagster's hook for checks that need the code location
(its docstring: "fetch things from the environment ... or do custom validation"; raising
PostProcessingError refuses the config). So `launchRun` and `executionPlanOrError`, from the gateway
or the launchpad, refuse a pipeline that orchestrator/preflight.py finds wrong before any run
exists; the refusal carries the problems as one marked line (orchestrator.engine.errors) that the
gateway reads back into JSON Pointers.

A run worker resolves its run's config again before the first op: the checks then run once more,
against the server as it is when the run starts. In the code server, a pipeline that passed is not checked
again for a few seconds (preflight.Passed): Dagster post-processes one launch several times.

The launchpad's own check as one types (GraphQL isPipelineConfigValid) cannot show these problems: the
webserver validates the config against the job's config schema snapshot only (dagster_graphql's
ensure_valid_config: validate_config_from_snap), and never asks the code server, so no config type's
code (post_process, a ScalarUnion, a Selector) runs there; a snapshot can only describe types. Only a
launch (launchRun, executionPlanOrError) builds the plan in the code server, where a refusal comes back as
a PythonError (DagsterUserCodeProcessError), not as RunConfigValidationInvalid. So its message names each
problem at its JSON Pointer, one a line (`refusal`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from dagster import Array
from dagster._config.errors import PostProcessingError  # the documented way for post_process to refuse a value

from orchestrator import preflight
from orchestrator.assets.resources import OpResources
from orchestrator.engine import Catalog, Problem
from orchestrator.engine.errors import problems_text


class CheckedInstructions(Array):
    """An array of instructions that, once Dagster has checked its shape, the server checks too."""

    def __init__(self, instruction: Any, catalog: Catalog, resources: Mapping[str, Any]):
        super().__init__(instruction)
        # Dagster shares config types of one key between jobs (a Shape is memoized by its fields' keys): a job
        # built with other settings (the tests build several) needs a key of its own. Derived from the settings,
        # it is the same in the code server and the run workers, whose job snapshots must agree.
        settings = json.dumps({key: _fields(value) for key, value in resources.items()}, sort_keys=True, default=str)
        self.key = f"{self.key}.checked-{hashlib.sha1(settings.encode()).hexdigest()[:16]}"
        self._catalog = catalog
        self._resources = OpResources(**resources)
        self._passed = preflight.Passed()  # Dagster post-processes one launch several times: checked once

    def post_process(self, value: Any) -> Any:
        problems = self._passed.check(value, self._catalog, self._resources)
        if problems:
            raise PostProcessingError(refusal(problems))
        return value


def refusal(problems: list[Problem]) -> str:
    """What a refused launch says: each problem on its own line at its JSON Pointer, for whoever reads it in the
    launchpad's error (its first words are Dagster's and its stack; it cannot show them as config errors, see
    the module's docstring), then the marked line the gateway reads them from."""
    shown = [f"  {p.path or '/'}: {' '.join(p.message.split())}" for p in problems]
    head = f"{len(problems)} problem{'s' if len(problems) > 1 else ''} with this pipeline"
    where = "each at its JSON Pointer, where /instructions/N is item N of raw_input"
    return "\n".join([f"{head}, {where}:", *shown, problems_text(problems)])


def _fields(resource: Any) -> Any:
    """A resource's settings, as values (a resource is a pydantic model of them)."""
    dump = getattr(resource, "model_dump", None)
    return dump() if callable(dump) else repr(resource)
