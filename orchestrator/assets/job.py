"""The job `build_execute_job`: validate the instruction list, then run it with the engine."""
# No `from __future__ import annotations` here: Dagster reads these type hints at runtime.

import base64
import logging
import os
import threading
from collections.abc import Mapping
from typing import Any

from dagster import (
    Array,
    ConfigurableResource,
    Enum,
    EnumValue,
    Failure,
    Field,
    In,
    MetadataValue,
    OpExecutionContext,
    Out,
    Output,
    Permissive,
    in_process_executor,
    job,
    op,
)

from orchestrator import contract, runs, runstore
from orchestrator.assets import lineage
from orchestrator.assets.checked_config import CheckedInstructions
from orchestrator.assets.resources import OpResources, Workspace, server_setting
from orchestrator.contract import OUTPUT_EVENTS, NodeEventKind, ResultState
from orchestrator.datasets import Comparison
from orchestrator.engine import (
    Catalog,
    InstructionFailed,
    NodeEvent,
    PipelineInvalid,
    Plan,
    RunContext,
    build_plan,
    execute,
    plan_launch,
)
from orchestrator.engine.execute import summarize
from orchestrator.engine.redact import Redactor, redactor

CATALOG_METADATA_KEY = contract.CATALOG_METADATA_KEY
log = logging.getLogger("constellation")


def instructions_config(catalog: Catalog, resources: Mapping[str, ConfigurableResource] | None = None) -> Field:
    """The launchpad's schema for `raw_input`: op names are a menu, parameters free-form. With the server's
    `resources`, the code server also checks a launch's pipeline against them (CheckedInstructions)."""
    operation = Enum(
        "Operation",
        [EnumValue(name, description=catalog[name].description) for name in catalog.names()],
    )
    instruction = Permissive(
        {
            "operation": Field(operation, description="the operation to run"),
            "parameters": Field(Permissive(), is_required=False, description="its parameters"),
        }
    )
    return Field(
        Array(instruction) if resources is None else CheckedInstructions(instruction, catalog, resources),
        description="The pipeline: a list of instructions, exactly as POST /execute takes it.",
    )


