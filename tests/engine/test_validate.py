"""Validating a pipeline against the real catalog: every mistake, at once, each at its exact path."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator.assets.repository import CATALOG
from orchestrator.engine import Limits, PipelineInvalid, build_plan


def instruction(operation: str, **parameters: Any) -> dict[str, Any]:
    return {"operation": operation, "parameters": parameters}


def local(path: str = "photos") -> dict[str, Any]:
    return instruction("import_from_local", path=path)


DEFAULTS = Limits()


def problems(instructions: list[Any], limits: Limits = DEFAULTS) -> list[tuple[str, str]]:
    with pytest.raises(PipelineInvalid) as caught:
        build_plan(instructions, CATALOG, limits)
    return [(p.path, p.message) for p in caught.value.problems]


def paths(instructions: list[Any], limits: Limits = DEFAULTS) -> list[str]:
    return [path for path, _ in problems(instructions, limits)]


def test_a_valid_chain_is_planned():
    pipeline = [
        local("other"),
        instruction(
            "batch_formatted_data",
            data=instruction("resize_image", data=instruction("dict_to_list", data=local()), width=3, height=4),
            batch_size=2,
        ),
    ]
    plan = build_plan(pipeline, CATALOG)
    assert [root.operation for root in plan.roots] == ["import_from_local", "batch_formatted_data"]
    assert sorted(node.operation for node in plan.shared.values()) == [
        "dict_to_list",
        "import_from_local",
        "resize_image",
    ]
    assert len(plan) == 5


def test_parameters_may_be_omitted_only_when_nothing_is_required():
    assert paths([{"operation": "import_from_local"}]) == ["/instructions/0/parameters"]


def test_every_error_is_reported_at_once_with_its_path():
    pipeline = [
        instruction("resize_imag", data=local(), width=1, height=1),
        instruction("resize_image", data=local(), widht=1, height=0),
        instruction("dict_to_list", data=instruction("dict_to_list", data=local(""))),
        "deploy",
    ]
    assert paths(pipeline) == [
        "/instructions/0/operation",
        "/instructions/1/parameters/widht",
        "/instructions/1/parameters/height",
        "/instructions/1/parameters",
        "/instructions/2/parameters/data/parameters/data/parameters/path",
        "/instructions/3",
    ]


def test_unknown_operation_suggests_a_close_match():
    [(path, message)] = problems([instruction("resize_imag", data=local(), width=1, height=1)])
    assert path == "/instructions/0/operation"
    assert "unknown operation 'resize_imag'" in message
    assert "did you mean 'resize_image'" in message


def test_unknown_operation_without_a_close_match_points_to_the_list():
    [(path, message)] = problems([instruction("fly_to_the_moon")])
    assert path == "/instructions/0/operation"
    assert "GET /operations" in message


def test_unknown_parameter_is_reported_with_a_suggestion():
    found = problems([instruction("resize_image", data=local(), width=1, height=1, heigth=2)])
    assert found == [
        (
            "/instructions/0/parameters/heigth",
            "unknown parameter 'heigth' of resize_image; did you mean 'height'? it takes: data, width, height",
        )
    ]


def test_unknown_parameter_name_is_escaped_in_the_pointer():
    assert paths([instruction("import_from_local", path="a", **{"a/b": 1})]) == ["/instructions/0/parameters/a~1b"]


def test_missing_required_parameter_is_reported_on_the_parameters_object():
    [(path, message)] = problems([instruction("resize_image", data=local(), height=1)])
    assert path == "/instructions/0/parameters"
    assert "missing required parameter 'width' of resize_image" in message


@pytest.mark.parametrize("given", ["3", True, 2.5, None, [3]])
def test_literal_of_the_wrong_type_is_refused(given):
    [(path, message)] = problems([instruction("resize_image", data=local(), width=given, height=1)])
    assert path == "/instructions/0/parameters/width"
    assert "is not of type 'integer'" in message


@pytest.mark.parametrize(("width", "words"), [(0, "less than the minimum of 1"), (16385, "maximum of 16384")])
def test_out_of_range_value_is_refused(width, words):
    [(path, message)] = problems([instruction("resize_image", data=local(), width=width, height=1)])
    assert path == "/instructions/0/parameters/width"
    assert words in message


def test_nested_output_of_the_wrong_type_is_refused():
    pipeline = [instruction("dict_to_list", data=instruction("batch_formatted_data", data=local()))]
    assert problems(pipeline) == [
        (
            "/instructions/0/parameters/data",
            "batch_formatted_data produces Batches, but dict_to_list.data accepts 'FileDict'",
        )
    ]


def test_literal_where_an_instruction_is_required_is_refused():
    [(path, message)] = problems([instruction("dict_to_list", data="photos")])
    assert path == "/instructions/0/parameters/data"
    assert "expects the output of an instruction producing 'FileDict', got a string" in message


def test_instruction_where_a_literal_is_required_is_refused():
    found = problems([instruction("resize_image", data=local(), width=local(), height=[1, local()])])
    assert found == [
        ("/instructions/0/parameters/width", "resize_image.width takes a literal value, not an instruction"),
        (
            "/instructions/0/parameters/height",
            "resize_image.height takes a literal value, not an instruction",
        ),
    ]


@pytest.mark.parametrize(("item", "kind"), [(3, "a number"), ("x", "a string"), (None, "null"), ([], "a list")])
def test_an_instruction_that_is_not_an_object_is_refused(item, kind):
    [(path, message)] = problems([local(), item])
    assert path == "/instructions/1"
    assert message.endswith(f"got {kind}")


def test_malformed_instruction_objects_are_reported_at_their_keys():
    pipeline = [
        {"parameters": {"path": "a"}},
        {"operation": 7},
        {"operation": "dict_to_list", "parameters": ["a"]},
        {"operation": "import_from_local", "parameters": {"path": "a"}, "params": {}},
    ]
    assert paths(pipeline) == [
        "/instructions/0",
        "/instructions/1/operation",
        "/instructions/2/parameters",
        "/instructions/3/params",
    ]


def test_instruction_depth_limit():
    three_deep = [instruction("resize_image", data=instruction("dict_to_list", data=local()), width=1, height=1)]
    assert build_plan(three_deep, CATALOG, Limits(max_instruction_depth=3))
    [(path, message)] = problems(three_deep, Limits(max_instruction_depth=2))
    assert path == "/instructions/0/parameters/data/parameters/data"
    assert message == "instructions nest more than 2 deep"


def test_node_count_limit_counts_nested_instructions_and_reports_once():
    pipeline = [instruction("dict_to_list", data=local("a")), local("b"), local("c"), local("d")]  # 5 nodes
    assert build_plan(pipeline, CATALOG, Limits(max_nodes=5))
    assert problems(pipeline, Limits(max_nodes=3)) == [("/instructions/2", "more than 3 instructions in one pipeline")]


def test_errors_inside_nested_instructions_of_an_unknown_operation_are_still_reported():
    pipeline = [
        instruction(
            "deploy_modle",
            data=instruction("resize_image", data=local(), width=0, height=1),
            many=[local(""), 3],
        )
    ]
    assert paths(pipeline) == [
        "/instructions/0/operation",
        "/instructions/0/parameters/data/parameters/width",
        "/instructions/0/parameters/many/0/parameters/path",
    ]


def test_errors_inside_nested_instructions_of_an_unknown_parameter_are_still_reported():
    pipeline = [instruction("dict_to_list", data=local(), extra=instruction("nope"))]
    assert paths(pipeline) == [
        "/instructions/0/parameters/extra",
        "/instructions/0/parameters/extra/operation",
    ]


def test_identical_nested_instructions_are_shared():
    # Same instruction, keys written in a different order: still the same canonical JSON.
    reordered = {"parameters": {"path": "photos"}, "operation": "import_from_local"}
    pipeline = [
        instruction("dict_to_list", data=local()),
        instruction("batch_formatted_data", data=reordered, batch_size=2),
    ]
    plan = build_plan(pipeline, CATALOG)
    [shared] = plan.shared.values()
    assert shared.operation == "import_from_local"
    assert shared.paths == ["/instructions/0/parameters/data", "/instructions/1/parameters/data"]
    assert plan.roots[0].inputs["data"] is plan.roots[1].inputs["data"] is shared
    assert len(plan) == 3


def test_different_nested_instructions_are_not_shared():
    pipeline = [instruction("dict_to_list", data=local("a")), instruction("dict_to_list", data=local("b"))]
    plan = build_plan(pipeline, CATALOG)
    assert sorted(node.path for node in plan.shared.values()) == [
        "/instructions/0/parameters/data",
        "/instructions/1/parameters/data",
    ]


def test_identical_top_level_instructions_are_not_merged():
    plan = build_plan([local(), local()], CATALOG)
    assert [root.paths for root in plan.roots] == [["/instructions/0"], ["/instructions/1"]]
    assert plan.roots[0] is not plan.roots[1]
    assert plan.shared == {}
    assert len(plan) == 2


# ---- what only the server knows, checked before launch through the real stack (its code location) ----------


def test_validate_answers_every_server_side_mistake_at_once_with_its_pointer(api):
    """Each of these used to pass /validate and fail 2-27 s into a run; the gateway itself knows none of them."""
    samples = instruction("import_from_local", path="samples")
    pipeline = [
        instruction("dict_to_list", data=local("../outside")),
        instruction("dict_to_list", data=local("samples/no-such-folder")),
        instruction("import_from_database", connection="warehouse", table="constellation_samples"),
        instruction("import_from_database", connection="samples", query="DELETE FROM constellation_samples"),
        instruction("model_inference", model="never-deployed", data=samples),
        instruction("deploy_model", model="nobody/no-such-model"),
        instruction("import_from_stac", url="samples-eo/stac/catalog.json", bbox=[15.05, 41.96, 15.01, 41.995]),
    ]
    answer = api.post("/validate", json={"instructions": pipeline})
    assert answer.status_code == 422, answer.text
    body = answer.json()
    assert body["status"] == "failure" and body["message"].startswith("invalid pipeline: ")
    found = {e["path"]: e["message"] for e in body["errors"]}
    assert list(found) == [
        "/instructions/0/parameters/data/parameters/path",
        "/instructions/1/parameters/data/parameters/path",
        "/instructions/2/parameters/connection",
        "/instructions/3/parameters/query",
        "/instructions/4/parameters/model",
        "/instructions/5/parameters/model",
        "/instructions/6/parameters/bbox",
    ]
    assert "outside the data root" in found["/instructions/0/parameters/data/parameters/path"]
    assert "'samples/no-such-folder' does not exist" in found["/instructions/1/parameters/data/parameters/path"]
    assert "no database connection named 'warehouse'" in found["/instructions/2/parameters/connection"]
    assert "starts with DELETE" in found["/instructions/3/parameters/query"]
    assert "'never-deployed' is not deployed" in found["/instructions/4/parameters/model"]
    assert "not in the models root or the local Hugging Face cache" in found["/instructions/5/parameters/model"]
    assert "west 15.05 must be left of east 15.01" in found["/instructions/6/parameters/bbox"]
    for message in found.values():  # the server's folders are its own business
        assert "/tmp" not in message and "/work" not in message, message
    # /execute refuses it alike (Dagster's launch runs the same checks): no run is created.
    launched = api.post("/execute", json={"instructions": pipeline})
    assert launched.status_code == 422 and launched.json()["errors"] == body["errors"]


def test_a_model_deployed_earlier_or_held_by_the_server_passes(api):
    """model_inference is fine after a deploy_model of its model; the deployed model's source must exist."""
    samples = instruction("import_from_local", path="samples")
    pipeline = [
        instruction("deploy_model", model="fire-vit-a"),
        instruction("model_inference", model="fire-vit-a", data=samples),
    ]
    answer = api.post("/validate", json={"instructions": pipeline})
    assert answer.status_code == 200, answer.text
    deleted = [*pipeline[:1], instruction("delete_model", model="fire-vit-a"), pipeline[1]]
    refused = api.post("/validate", json={"instructions": deleted})
    assert refused.status_code == 422 and refused.json()["errors"][0]["path"] == "/instructions/2/parameters/model"


