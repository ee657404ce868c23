"""Reading a request body: what a user sees when the body itself is wrong, before any op is checked."""

from __future__ import annotations

import json

import pytest

from orchestrator.engine import Limits, PipelineInvalid, parse_request

IMPORT = {"operation": "import_from_local", "parameters": {"path": "photos"}}

DEFAULTS = Limits()


def problems(body: bytes | str, limits: Limits = DEFAULTS) -> list[tuple[str, str]]:
    with pytest.raises(PipelineInvalid) as caught:
        parse_request(body, limits)
    return [(p.path, p.message) for p in caught.value.problems]


def test_a_valid_body_gives_its_instruction_list():
    body = json.dumps({"instructions": [IMPORT]})
    assert parse_request(body.encode()) == [IMPORT]
    assert parse_request(body) == [IMPORT]


def test_malformed_json_names_line_and_column():
    body = b'{"instructions": [\n  {"operation": "a",}\n]}'
    [(path, message)] = problems(body)
    assert path == ""
    assert message.startswith("malformed JSON")
    assert "line 2 column 21" in message


def test_body_that_is_not_utf8_is_refused_with_the_byte_offset():
    [(path, message)] = problems(b'{"instructions": ["\xff"]}')
    assert path == ""
    assert "not UTF-8" in message
    assert "byte 19" in message


def test_body_over_the_size_limit_is_refused():
    body = json.dumps({"instructions": [IMPORT]}).encode()
    limits = Limits(max_body_bytes=len(body) - 1)
    assert problems(body, limits) == [("", f"body is {len(body)} bytes; the limit is {len(body) - 1}")]


def test_body_exactly_at_the_size_limit_is_accepted():
    body = json.dumps({"instructions": [IMPORT]}).encode()
    assert parse_request(body, Limits(max_body_bytes=len(body))) == [IMPORT]


def test_size_limit_counts_bytes_even_when_the_body_is_given_as_text():
    body = json.dumps({"instructions": [{"operation": "é" * 40}]}, ensure_ascii=False)
    limit = len(body) + 10  # in characters it fits; in UTF-8 bytes (40 extra) it does not
    assert len(body.encode()) > limit
    with pytest.raises(PipelineInvalid, match="bytes; the limit is"):
        parse_request(body, Limits(max_body_bytes=limit))


def test_5000_opening_brackets_are_refused_without_recursion_error():
    # Must be a PipelineInvalid, not a RecursionError from the JSON parser.
    [(path, message)] = problems("[" * 5000)
    assert path == ""
    assert "5000 levels deep" in message
    assert "limit is 64" in message


def test_deep_but_well_formed_json_is_refused_by_depth():
    body = '{"instructions": ' + "[" * 5000 + "]" * 5000 + "}"
    [(_, message)] = problems(body)
    assert "5001 levels deep" in message


def test_depth_limit_is_inclusive():
    body = json.dumps({"instructions": [{"operation": "a", "parameters": {"x": [1]}}]})  # 5 levels
    assert parse_request(body, Limits(max_json_depth=5))[0]["parameters"] == {"x": [1]}
    [(_, message)] = problems(body, Limits(max_json_depth=4))
    assert message == "JSON nests 5 levels deep; the limit is 4"


def test_brackets_inside_strings_do_not_count_toward_depth():
    tricky = 'photos [[[[{{{{ \\" ]]]] {{ "[' * 20
    body = json.dumps({"instructions": [{"operation": "a", "parameters": {"path": tricky}}]})
    [instruction] = parse_request(body, Limits(max_json_depth=4))
    assert instruction["parameters"]["path"] == tricky


def test_duplicate_top_level_key_is_reported_at_that_key():
    body = '{"instructions": [], "instructions": [{"operation": "a"}]}'
    assert problems(body) == [("/instructions", "duplicate key 'instructions'; each key may appear once in an object")]


def test_duplicate_keys_inside_parameters_are_reported_with_their_full_path():
    body = """{"instructions": [
        {"operation": "import_from_local", "parameters": {"path": "a"}},
        {"operation": "resize_image", "parameters": {
            "width": 3, "height": 4, "width": 5,
            "data": {"operation": "dict_to_list", "operation": "dict_to_list"}}}
    ]}"""
    paths = [path for path, _ in problems(body)]
    assert sorted(paths) == [
        "/instructions/1/parameters/data/operation",
        "/instructions/1/parameters/width",
    ]


def test_duplicate_key_path_escapes_slash_and_tilde():
    body = '{"instructions": [{"operation": "a", "parameters": {"a/b~c": 1, "a/b~c": 2}}]}'
    assert [path for path, _ in problems(body)] == ["/instructions/0/parameters/a~1b~0c"]


def test_body_that_is_a_list_is_refused():
    assert problems(json.dumps([IMPORT])) == [("", 'expected an object {"instructions": [...]}, got a list')]


def test_missing_instructions_key_is_refused():
    [(path, message)] = problems("{}")
    assert path == ""
    assert "missing required key 'instructions'" in message


def test_unknown_keys_are_all_reported_with_the_missing_key():
    found = problems(json.dumps({"instrucions": [IMPORT], "run": True}))
    assert [path for path, _ in found] == ["", "/instrucions", "/run"]
    assert "unknown key 'instrucions'" in found[1][1]


def test_extra_key_beside_valid_instructions_is_refused():
    assert [p for p, _ in problems(json.dumps({"instructions": [IMPORT], "x": 1}))] == ["/x"]


@pytest.mark.parametrize(("value", "kind"), [({}, "an object"), ("a", "a string"), (None, "null"), (3, "a number")])
def test_instructions_that_are_not_a_list_are_refused(value, kind):
    assert problems(json.dumps({"instructions": value})) == [
        ("/instructions", f"expected a list of instructions, got {kind}")
    ]


def test_empty_instruction_list_is_refused():
    [(path, message)] = problems('{"instructions": []}')
    assert path == "/instructions"
    assert "empty" in message


def test_a_launch_config_is_checked_as_a_body_is_and_planned_once():
    """plan_launch: a run config's list gets the body's checks (NaN is not JSON); the same list is planned once."""
    from orchestrator.assets.repository import CATALOG
    from orchestrator.engine import plan_launch

    pipeline = [{"operation": "dict_to_list", "parameters": {"data": dict(IMPORT)}}]
    first = plan_launch(pipeline, CATALOG)
    assert plan_launch(json.loads(json.dumps(pipeline)), CATALOG) is first  # Dagster hands copies
    assert len(first) == 2
    for _ in range(2):  # a refusal is found each time, never remembered
        with pytest.raises(PipelineInvalid) as caught:
            plan_launch([{"operation": "resize_image", "parameters": {"width": float("nan")}}], CATALOG)
        assert "NaN" in caught.value.problems[0].message
