"""The FastAPI gateway: validates pipelines and launches them on Dagster."""
