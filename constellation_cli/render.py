"""What the command line shows: the gateway's answers as short lines and tables (no I/O here)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from rich import box
from rich.table import Table
from rich.text import Text

FINAL_STATES = frozenset({"SUCCESS", "FAILURE", "CANCELED"})


def output_summary(output: Any, width: int = 60) -> str:
    """A dataset as its type and size ("FileList: 6 items"); any other JSON, shortened to `width`."""
    if isinstance(output, Mapping) and isinstance(output.get("type"), str):
        parts = [output["type"]]
        facts = []
        if isinstance(output.get("written"), str):  # an export: rows and files, as it counted them
            facts.append(output["written"])
        elif isinstance(output.get("count"), int):
            facts.append(f"{output['count']} {'rows' if output['type'] == 'Table' else 'items'}")
        if isinstance(output.get("columns"), list):
            facts.append(f"{len(output['columns'])} columns")
        if isinstance(output.get("models"), list | dict):
            facts.append(f"{len(output['models'])} models")
        if facts:
            parts.append(": " + ", ".join(facts))
        for key, word in (("model", "by"), ("destination", "to")):
            if isinstance(output.get(key), str):
                parts.append(f" {word} {output[key]}")
        return "".join(parts)
    return shorten(json.dumps(output, ensure_ascii=False), width)


def shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def problem_lines(errors: Iterable[Mapping[str, Any]]) -> list[str]:
    """One `path: message` line per problem the gateway found."""
    return [f"{e.get('path') or '/'}: {e.get('message', '')}" for e in errors]


def results_table(results: Iterable[Mapping[str, Any]]) -> Table:
    table = _table("path", "operation", "output")
    for item in results:
        if "output" not in item and item.get("state"):  # a run that failed: this one made nothing
            style = "red" if item["state"] == "failed" else ""
            shown = Text(f"{item['state']}: {item.get('error') or ''}", style=style)
        else:
            shown = Text(output_summary(item.get("output")))
        table.add_row(Text(str(item.get("path", ""))), Text(str(item.get("operation", ""))), shown)
    return table


# Per model: the columns a comparison table shows, when the report has them (with their intervals).
COMPARISON_COLUMNS = (
    ("accuracy", "accuracy"),
    ("macro_f1", "macro-F1"),
    ("rmse", "RMSE"),
    ("mae", "MAE"),
    ("r2", "R²"),
    ("map", "mAP"),
    ("map_50", "mAP@.5"),
    ("miou", "mIoU"),
    ("pixel_accuracy", "pixel acc."),
    ("throughput_per_s", "inputs/s"),
    ("latency_p50_ms", "p50 ms"),
    ("latency_p95_ms", "p95 ms"),
)


def comparison_tables(output: Mapping[str, Any]) -> list[Table | str]:
    """A comparison as the verdict, a metrics table (value [low, high]) and a table of model pairs."""
    models = [m for m in output.get("models", []) if isinstance(m, Mapping)]
    shown = [(key, title) for key, title in COMPARISON_COLUMNS if any(m.get(key) is not None for m in models)]
    metrics = _table("model", *(title for _, title in shown))
    for m in models:
        metrics.add_row(Text(str(m.get("model", ""))), *(Text(_with_interval(m, key)) for key, _ in shown))
    parts: list[Table | str] = [metrics]
    failed = [f for f in output.get("failed_models") or [] if isinstance(f, Mapping)]
    if failed:  # models that did not load or run: compared without them, and the run failed
        left_out = _table("failed model", "error", wrapping=2)
        for f in failed:
            left_out.add_row(Text(str(f.get("model", "")), style="red"), Text(str(f.get("error", ""))))
        parts.append(left_out)
    pairs = [p for p in output.get("pairs", []) if isinstance(p, Mapping)]
    if pairs:
        pair_columns = [
            k for k in ("agreement", "kappa", "mcnemar_p", "p_value") if any(p.get(k) is not None for p in pairs)
        ]
        table = _table("models", *pair_columns)
        for p in pairs:
            table.add_row(
                Text(" vs ".join(map(str, p.get("models", [])))), *(Text(_number(p.get(k))) for k in pair_columns)
            )
        parts.append(table)
    if output.get("verdict"):
        parts.append(str(output["verdict"]))
    return parts


def _with_interval(model: Mapping[str, Any], key: str) -> str:
    value, interval = model.get(key), model.get(f"{key}_ci")
    text = _number(value)
    if isinstance(interval, list) and len(interval) == 2 and all(isinstance(x, int | float) for x in interval):
        text += f" [{interval[0]:.3f}, {interval[1]:.3f}]"
    return text


def _number(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return "–"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value and abs(value) < 0.001:
            return f"{value:.3g}"
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"
    return str(value)


def instructions_table(instructions: Iterable[Mapping[str, Any]]) -> Table:
    """A run's instructions: where, what, how far, how long, and what came out (or went wrong)."""
    table = _table("path", "operation", "state", "time", "output or error")
    for entry in instructions:
        detail = entry.get("error") or entry.get("summary") or ""
        style = {"failed": "red", "reused": "cyan"}.get(str(entry.get("state")), "")
        table.add_row(
            Text(str(entry.get("path", ""))),
            Text(str(entry.get("operation", ""))),
            Text(str(entry.get("state", "")), style=style),
            Text(seconds(entry.get("duration_s"))),
            Text(str(detail), style=style),
        )
    return table


