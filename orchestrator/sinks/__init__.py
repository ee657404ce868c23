"""Where results go: files (local, S3) and SQL databases."""
