"""build_execute_job run in process: what a launchpad user sees in the run and its folder."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from dagster import DagsterEventType, DagsterInstance, DagsterInvalidConfigError
from PIL import Image

import comparison_samples
from harness import Stack
from orchestrator import runs
from orchestrator.assets.job import make_execute_job
from orchestrator.assets.repository import CATALOG, resources_from_env
from orchestrator.assets.resources import Workspace
from orchestrator.engine.errors import problems_in
from sample_data import write_samples, write_stac_sample
from samples import sample_instructions, sample_with


@pytest.fixture
def resources(tmp_path: Path, stack: Stack, stack_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict:
    """The repository's resources, configured like the test stack's server (S3, Drive, databases, models)."""
    write_samples(tmp_path / "data")
    comparison_samples.write_files(tmp_path / "data")
    write_stac_sample(tmp_path / "data")  # the satellite scene, its labels and STAC catalog
    env = {
        **stack_env,
        "CONSTELLATION_MODEL_SERVER_URL": stack.model_server_url,
        "CONSTELLATION_DATA_ROOT": str(tmp_path / "data"),
        "CONSTELLATION_ARTIFACT_ROOT": str(tmp_path / "artifacts"),
        "CONSTELLATION_OUTPUT_ROOT": str(tmp_path / "outputs"),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return resources_from_env()


@pytest.fixture
def workspace(resources: dict) -> Workspace:
    return resources["workspace"]


def run(resources: dict, raw_input: list, instance: DagsterInstance | None = None):
    job = make_execute_job(CATALOG, resources)
    config = {"ops": {"generate_dynamic_job_configs": {"config": {"raw_input": raw_input}}}}
    return job.execute_in_process(
        run_config=config, instance=instance or DagsterInstance.ephemeral(), raise_on_error=False
    )


def log_lines(instance: DagsterInstance, run_id: str) -> list[str]:
    return [record.user_message for record in instance.all_logs(run_id)]


@pytest.mark.parametrize("index", range(len(sample_instructions())))
def test_every_sample_pipeline_succeeds_in_process(resources: dict, workspace: Workspace, index: int):
    result = run(resources, sample_instructions()[index])
    assert result.success
    folder = workspace.run_dir(result.run_id)
    document = json.loads((folder / runs.RESULTS).read_text())
    assert len(document["results"]) == len(sample_instructions()[index])
    for entry in document["results"]:
        if entry["output"].get("type") == "Comparison" and entry["output"]["labelled"]:
            names_a_winner(entry["output"])


def names_a_winner(comparison: dict) -> None:
    """The sample models differ measurably: the verdict names the best as significantly better, and its 95 %
    interval of the headline metric excludes the runner-up's value (no tie within the interval)."""
    metric, higher = comparison["headline"], comparison["higher_is_better"]
    best, runner = sorted(comparison["models"], key=lambda m: m[metric], reverse=higher)[:2]
    low, high = best[f"{metric}_ci"]
    assert comparison["best"] == best["model"] and "is significant" in comparison["verdict"], comparison["verdict"]
    assert (low > runner[metric]) if higher else (high < runner[metric]), (best, runner)


def test_results_and_progress_are_written_to_the_runs_folder(resources: dict, workspace: Workspace):
    pipeline = sample_instructions()[1]  # resize_image(224) over dict_to_list(import_from_local)
    result = run(resources, pipeline)
    folder = workspace.run_dir(result.run_id)
    [entry] = json.loads((folder / runs.RESULTS).read_text())["results"]
    assert entry["path"] == "/instructions/0" and entry["operation"] == "resize_image"
    files = entry["output"]["files"]
    assert len(files) == 12
    for item in files:
        path = Path(item["uri"].removeprefix("file://"))
        assert path.is_relative_to(folder), "derived data must live in the run's own folder"
        assert Image.open(path).size == (224, 224)
    progress = json.loads((folder / runs.PROGRESS).read_text())
    assert progress["done"] == progress["total"] == 3
    assert all(i["state"] == "succeeded" and i["duration_s"] >= 0 for i in progress["instructions"])


def test_each_instruction_shows_in_the_run_log_with_path_and_timing(resources: dict, workspace: Workspace):
    instance = DagsterInstance.ephemeral()
    result = run(resources, sample_instructions()[1], instance)
    lines = log_lines(instance, result.run_id)
    for path, op in [
        ("/instructions/0", "resize_image"),
        ("/instructions/0/parameters/data", "dict_to_list"),
        ("/instructions/0/parameters/data/parameters/data", "import_from_local"),
    ]:
        assert any(line.startswith(f"{path} {op} started") for line in lines), lines
        assert any(line.startswith(f"{path} {op} finished in ") and " s: " in line for line in lines)


def test_shared_import_runs_once(resources: dict, workspace: Workspace):
    instance = DagsterInstance.ephemeral()
    result = run(resources, sample_instructions()[3], instance)  # two resizes of one import
    started = [line for line in log_lines(instance, result.run_id) if "import_from_local started" in line]
    assert len(started) == 1 and "(+1 shared)" in started[0]


def test_event_log_holds_a_reference_to_the_results_not_the_data(resources: dict, workspace: Workspace):
    instance = DagsterInstance.ephemeral()
    result = run(resources, sample_instructions()[1], instance)
    output = result.output_for_node("parse_and_execute_job")
    results_file = Path(output["results"])
    assert results_file.parent == workspace.run_dir(result.run_id)
    biggest = max(len(str(entry)) for entry in instance.all_logs(result.run_id))
    assert biggest < 4000, "one event carries a blob; large data belongs in the run's folder"
    assert "file://" in results_file.read_text()