def runs_table(listed: Iterable[Mapping[str, Any]]) -> Table:
    """Runs, newest first: id, state, when, how long, what they ran, and why they failed."""
    table = _table("run", "status", "created", "time", "instructions", "error", wrapping=2)
    for run in listed:
        error = run.get("error") or {}
        where = f"{error.get('path')}: " if error.get("path") else ""
        style = {"FAILURE": "red", "CANCELED": "yellow"}.get(str(run.get("run_status")), "")
        table.add_row(
            Text(str(run.get("run_id", ""))),
            Text(str(run.get("run_status", "")), style=style),
            Text(clock(run["created_at"]) if run.get("created_at") else ""),
            Text(seconds(run.get("duration_s"))),
            Text(operations_line(run.get("operations") or [])),
            Text(f"{where}{error['message']}" if error.get("message") else "", style=style),
        )
    return table


def operations_line(operations: Iterable[Any]) -> str:
    """Top-level operations, repeats counted: `deploy_model ×2, compare_models`."""
    counted: list[list[Any]] = []
    for name in operations:
        if counted and counted[-1][0] == name:
            counted[-1][1] += 1
        else:
            counted.append([name, 1])
    return ", ".join(f"{name} ×{count}" if count > 1 else str(name) for name, count in counted)


def run_lines(run: Mapping[str, Any]) -> list[str]:
    """A run's status, progress and timings, one fact a line."""
    lines = [
        f"run       {run.get('run_id', '')}",
        f"status    {run.get('run_status', '')}",
        f"progress  {run.get('done', 0)}/{run.get('total', 0)} instructions",
    ]
    for key in ("created_at", "started_at", "ended_at"):
        if run.get(key):
            lines.append(f"{key.removesuffix('_at'):<9} {clock(run[key])}")
    if run.get("duration_s") is not None:
        lines.append(f"duration  {seconds(run['duration_s'])}")
    if run.get("run_url"):
        lines.append(f"dagster   {run['run_url']}")
    return lines


def error_line(run: Mapping[str, Any]) -> str:
    """Why a run did not succeed: the failing instruction's path and message, when known."""
    error = run.get("error") or {}
    where = f"{error['operation']} at {error['path']}: " if error.get("path") and error.get("operation") else ""
    where = where or (f"{error['path']}: " if error.get("path") else "")
    message = error.get("message", "no error recorded")
    return f"run {run.get('run_id', '')} {run.get('run_status', '')}: {where}{message}"


def reuse_line(run: Mapping[str, Any], parent_run_id: str) -> str:
    """How much of a resumed run came from its parent: `2 of 3 instructions reused from run <parent>`."""
    entries = run.get("instructions") or []
    reused = sum(1 for e in entries if e.get("state") == "reused")
    return f"{reused} of {len(entries)} instruction{'' if len(entries) == 1 else 's'} reused from run {parent_run_id}"


