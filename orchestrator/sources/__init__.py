"""Where data comes from: the server's data root, URLs, S3, Google Drive, SQL databases, archives."""
