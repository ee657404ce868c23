"""The catalog: derived from each op function's signature, served as JSON, and used to validate."""

from __future__ import annotations

import json
from typing import Annotated, Any

import pytest
from pydantic import Field

from orchestrator.assets.repository import CATALOG, OP_DEFS
from orchestrator.engine import Catalog, DataType, PipelineInvalid, RunContext, build_plan, execute


def instruction(operation: str, **parameters: Any) -> dict[str, Any]:
    return {"operation": operation, "parameters": parameters}


def problems(instructions: list[Any], catalog: Catalog) -> list[tuple[str, str]]:
    with pytest.raises(PipelineInvalid) as caught:
        build_plan(instructions, catalog)
    return [(p.path, p.message) for p in caught.value.problems]


def test_every_op_has_a_description_and_a_documented_output_type():
    assert CATALOG.names() == sorted(fn.__name__ for fn in OP_DEFS)
    for name in CATALOG.names():
        op = CATALOG[name]
        assert op.description, name
        assert op.output in CATALOG.type_docs, name
        assert CATALOG.type_docs[op.output], op.output
        assert op.parameters or name == "mock_csv_data", name  # the fixed sample table takes nothing


def test_every_nested_input_names_documented_types():
    for op in CATALOG.operations.values():
        for param in op.parameters:
            assert all(CATALOG.type_docs.get(t) for t in param.accepts), f"{op.name}.{param.name}"


def test_every_parameter_has_a_description():
    missing = [f"{op.name}.{p.name}" for op in CATALOG.operations.values() for p in op.parameters if not p.description]
    assert missing == []


def test_resize_image_width_is_a_bounded_required_integer():
    width = CATALOG["resize_image"].parameter("width")
    assert width is not None
    assert width.schema["type"] == "integer"
    assert width.schema["minimum"] == 1
    assert width.schema["maximum"] == 16384
    assert width.required
    assert not width.takes_instructions
    # Pixels carries the bounds, the outer Field the description: both must survive.
    assert width.description == "target width in pixels"


def test_batch_size_defaults_to_32_and_is_optional():
    op = CATALOG["batch_formatted_data"]
    batch_size = op.parameter("batch_size")
    assert batch_size is not None
    assert batch_size.default == 32
    assert not batch_size.required
    schema = op.json_schema()
    assert schema["properties"]["batch_size"]["default"] == 32
    assert schema["required"] == ["data"]
    assert schema["additionalProperties"] is False


def test_data_parameters_accept_the_outputs_of_other_ops():
    assert set(CATALOG["resize_image"].parameter("data").accepts) == {"FileList", "FileDict"}
    assert CATALOG["dict_to_list"].parameter("data").accepts == ("FileDict",)
    assert CATALOG["import_from_local"].output == "FileDict"
    assert CATALOG["batch_formatted_data"].output == "Batches"


def test_catalog_json_round_trips():
    served = json.loads(json.dumps(CATALOG.to_json()))  # what GET /operations and the gateway see
    assert Catalog.from_json(served).to_json() == CATALOG.to_json()


BAD_PIPELINES = [
    [instruction("resize_imag", data=instruction("import_from_local", path="a"), width=1, height=1)],
    [instruction("resize_image", data=instruction("import_from_local", path=""), widht=1, height=0)],
    [instruction("dict_to_list", data=instruction("batch_formatted_data", data=instruction("import_from_url")))],
    [instruction("batch_formatted_data", data="photos", batch_size=2.5)],
    [instruction("resize_image", data=instruction("import_from_local", path="a"), width={"operation": "x"})],
]


@pytest.mark.parametrize("pipeline", BAD_PIPELINES)
def test_the_json_catalog_finds_the_same_problems(pipeline):
    # The gateway validates with Catalog.from_json (it never imports the ops).
    from_json = Catalog.from_json(json.loads(json.dumps(CATALOG.to_json())))
    assert problems(pipeline, from_json) == problems(pipeline, CATALOG)


def test_the_json_catalog_accepts_what_the_real_one_accepts():
    pipeline = [
        instruction(
            "batch_formatted_data",
            data=instruction(
                "resize_image", data=instruction("import_from_url", url="http://x/a.jpg"), width=3, height=3
            ),
        )
    ]
    from_json = Catalog.from_json(CATALOG.to_json())
    assert len(build_plan(pipeline, from_json)) == len(build_plan(pipeline, CATALOG)) == 3


# A new op is one function: this is everything a contributor writes.
class Greeting(DataType):
    """A sentence addressed to someone."""

    def __init__(self, text: str):
        self.text = text

    def summary(self) -> str:
        return self.text


def greet(
    ctx: RunContext,
    name: Annotated[str, Field(min_length=1, description="who to greet")],
    times: Annotated[int, Field(ge=1, le=3, description="how many times to say it")] = 1,
) -> Greeting:
    """Greet someone by name."""
    return Greeting(" ".join([f"hello {name}"] * times))


def shout(ctx: RunContext, greeting: Annotated[Greeting, Field(description="the greeting to shout")]) -> Greeting:
    """Shout a greeting."""
    return Greeting(greeting.text.upper() + "!")


def test_a_new_op_is_documented_from_its_signature():
    catalog = Catalog.from_functions([greet, shout])
    served = catalog.to_json()
    assert [op["name"] for op in served["operations"]] == ["greet", "shout"]
    assert served["types"]["Greeting"] == "A sentence addressed to someone."
    greet_json = served["operations"][0]
    assert greet_json["description"] == "Greet someone by name."
    assert greet_json["output"] == "Greeting"
    assert greet_json["parameters_schema"]["properties"]["times"] == {
        "type": "integer",
        "minimum": 1,
        "maximum": 3,
        "description": "how many times to say it",
        "default": 1,
    }
    assert greet_json["parameters_schema"]["required"] == ["name"]
    assert served["operations"][1]["parameters"][0]["accepts"] == ["Greeting"]


def test_a_new_op_is_validated_and_runs(tmp_path):
    catalog = Catalog.from_functions([greet, shout])
    assert problems([instruction("shout", greeting=instruction("greet", name="", times=4))], catalog) == [
        ("/instructions/0/parameters/greeting/parameters/name", "greet.name: '' should be non-empty"),
        (
            "/instructions/0/parameters/greeting/parameters/times",
            "greet.times: 4 is greater than the maximum of 3",
        ),
    ]
    plan = build_plan([instruction("shout", greeting=instruction("greet", name="Ada", times=2))], catalog)
    [output] = execute(plan, catalog, RunContext(run_dir=tmp_path))
    assert output.text == "HELLO ADA HELLO ADA!"


def test_an_op_declared_twice_is_refused():
    with pytest.raises(ValueError, match="'greet' is declared twice"):
        Catalog.from_functions([greet, greet])
