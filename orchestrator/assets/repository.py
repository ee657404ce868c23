"""The code location's entry point: repository `main`, shown as main@constellation."""

from __future__ import annotations

from dagster import repository

from orchestrator.assets import ops
from orchestrator.assets.job import make_execute_job
from orchestrator.assets.resources import Workspace
from orchestrator.engine import Catalog

# Every operation a pipeline may use. Adding one: write the function in ops.py, list it here.
OP_DEFS = [
    ops.import_from_local,
    ops.import_from_url,
    ops.dict_to_list,
    ops.resize_image,
    ops.batch_formatted_data,
    ops.convert_image,
    ops.normalize_image,
    ops.crop_image,
    ops.tile_image,
    ops.filter_files,
    ops.sample,
    ops.export_to_local,
]

CATALOG = Catalog.from_functions(OP_DEFS)


# What ops may use, as `ctx.resources.<key>`; each reads its settings from the environment.
RESOURCES = {
    "workspace": Workspace.from_env(),
}

build_execute_job = make_execute_job(CATALOG, RESOURCES)


@repository(name="main")
def main():
    return [build_execute_job]
