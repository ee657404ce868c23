"""The code location's entry point: repository `main`, shown as main@constellation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dagster import ConfigurableResource, repository

from orchestrator import contract
from orchestrator.assets import ops
from orchestrator.assets.job import make_execute_job
from orchestrator.assets.notifications import StatusNotifier, notification_sensors
from orchestrator.assets.resources import S3Storage, ServerSettings
from orchestrator.engine import Catalog

# Every operation a pipeline may use. Adding one: write the function in ops.py, list it here.
OP_DEFS: list[Callable[..., Any]] = [
    ops.import_from_local,
    ops.import_from_url,
    ops.import_from_stac,
    ops.dict_to_list,
    ops.resize_image,
    ops.batch_formatted_data,
    ops.convert_image,
    ops.normalize_image,
    ops.crop_image,
    ops.tile_image,
    ops.select_bands,
    ops.reproject_raster,
    ops.spectral_index,
    ops.composite_rgb,
    ops.mosaic,
    ops.vectorize_mask,
    ops.filter_files,
    ops.sample,
    ops.export_to_local,
    ops.import_from_s3,
    ops.export_to_s3,
    ops.write_csv,
    ops.mock_csv_data,
    ops.math_block,
    ops.import_from_google_drive,
    ops.import_from_database,
    ops.export_to_database,
    ops.table_to_images,
    ops.read_table,
    ops.deploy_model,
    ops.model_inference,
    ops.delete_model,
    ops.compare_models,
]

# The operations as declared (the README's reference); CATALOG adds what this server's settings default.
DECLARED = Catalog.from_functions(OP_DEFS)


# What ops may use, as `ctx.resources.<key>`: built from the server's settings, read once.
def resources_from_env() -> dict[str, ConfigurableResource]:
    """Every resource, configured from the server's environment as it is now."""
    return ServerSettings().resources()


RESOURCES = resources_from_env()
_S3 = RESOURCES["s3"]
assert isinstance(_S3, S3Storage), "ServerSettings.resources() builds the 's3' resource as an S3Storage"

CATALOG = DECLARED.with_default(
    "export_to_s3",
    "bucket",
    _S3.export_bucket,
    unset="bucket name (no s3://); this server sets no CONSTELLATION_EXPORT_BUCKET to default it to",
)

build_execute_job = make_execute_job(CATALOG, RESOURCES)

# Run-status sensors that call CONSTELLATION_NOTIFY_URL; evaluated by the daemon's sensor loop.
NOTIFICATION_SENSORS = notification_sensors(build_execute_job, StatusNotifier.from_env())


# Named in code, not after the module: the UI and the gateway know the code location as main@constellation.
@repository(name=contract.REPOSITORY)
def main():
    return [build_execute_job, *NOTIFICATION_SENSORS]