def test_a_private_url_is_refused_by_the_launch_config_check(tmp_path):
    """Dagster's own run-config validation of build_execute_job runs the URL policy (the test stack allows private
    addresses, so this asks the job in process, as the code server does)."""
    from dagster import DagsterInvalidConfigError, validate_run_config

    from orchestrator import contract
    from orchestrator.assets.job import make_execute_job
    from orchestrator.assets.resources import ServerSettings
    from orchestrator.engine.errors import problems_in

    (tmp_path / "data").mkdir()
    resources = ServerSettings(
        data_root=str(tmp_path / "data"), artifact_root=str(tmp_path / "artifacts"), url_allow_private=False
    ).resources()
    job = make_execute_job(CATALOG, resources)
    pipeline = [
        instruction("import_from_url", url="http://169.254.169.254/latest/meta-data/"),
        instruction("import_from_url", url="ftp://example.com/a.zip"),
    ]
    with pytest.raises(DagsterInvalidConfigError) as refused:
        validate_run_config(job, contract.launch_config(pipeline))
    problems = problems_in(str(refused.value))
    assert [p.path for p in problems] == ["/instructions/0/parameters/url", "/instructions/1/parameters/url"]
    assert "non-public address" in problems[0].message and "CONSTELLATION_URL_ALLOW_PRIVATE" in problems[0].message
    assert "not an http(s) URL" in problems[1].message