def make_execute_job(catalog: Catalog, resources: Mapping[str, ConfigurableResource]):
    """Build `build_execute_job` for the operations in `catalog`.

    `resources` (at least `workspace`) reach every op as `ctx.resources.<key>`, with the values they
    have here: run config for them is refused (`server_setting`).
    """
    # The plan the first op checked, handed to the second in the same process (in_process_executor) instead
    # of being built again. Between the ops Dagster passes the instruction list itself, as its IO manager
    # stores it (JSON values, kept for a re-execution of the second op alone, which plans it again).
    checked_plans: dict[str, Plan] = {}

    @op(
        name=contract.CONFIG_OP,
        config_schema={contract.CONFIG_FIELD: instructions_config(catalog, resources)},
        out=Out(list),
    )
    def generate_dynamic_job_configs(context: OpExecutionContext) -> list:
        """Check the submitted instructions against the catalog; fail listing every problem."""
        raw = context.op_config[contract.CONFIG_FIELD]
        try:
            # The gateway's parser and checks, so the launchpad gets the same limits and errors; the plan the
            # config's post-processing made of this list a moment ago in this process, if it did.
            plan = plan_launch(raw, catalog)
        except PipelineInvalid as invalid:
            lines = "\n".join(f"- `{p.path}`: {p.message}" for p in invalid.problems)
            raise Failure(
                description=f"invalid pipeline:\n{lines}",
                metadata={"errors": MetadataValue.json([p.to_json() for p in invalid.problems])},
            ) from None
        context.log.info(f"pipeline of {len(plan.roots)} instructions, {len(plan)} to run after sharing")
        checked_plans[context.run_id] = plan
        return raw

    @op(ins={"instructions": In(list)}, out=Out(dict), required_resource_keys=set(resources))
    def parse_and_execute_job(context: OpExecutionContext, instructions: list):
        """Resolve the instruction tree and run it; persist per-instruction progress and results."""
        plan = checked_plans.pop(context.run_id, None)  # None: a re-execution of this op alone
        if plan is None:
            plan = build_plan(instructions, catalog)
        workspace: Workspace = context.resources.workspace
        # The run's folder: in the artifact root, or a scratch folder whose files go to s3://... as they are made.
        folder = runs.RunFolder.open(workspace.run_store(), context.run_id)
        try:
            yield from _run_plan(context, plan, folder, instructions)
        finally:
            folder.close()  # waits for the uploads started, removes a scratch folder

    def _run_plan(context: OpExecutionContext, plan, folder: runs.RunFolder, instructions: list):
        progress = runs.ProgressLog(folder, plan)
        kept = _kept_outputs(context, folder)
        log_lock = threading.Lock()
        # Sources read, destinations written and comparisons made, for Dagster's asset catalog. They
        # are yielded by this op (not logged from the engine's threads), so each is recorded once.
        catalog_events: list = []
        # What each top-level instruction produced, as it finishes: a failed run's results still show it.
        root_outputs: dict[int, Any] = {}
        # Top-level instructions that failed: the run may have gone on after one (a model that did not deploy).
        root_failures: dict[int, str] = {}
        root_ids = {id(root) for root in plan.roots}
        roots_by_path = {root.path: root for root in plan.roots}

        def on_event(event: NodeEvent) -> None:
            kept.track(event)  # the files a starting instruction takes; a finished one's node folder stored
            progress.record(event)
            with log_lock:
                context.log.info(_describe_event(event))
                if event.kind in OUTPUT_EVENTS:
                    catalog_events.extend(lineage.asset_events(catalog, event.node, event.output, context.run_id))
                    if id(event.node) in root_ids:
                        root_outputs[id(event.node)] = event.output
                elif event.kind == NodeEventKind.FAILED:
                    # Said by the top-level instruction it belongs to: its own failure, else the first inside it.
                    root = roots_by_path.get("/".join(event.node.path.split("/")[:3]))
                    if root is not None and (root is event.node or id(root) not in root_failures):
                        root_failures[id(root)] = runs.clip(
                            f"{event.node.operation} at {event.node.path} failed: {event.error}"
                        )

        op_resources = OpResources(**{key: getattr(context.resources, key) for key in resources})
        run_context = RunContext(
            run_dir=folder.path,
            resources=op_resources,
            log=context.log,
            redact=_server_folders_hidden(context.resources.workspace, folder),
            pipeline=instructions,
        )
        try:
            try:
                outputs = execute(plan, catalog, run_context, on_event, reuse=kept)
            except InstructionFailed as failed:
                progress.fail(failed)
                _write_partial_results(folder, kept, plan, root_outputs, runs.clip(str(failed)), root_failures)
                yield from catalog_events  # what was read before the failure is still worth knowing
                failure_metadata: dict[str, Any] = {
                    "path": failed.path,
                    "operation": failed.operation,
                    "message": runs.clip(failed.message),  # as progress.json says it (the gateway's fallback)
                }
                for root in plan.roots:  # a comparison made without a model that failed shows as on success
                    compared = root_outputs.get(id(root))
                    if isinstance(compared, Comparison):
                        failure_metadata.update(_comparison_metadata(f"{root.operation} {root.path}", compared))
                raise Failure(description=runs.clip(str(failed)), metadata=failure_metadata) from None
            except BaseException:  # cancelled (Dagster interrupts the op): what finished before stays readable
                _write_partial_results(folder, kept, plan, root_outputs, "the run was cancelled while it ran")
                raise
            yield from catalog_events
            for root in plan.roots:
                kept.fetch(root)  # a reused result shows its files (a table's preview, a chart)
            results = [
                {"path": root.path, "operation": root.operation, "output": _to_result(output)}
                for root, output in zip(plan.roots, outputs, strict=True)
            ]
            table = "\n".join(
                f"| `{root.path}` | {root.operation} | {summarize(output)} |"
                for root, output in zip(plan.roots, outputs, strict=True)
            )
            metadata = {
                "results": MetadataValue.path(folder.location(runs.RESULTS)),
                "outputs": MetadataValue.md("| path | operation | output |\n|---|---|---|\n" + table),
            }
            # Comparisons show on the run page itself: verdict, metrics table, and the chart inline.
            for root, output in zip(plan.roots, outputs, strict=True):
                if isinstance(output, Comparison):
                    where = f"{root.operation} {root.path}"
                    metadata.update(_comparison_metadata(where, output))
                    context.log.info(f"{where}: {output.report.get('verdict', '')}\n{output.markdown}")
            folder.sync()  # every file the results name is stored before the results say so
            folder.write_json(runs.RESULTS, {"results": folder.public(results)})
        finally:
            progress.close()  # the final state, exactly
        yield Output({"results": folder.location(runs.RESULTS), "count": len(results)}, metadata=metadata)

    @job(
        executor_def=in_process_executor,
        # Fixed from the server's environment: a launch with resource config is refused.
        resource_defs={key: server_setting(resource) for key, resource in resources.items()},
        metadata={CATALOG_METADATA_KEY: MetadataValue.json(catalog.to_json())},
        description="Run a Constellation pipeline (config: the instruction list as raw_input).",
    )
    def build_execute_job():
        parse_and_execute_job(generate_dynamic_job_configs())

    return build_execute_job


