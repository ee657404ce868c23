"""The Dagster code location `constellation`: repository `main`, job `build_execute_job`."""
