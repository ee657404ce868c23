"""What the `constellation` command shows for the gateway's answers: summaries, captions, tables."""

from __future__ import annotations

import io

from rich.console import Console

from constellation_cli import render


def rendered(table) -> list[str]:
    console = Console(width=120, record=True, file=io.StringIO())
    console.print(table)
    return [line.rstrip() for line in console.export_text().splitlines()]


def test_a_dataset_is_summarised_by_type_and_size():
    files = {"type": "FileList", "count": 12, "files": [{"name": f"{i}.jpg", "uri": "file:///x"} for i in range(12)]}
    assert render.output_summary(files) == "FileList: 12 items"
    assert render.output_summary({"type": "Table", "count": 5, "columns": ["a", "b"]}) == "Table: 5 rows, 2 columns"
    exported = {"type": "Exported", "destination": "s3://bucket/runs/1", "count": 3, "items": []}
    assert render.output_summary(exported) == "Exported: 3 items to s3://bucket/runs/1"  # as older runs answer
    rows = {
        "type": "Exported",
        "destination": "database:maria/t",
        "count": 1,
        "rows": 121,
        "files": 0,
        "written": "121 rows",
        "items": [{"table": "t", "rows": 121}],
    }
    assert render.output_summary(rows) == "Exported: 121 rows to database:maria/t"
    predictions = {"type": "Predictions", "model": "org/m", "count": 4}
    assert render.output_summary(predictions) == "Predictions: 4 items by org/m"


def test_other_json_is_shortened():
    assert render.output_summary({"model": "org/m", "state": "ready"}) == '{"model": "org/m", "state": "ready"}'
    long = render.output_summary(list(range(100)), width=20)
    assert len(long) == 20 and long.endswith("…") and long.startswith("[0, 1, 2")


def test_parameter_types_read_like_the_readme():
    assert render.parameter_type({"accepts": ["FileList", "FileDict"], "schema": {}}) == "FileList or FileDict"
    assert render.parameter_type({"accepts": ["Predictions"], "many": True}) == "list of Predictions"
    width = {"schema": {"type": "integer", "minimum": 1, "maximum": 16384}}
    assert render.parameter_type(width) == "integer ≥ 1 ≤ 16384"
    choice = {"schema": {"anyOf": [{"enum": ["JPEG", "PNG"]}, {"type": "null"}]}}
    assert render.parameter_type(choice) == 'one of "JPEG", "PNG" or null'
    assert render.parameter_type({"schema": {"type": "array", "items": {"type": "number"}}}) == "list of number"


def test_the_caption_names_what_is_running():
    run = {
        "run_status": "STARTED",
        "instructions": [
            {"path": "/instructions/0", "operation": "resize_image", "state": "pending"},
            {"path": "/instructions/0/parameters/data", "operation": "import_from_url", "state": "running"},
            {"path": "/instructions/1/parameters/data", "operation": "import_from_s3", "state": "running"},
        ],
    }
    assert render.progress_caption(run) == "STARTED import_from_url /instructions/0/parameters/data (+1 more)"
    assert render.progress_caption({"run_status": "QUEUED", "instructions": []}) == "QUEUED"


def test_a_failure_names_the_instruction_and_its_path():
    run = {
        "run_id": "r1",
        "run_status": "FAILURE",
        "error": {
            "path": "/instructions/0/parameters/data",
            "operation": "import_from_local",
            "message": "no such folder",
        },
    }
    assert render.error_line(run) == (
        "run r1 FAILURE: import_from_local at /instructions/0/parameters/data: no such folder"
    )
    assert render.error_line({"run_id": "r2", "run_status": "CANCELED", "error": None}) == (
        "run r2 CANCELED: no error recorded"
    )
    problems = [{"path": "/instructions/0/operation", "message": "unknown operation 'x'"}, {"path": "", "message": "m"}]
    assert render.problem_lines(problems) == ["/instructions/0/operation: unknown operation 'x'", "/: m"]


def test_tables_keep_paths_on_one_line_and_never_read_markup():
    long_error = "a [bold]message[/bold] " + "that goes on " * 12
    lines = rendered(
        render.instructions_table(
            [
                {
                    "path": "/instructions/0/parameters/data/parameters/data",
                    "operation": "import_from_local",
                    "state": "failed",
                    "duration_s": 0.0123,
                    "error": long_error,
                },
            ]
        )
    )
    assert lines[0].split() == ["path", "operation", "state", "time", "output", "or", "error"]
    row = lines[2]
    assert row.split()[:4] == ["/instructions/0/parameters/data/parameters/data", "import_from_local", "failed", "0.01"]
    assert "[bold]message[/bold]" in row  # shown as typed, not styled away
    assert len(lines) > 3  # the long error wraps onto more lines, the path does not


def test_a_resumed_run_says_how_much_came_from_its_parent():
    run = {
        "instructions": [
            {"path": "/instructions/0", "operation": "import_from_local", "state": "reused"},
            {"path": "/instructions/1", "operation": "model_inference", "state": "succeeded"},
        ]
    }
    assert render.reuse_line(run, "p1") == "1 of 2 instructions reused from run p1"
    assert render.reuse_line({"instructions": []}, "p1") == "0 of 0 instructions reused from run p1"
    [row] = [line for line in rendered(render.instructions_table(run["instructions"])) if "import_from_local" in line]
    assert row.split()[:3] == ["/instructions/0", "import_from_local", "reused"]


def test_a_comparison_lists_the_models_that_failed_after_the_metrics():
    output = {
        "type": "Comparison",
        "models": [{"model": "fire-vit-a", "accuracy": 0.75, "accuracy_ci": [0.5, 0.9]}],
        "failed_models": [
            {"model": "fire-vit-b", "path": "/instructions/3/parameters/results/1", "error": "not run: it needs model"}
        ],
        "pairs": [],
        "verdict": "fire-vit-a is the only model. Not compared: 'fire-vit-b' failed to load or run.",
    }
    metrics, failed, verdict = render.comparison_tables(output)
    assert rendered(failed)[0].split() == ["failed", "model", "error"]
    assert rendered(failed)[-1].split() == ["fire-vit-b", "not", "run:", "it", "needs", "model"]
    assert verdict == output["verdict"]
    assert len(render.comparison_tables({**output, "failed_models": []})) == 2  # none failed: no such table