def _kept_outputs(context: OpExecutionContext, folder: runs.RunFolder) -> runs.KeptOutputs:
    """Outputs kept for a resumed run; a re-execution (retry, or the UI's from-failure) reads its parent's."""
    parent = context.run.parent_run_id
    if parent:
        context.log.info(f"resuming run {parent}: instructions it completed are reused, not run again")
    return runs.KeptOutputs(folder, parent if parent and runs.is_run_id(parent) else None)


def _server_folders_hidden(workspace: Workspace, folder: runs.RunFolder) -> Redactor:
    """What failure messages say instead of the server's folders: names relative to them (engine/redact.py)."""
    folders: list[tuple[str | os.PathLike[str] | None, str]] = [
        (workspace.data_root, "the data root"),
        (workspace.output_root, "the output root"),
        (os.environ.get("DAGSTER_HOME"), "DAGSTER_HOME"),
    ]
    if not runstore.is_store_url(workspace.artifact_root):
        folders.append((workspace.artifact_root, "the artifact root"))
    if folder.scratch is not None:  # an s3:// artifact root: the run works in a scratch folder
        folders.append((folder.scratch, "the run's scratch folder"))
    return redactor(folders)


def _write_partial_results(
    folder: runs.RunFolder,
    kept: runs.KeptOutputs,
    plan,
    root_outputs: dict[int, Any],
    why: str,
    root_failures: dict[int, str] | None = None,
) -> None:
    """results.json of a run that did not succeed: each top-level instruction's output where it finished;
    where it did not, {"state": "failed", "error"} for the one that was running and {"state": "not run", "error"}
    for those after it. A run that went on after a failure (`root_failures`: a model that did not deploy) shows
    that failure where it happened, and what finished after it. A run that succeeds writes no state (its
    document is unchanged)."""
    results: list[dict[str, Any]] = []
    stopped_at = None
    for root in plan.roots:
        entry: dict[str, Any] = {"path": root.path, "operation": root.operation}
        if id(root) in root_outputs and stopped_at is None:
            kept.fetch(root)  # a reused result shows its files
            entry["output"] = _to_result(root_outputs[id(root)])
        elif root_failures and id(root) in root_failures and stopped_at is None:
            entry.update(state=ResultState.FAILED, error=root_failures[id(root)])
            if not any(id(later) in root_outputs or id(later) in root_failures for later in _after(plan, root)):
                stopped_at = root  # nothing ran after it: it stopped the run
        elif stopped_at is None:
            stopped_at = root
            entry.update(state=ResultState.FAILED, error=why)
        else:
            entry.update(
                state=ResultState.NOT_RUN,
                error=f"not run: {stopped_at.operation} at {stopped_at.path} stopped the run before it",
            )
        results.append(entry)
    try:
        folder.sync()  # every file the results name is stored before the results say so
        folder.write_json(runs.RESULTS, {"results": folder.public(results)})
    except Exception as exc:  # never hide why the run failed; GET /runs/{id} still says it
        log.warning(f"could not write the results of the instructions that finished: {exc}")


def _after(plan, root) -> list:
    """The top-level instructions after `root`."""
    return plan.roots[plan.roots.index(root) + 1 :]


def _comparison_metadata(where: str, comparison: Comparison) -> dict[str, Any]:
    """The verdict as text, the metrics as a table, and the report with its chart as Markdown."""
    metadata: dict[str, Any] = {f"{where} verdict": MetadataValue.text(str(comparison.report.get("verdict", "")))}
    chart = comparison.chart
    picture = ""
    if chart is not None and chart.is_file():
        # The webserver's Markdown allows data: images, so the chart needs no file server.
        picture = f"\n\n![comparison chart](data:image/png;base64,{base64.b64encode(chart.read_bytes()).decode()})"
    metadata[where] = MetadataValue.md(comparison.markdown + picture)
    rows = lineage.metrics_table(comparison.report)
    if rows:
        metadata[f"{where} metrics"] = MetadataValue.table(rows)
    return metadata


def _describe_event(event: NodeEvent) -> str:
    node = event.node
    where = node.path if len(node.paths) == 1 else f"{node.path} (+{len(node.paths) - 1} shared)"
    if event.kind == NodeEventKind.STARTED:
        return f"{where} {node.operation} started"
    if event.kind == NodeEventKind.FINISHED:
        return f"{where} {node.operation} finished in {event.duration_s:.3f} s: {event.summary}"
    if event.kind == NodeEventKind.REUSED:
        return f"{where} {node.operation} reused from the parent run: {event.summary}"
    return f"{where} {node.operation} failed after {event.duration_s:.3f} s: {runs.clip(event.error)}"


def _to_result(output: Any) -> Any:
    to_result = getattr(output, "to_result", None)
    return to_result() if callable(to_result) else output
