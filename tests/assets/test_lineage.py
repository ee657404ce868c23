"""A run's sources, destinations and comparisons in Dagster's asset catalog, through the real job."""

from __future__ import annotations

from pathlib import Path

from dagster import AssetKey, DagsterEventType, DagsterInstance

from orchestrator.assets.job import make_execute_job
from orchestrator.assets.repository import CATALOG
from orchestrator.assets.resources import Workspace
from sample_data import write_samples


def test_an_import_is_observed_and_an_export_materialized(tmp_path: Path):
    write_samples(tmp_path / "data")
    workspace = Workspace(
        data_root=str(tmp_path / "data"),
        artifact_root=str(tmp_path / "artifacts"),
        output_root=str(tmp_path / "outputs"),
    )
    job = make_execute_job(CATALOG, {"workspace": workspace})
    pipeline = [
        {
            "operation": "export_to_local",
            "parameters": {
                "folder": "lineage-test",
                "data": {"operation": "import_from_local", "parameters": {"path": "samples/Fire"}},
            },
        }
    ]
    instance = DagsterInstance.ephemeral()
    result = job.execute_in_process(
        run_config={"ops": {"generate_dynamic_job_configs": {"config": {"raw_input": pipeline}}}}, instance=instance
    )
    assert result.success
    written = instance.get_latest_materialization_event(AssetKey(["local_output", "lineage-test"]))
    assert written is not None and written.run_id == result.run_id
    assert written.asset_materialization.metadata["items"].value == 4
    observed = [e for e in instance.all_logs(result.run_id, of_type=DagsterEventType.ASSET_OBSERVATION)]
    assert [e.dagster_event.asset_key for e in observed] == [AssetKey(["local", "samples", "Fire"])]
    assert observed[0].dagster_event.event_specific_data.asset_observation.metadata["files"].value == 4


def test_sources_and_destinations_are_named_from_the_catalog():
    """Each import and export says in its catalog entry what it reads or writes (reads_from / writes_to)."""
    from orchestrator.assets import lineage
    from orchestrator.datasets import Exported
    from orchestrator.engine import Node

    assert {n for n in CATALOG.names() if CATALOG[n].reads} == {
        "import_from_local",
        "import_from_s3",
        "import_from_url",
        "import_from_google_drive",
        "import_from_database",
    }
    assert {n for n in CATALOG.names() if CATALOG[n].writes} == {
        "export_to_local",
        "export_to_s3",
        "export_to_database",
    }

    def named(operation: str, given: dict, output: object = None) -> list[str]:
        node = Node("k", operation, given, {}, ["/instructions/0"])
        if isinstance(output, Exported):
            return lineage.destination_key(CATALOG[operation], node, output).path
        return lineage.dataset_of(CATALOG, node).path

    assert named("import_from_s3", {"bucket": "b", "prefix": "x/y/"}) == ["s3", "b", "x", "y"]
    assert named("import_from_url", {"url": "https://example.com/a/b.zip?x=1"}) == ["url", "example.com", "a", "b.zip"]
    assert named("import_from_database", {"connection": "pg", "query": "select 1"})[:2] == ["database", "pg"]
    exported = Exported("s3://default-bucket/constellation/run/", [])
    assert named("export_to_s3", {}, exported) == ["s3", "default-bucket", "constellation"]
    assert named("write_csv", {}, exported) == ["export", "write_csv"]
