"""math_block and mock_csv_data, the two ops of the original Agentic Earth system, run in process as a run runs them."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import pytest

from orchestrator.assets import ops
from orchestrator.assets.repository import CATALOG
from orchestrator.datasets import FileDict, Predictions, Table
from orchestrator.engine import InstructionFailed, OperationError, PipelineInvalid, RunContext, build_plan, execute
from orchestrator.transforms import arithmetic

ACCEPTED = "add, sub, mul, truediv, floordiv, mod, pow"


def table(folder: Path, rows: list[dict]) -> Table:
    path = folder / "input.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return Table(path, list(rows[0]), len(rows))


def mock() -> dict:
    return {"operation": "mock_csv_data", "parameters": {}}


def math(data: dict, operand: object, constant: object) -> dict:
    return {"operation": "math_block", "parameters": {"data": data, "operand": operand, "constant": constant}}


def run(ctx: RunContext, *instructions: dict) -> list:
    return execute(build_plan(list(instructions), CATALOG), CATALOG, ctx)


def test_mock_csv_data_is_the_originals_table(ctx):
    made = ops.mock_csv_data(ctx)
    assert made.columns == ["column1", "column2", "column3"] and made.count == 3
    assert list(made.rows()) == [
        {"column1": 1, "column2": 2, "column3": 3},
        {"column1": 4, "column2": 5, "column3": 6},
        {"column1": 7, "column2": 8, "column3": 9},
    ]


@pytest.mark.parametrize(
    ("operand", "first_row"),
    [
        ("add", [3.0, 4.0, 5.0]),
        ("sub", [-1.0, 0.0, 1.0]),
        ("mul", [2.0, 4.0, 6.0]),
        ("truediv", [0.5, 1.0, 1.5]),
        ("floordiv", [0.0, 1.0, 1.0]),
        ("mod", [1.0, 0.0, 1.0]),
        ("pow", [1.0, 4.0, 9.0]),
    ],
)
def test_every_operator_on_the_mock_table_gives_floats(ctx, operand, first_row):
    [result] = run(ctx, math(mock(), operand, 2))
    rows = list(result.rows())
    assert result.columns == ["column1", "column2", "column3"] and result.count == len(rows) == 3
    assert list(rows[0].values()) == first_row
    assert all(type(value) is float for row in rows for value in row.values())


def test_the_originals_own_example_adds_ten_to_every_cell(ctx, tmp_path):
    # The original's op test: DataFrame {"A": [1, 2], "B": [3, 4]}, operand "add", constant 10.0.
    result = ops.math_block(ctx, table(tmp_path, [{"A": 1, "B": 3}, {"A": 2, "B": 4}]), "add", 10.0)
    assert list(result.rows()) == [{"A": 11.0, "B": 13.0}, {"A": 12.0, "B": 14.0}]


def test_values_that_are_not_numbers_are_kept_as_they_are(ctx, tmp_path):
    rows = [
        {"name": "a", "x": 1.5, "flag": True, "missing": None, "tags": [1, 2], "meta": {"n": 3}, "text": "12"},
        {"name": "b", "x": -2, "flag": False, "missing": 4, "tags": [], "meta": {}, "text": ""},
    ]
    result = ops.math_block(ctx, table(tmp_path, rows), "mul", 3)
    assert list(result.rows()) == [
        {"name": "a", "x": 4.5, "flag": True, "missing": None, "tags": [1, 2], "meta": {"n": 3}, "text": "12"},
        {"name": "b", "x": -6.0, "flag": False, "missing": 12.0, "tags": [], "meta": {}, "text": ""},
    ]
    assert result.columns == list(rows[0])


REFUSED = [
    "attrgetter",
    "methodcaller",
    "itemgetter",
    "__import__",
    "getattr",
    "setitem",
    "delitem",
    "call",
    "__add__",
    "iadd",
    "lshift",
    "and_",
    "neg",
    "contains",
    "ADD",
    "add ",
    "",
]


@pytest.mark.parametrize("name", REFUSED)
def test_other_names_are_refused_before_launch_with_the_accepted_ones(name):
    with pytest.raises(PipelineInvalid) as refused:
        build_plan([math(mock(), name, 1)], CATALOG)
    [problem] = refused.value.problems
    assert problem.path == "/instructions/0/parameters/operand"
    for accepted in ACCEPTED.split(", "):
        assert repr(accepted) in problem.message


@pytest.mark.parametrize("name", [*REFUSED, None, 3, ["add"]])
def test_other_names_are_refused_at_run_time_too(ctx, tmp_path, name):
    # A caller that skips the catalog's validation (the op called directly) reaches no other function.
    data = table(tmp_path, [{"x": 1}])
    with pytest.raises(OperationError, match=f"is not an arithmetic operator; use one of {ACCEPTED}$"):
        ops.math_block(ctx, data, name, 1)
    with pytest.raises(OperationError, match="is not an arithmetic operator"):
        arithmetic.apply(5, name, 1, "row 0, column 'x'")


def test_a_constant_that_is_not_a_finite_number_is_refused(ctx):
    with pytest.raises(PipelineInvalid, match="constant"):
        build_plan([math(mock(), "add", "ten")], CATALOG)
    with pytest.raises(InstructionFailed, match="parameter 'constant': Input should be a finite number"):
        run(ctx, math(mock(), "add", float("inf")))


@pytest.mark.parametrize("operand", ["truediv", "floordiv", "mod"])
def test_division_by_zero_names_the_row_and_column(ctx, tmp_path, operand):
    rows = [{"name": "a", "x": 1.0, "y": "text"}, {"name": "b", "x": 2.0, "y": 5}]
    with pytest.raises(OperationError, match=r"^row 0, column 'x': 1\.0 " + operand + r" 0\.0 divides by zero$"):
        ops.math_block(ctx, table(tmp_path, rows), operand, 0)


@pytest.mark.parametrize(
    ("operand", "constant", "value", "expected"),
    [
        ("mul", 10, 1e308, r"1e\+308 mul 10\.0 gives inf, beyond the largest float"),
        ("add", 1e308, 1e308, r"1e\+308 add 1e\+308 gives inf, beyond the largest float"),
        ("sub", 1e308, -1e308, r"-1e\+308 sub 1e\+308 gives -inf, beyond the largest float"),
        ("truediv", 1e-300, 1e100, r"1e\+100 truediv 1e-300 gives inf, beyond the largest float"),
        ("pow", 2, 1e200, r"1e\+200 pow 2\.0 would be about 10\^400, beyond the largest float"),
        ("pow", 400, 10, r"10\.0 pow 400\.0 would be about 10\^400, beyond the largest float"),
        ("pow", -1e6, 0.5, r"0\.5 pow -1000000\.0 would be about 10\^3\.01e\+05, beyond the largest float"),
        ("pow", -1, 0, r"0\.0 pow -1\.0 divides by zero$"),
        ("pow", 0.5, -4, r"-4\.0 pow 0\.5 has no real result"),
        ("add", 1, 10**400, r"an integer of about 401 digits is too large for a float"),
    ],
)
def test_results_no_float_holds_name_the_row_and_column(ctx, tmp_path, operand, constant, value, expected):
    rows = [{"id": "a", "v": 1}, {"id": "b", "v": 2}, {"id": "c", "v": value}]
    with pytest.raises(OperationError, match=r"^row 2, column 'v': " + expected):
        ops.math_block(ctx, table(tmp_path, rows), operand, constant)


@pytest.mark.parametrize("exponent", [1e18, 1e300, 2.0**1023, 10.0**308])
def test_pow_with_a_huge_exponent_fails_at_once(ctx, tmp_path, exponent):
    start = time.perf_counter()
    with pytest.raises(OperationError, match=r"^row 0, column 'v': 3\.0 pow .* would be about 10\^"):
        ops.math_block(ctx, table(tmp_path, [{"v": 3}]), "pow", exponent)
    assert time.perf_counter() - start < 5  # refused from its size, not computed (10^(10^18) digits would not end)
    # The same exponent on a base that keeps it small is computed.
    assert list(ops.math_block(ctx, table(tmp_path, [{"v": 1}, {"v": 0.5}, {"v": -1}]), "pow", exponent).rows()) == [
        {"v": 1.0},
        {"v": 0.0},
        {"v": 1.0},
    ]


def test_a_regression_models_values_are_computed_on(ctx, tmp_path):
    items = [{"name": "plot-1", "value": 12.5}, {"name": "plot-2", "value": -3.0}]
    predictions = Predictions("burned-area-linear", items, {}, tmp_path / "p.json", task="tabular-regression")
    result = ops.math_block(ctx, predictions, "mul", 10_000)
    assert result.columns == ["name", "model", "value"]
    assert list(result.rows()) == [
        {"name": "plot-1", "model": "burned-area-linear", "value": 125000.0},
        {"name": "plot-2", "model": "burned-area-linear", "value": -30000.0},
    ]
    with pytest.raises(OperationError, match=r"^row 'plot-2', column 'value': -3\.0 pow 0\.5 has no real result"):
        ops.math_block(ctx, predictions, "pow", 0.5)


def test_labels_are_refused(ctx, tmp_path):
    items = [{"name": "a.jpg", "labels": ["Fire"], "scores": [0.9]}]
    predictions = Predictions("fire-vit-a", items, {}, tmp_path / "p.json")
    with pytest.raises(OperationError, match="fire-vit-a's predictions are image-classification results"):
        ops.math_block(ctx, predictions, "add", 1)


def test_the_result_feeds_what_a_table_feeds():
    computed = math(mock(), "add", 1)
    build_plan(
        [
            {"operation": "write_csv", "parameters": {"result": computed}},
            {"operation": "export_to_local", "parameters": {"data": computed}},
            {"operation": "export_to_s3", "parameters": {"bucket": "b-1", "inference_results": computed}},
            {
                "operation": "export_to_database",
                "parameters": {"data": computed, "connection": "samples", "table": "t"},
            },
            math(computed, "mul", 2),
        ],
        CATALOG,
    )


def test_a_pipeline_in_the_originals_shape_writes_the_computed_csv(ctx):
    # As its back-end sends it: every instruction with its parameters, the constant a float.
    pipeline = {
        "operation": "write_csv",
        "parameters": {
            "result": {
                "operation": "math_block",
                "parameters": {
                    "operand": "mul",
                    "constant": 2.0,
                    "data": {"operation": "mock_csv_data", "parameters": {}},
                },
            }
        },
    }
    [written] = run(ctx, pipeline)
    assert isinstance(written, FileDict)
    with written.files["output.csv"].open() as lines:
        assert list(csv.reader(lines)) == [
            ["column1", "column2", "column3"],
            ["2.0", "4.0", "6.0"],
            ["8.0", "10.0", "12.0"],
            ["14.0", "16.0", "18.0"],
        ]


def test_a_failure_in_a_pipeline_names_the_instruction_row_and_column(ctx):
    with pytest.raises(InstructionFailed) as failed:
        run(ctx, {"operation": "write_csv", "parameters": {"result": math(math(mock(), "sub", 4), "truediv", 0)}})
    assert failed.value.path == "/instructions/0/parameters/result"
    assert failed.value.message == "row 0, column 'column1': -3.0 truediv 0.0 divides by zero"
