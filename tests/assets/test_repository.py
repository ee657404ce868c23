"""The code location loads as users see it: repository `main`, job `build_execute_job`."""

from __future__ import annotations

from orchestrator.assets.job import CATALOG_METADATA_KEY
from orchestrator.assets.repository import CATALOG, OP_DEFS, main


def test_repository_main_resolves_build_execute_job():
    assert main.name == "main"
    job = main.get_job("build_execute_job")
    assert sorted(node.name for node in job.nodes) == ["generate_dynamic_job_configs", "parse_and_execute_job"]
    assert job.dependency_structure.input_to_upstream_outputs_for_node("parse_and_execute_job")


def test_every_listed_op_is_in_the_published_catalog():
    job = main.get_job("build_execute_job")
    published = job.metadata[CATALOG_METADATA_KEY].value
    assert sorted(op["name"] for op in published["operations"]) == sorted(f.__name__ for f in OP_DEFS)


def test_launchpad_offers_every_operation_by_name():
    config = main.get_job("build_execute_job").get_config_schema_snapshot()
    enums = [t for t in config.all_config_snaps_by_key.values() if t.given_name == "Operation"]
    assert enums, "the launchpad config has no Operation menu"
    assert sorted(v.value for v in enums[0].enum_values) == CATALOG.names()