def test_a_failing_instruction_fails_the_run_naming_its_path(resources: dict, workspace: Workspace):
    (Path(workspace.data_root) / "empty" / "folder").mkdir(parents=True)  # found before launch, empty when read
    pipeline = [
        {
            "operation": "dict_to_list",
            "parameters": {"data": {"operation": "import_from_local", "parameters": {"path": "empty/folder"}}},
        }
    ]
    result = run(resources, pipeline)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type == DagsterEventType.STEP_FAILURE)
    assert failure.step_key == "parse_and_execute_job"
    assert "/instructions/0/parameters/data" in failure.event_specific_data.error.message
    assert "holds no files" in failure.event_specific_data.error.message
    progress = json.loads((workspace.run_dir(result.run_id) / runs.PROGRESS).read_text())
    assert progress["error"]["path"] == "/instructions/0/parameters/data"


def test_a_run_that_went_on_after_a_model_failed_to_load_shows_each_failure_where_it_happened(
    resources: dict, workspace: Workspace, stack: Stack
):
    (stack.models_root / "job-broken.onnx").write_bytes(b"not a model\n" * 40)  # found before launch, not loadable
    (Path(workspace.data_root) / "empty" / "folder").mkdir(parents=True)
    listed = {
        "operation": "dict_to_list",
        "parameters": {"data": {"operation": "import_from_local", "parameters": {"path": "samples"}}},
    }
    pipeline = [
        {
            "operation": "deploy_model",
            "parameters": {"model": "job-broken", "task": "tabular-classification", "source": "job-broken.onnx"},
        },
        listed,
        {
            "operation": "dict_to_list",
            "parameters": {"data": {"operation": "import_from_local", "parameters": {"path": "empty/folder"}}},
        },
        listed,
    ]
    result = run(resources, pipeline)
    assert not result.success
    saved = json.loads((workspace.run_dir(result.run_id) / runs.RESULTS).read_text())["results"]
    assert [r.get("state") for r in saved] == ["failed", None, "failed", "not run"]
    assert saved[0]["error"].startswith("deploy_model at /instructions/0 failed: ")  # the run went on after it
    assert saved[1]["output"]["type"] == "FileList"
    assert saved[2]["error"].startswith("import_from_local at /instructions/2/parameters/data failed: ")
    assert "holds no files" in saved[2]["error"]  # what stopped the run, said where it happened
    assert saved[3]["error"] == "not run: dict_to_list at /instructions/2 stopped the run before it"
    progress = json.loads((workspace.run_dir(result.run_id) / runs.PROGRESS).read_text())
    assert progress["error"]["path"] == "/instructions/0"  # the run's error: its first failure


def test_a_comparison_without_a_model_that_failed_shows_on_the_failed_run_page(resources: dict, stack: Stack):
    (stack.models_root / "job-broken.onnx").write_bytes(b"not a model\n" * 40)
    pipeline = copy.deepcopy(sample_with('"fire-risk-tree"', "compare_models")["instructions"])
    [compare] = [i for i in pipeline if i["operation"] == "compare_models"]
    third = copy.deepcopy(compare["parameters"]["results"][0])
    third["parameters"]["model"] = "job-broken"
    compare["parameters"]["results"].append(third)
    broken = {"model": "job-broken", "task": "tabular-classification", "source": "job-broken.onnx"}
    pipeline.insert(0, {"operation": "deploy_model", "parameters": broken})
    result = run(resources, pipeline)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type == DagsterEventType.STEP_FAILURE)
    metadata = failure.event_specific_data.user_failure_data.metadata
    where = f"compare_models /instructions/{pipeline.index(compare)}"
    assert metadata["path"].value == "/instructions/0"  # the run failed: the model that did not load
    assert "job-broken" in metadata[f"{where} verdict"].value  # and the Dagster run page still shows the comparison
    assert {row.data["model"] for row in metadata[f"{where} metrics"].value.records} == {
        "fire-risk-logreg",
        "fire-risk-tree",
    }


def test_launchpad_input_is_validated_like_the_api(resources: dict, workspace: Workspace):
    """The launchpad's pipeline is checked as the gateway checks one, catalog and server alike, when Dagster
    validates the launch's config: refused before any run, every problem at its JSON Pointer."""
    pipeline = [
        {
            "operation": "resize_image",
            "parameters": {
                "width": 0,
                "height": 10,
                "data": {"operation": "import_from_local", "parameters": {"path": "samples"}},
            },
        },
        {"operation": "import_from_local", "parameters": {"path": "../elsewhere"}},
    ]
    instance = DagsterInstance.ephemeral()
    with pytest.raises(DagsterInvalidConfigError) as refused:
        run(resources, pipeline[:1], instance)
    assert [p.path for p in problems_in(str(refused.value))] == ["/instructions/0/parameters/width"]
    with pytest.raises(DagsterInvalidConfigError) as refused:
        run(resources, pipeline[1:], instance)
    [problem] = problems_in(str(refused.value))
    assert problem.path == "/instructions/0/parameters/path" and "outside the data root" in problem.message
    assert instance.get_runs() == []
