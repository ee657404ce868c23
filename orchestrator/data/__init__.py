"""The data plane: datasets on disk and the plain functions that import and prepare them."""