def progress_caption(run: Mapping[str, Any]) -> str:
    """The run's state and the instructions running now, e.g. `STARTED resize_image /instructions/0`."""
    running = [e for e in run.get("instructions", []) if e.get("state") == "running"]
    now = " ".join(f"{e.get('operation')} {e.get('path')}" for e in running[:1])
    more = f" (+{len(running) - 1} more)" if len(running) > 1 else ""
    return f"{run.get('run_status', '')} {now}{more}".strip()


def operations_table(operations: Iterable[Mapping[str, Any]]) -> Table:
    table = _table("operation", "output", "description")
    for op in operations:
        table.add_row(
            Text(str(op.get("name", ""))), Text(str(op.get("output", ""))), Text(str(op.get("description", "")))
        )
    return table


def parameters_table(operation: Mapping[str, Any]) -> Table:
    table = _table("parameter", "type", "required", "description", wrapping=3)
    for p in operation.get("parameters", []):
        required = "yes" if p.get("required") else f"no (default {json.dumps(p.get('default'))})"
        table.add_row(
            Text(str(p.get("name", ""))), Text(parameter_type(p)), Text(required), Text(str(p.get("description", "")))
        )
    return table


def parameter_type(parameter: Mapping[str, Any]) -> str:
    """What a parameter takes: the outputs it accepts from instructions, or its JSON Schema, read short."""
    accepts = parameter.get("accepts") or []
    kind = " or ".join(accepts) if accepts else literal_type(parameter.get("schema") or {})
    return f"list of {kind}" if parameter.get("many") else kind


def literal_type(schema: Mapping[str, Any]) -> str:
    if "anyOf" in schema:
        return " or ".join(literal_type(option) for option in schema["anyOf"])
    if "enum" in schema:
        return "one of " + ", ".join(json.dumps(v) for v in schema["enum"])
    if schema.get("type") == "array" and "items" in schema:
        return f"list of {literal_type(schema['items'])}"
    bounds = [f"{word} {schema[key]}" for key, word in (("minimum", "≥"), ("maximum", "≤")) if key in schema]
    return " ".join([str(schema.get("type", "JSON")), *bounds])


def seconds(value: Any) -> str:
    return f"{value:.2f} s" if isinstance(value, int | float) else ""


def clock(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")


def _table(*columns: str, wrapping: int = 1) -> Table:
    """A table whose last `wrapping` columns wrap; the others (paths, names) stay on one line."""
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for index, column in enumerate(columns):
        wraps = index >= len(columns) - wrapping
        table.add_column(column, overflow="fold", no_wrap=not wraps, min_width=16 if wraps else None)
    return table


def leaderboard_lines(board: Mapping[str, Any]) -> list[str]:
    """What a leaderboard ranks by, on which data, and whether the data changed."""
    better = "higher" if board.get("higher_is_better") else "lower"
    lines = [
        f"{board.get('dataset')}: ranked by {board.get('metric')} ({better} is better) on data "
        f"{board.get('fingerprint')}"
    ]
    versions = board.get("fingerprints") or []
    if board.get("data_changed"):
        lines.append(
            f"the data changed: {len(versions)} fingerprints; rows marked 'other data' were compared on "
            "another version and are not comparable with the rest"
        )
    return lines


def leaderboard_table(rows: Iterable[Mapping[str, Any]]) -> Table:
    """Models best first: value [low, high], when, which run, and whether on the same data."""
    table = _table("#", "model", "value [95 % interval]", "data", "compared", "run", wrapping=1)
    for number, row in enumerate(rows, start=1):
        same = bool(row.get("same_data"))
        table.add_row(
            Text(str(number)),
            Text(str(row.get("model", ""))),
            Text(_with_interval({"v": row.get("value"), "v_ci": row.get("ci")}, "v")),
            Text("same" if same else "other data", style="" if same else "yellow"),
            Text(str(row.get("compared_at", ""))[:19].replace("T", " ")),
            Text(str(row.get("run_id", ""))),
        )
    return table
