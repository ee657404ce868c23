"""The shapes of names a pipeline may use, as JSON Schema patterns (light: no library to import).

The operations' declarations need them when the catalog is built, long before any import or
model call runs; keeping them apart means a run does not load every data library to start.
"""

from __future__ import annotations

# A Google Drive file or folder id, as in its share link.
DRIVE_ID_PATTERN = r"^[A-Za-z0-9_-]{10,200}$"
# A database connection name: CONSTELLATION_DB_<NAME>_URL holds its URL.
DB_CONNECTION_PATTERN = r"^[A-Za-z][A-Za-z0-9_]{0,63}$"
# A table, or schema.table.
DB_TABLE_PATTERN = r"^[A-Za-z_][A-Za-z0-9_$]{0,62}(\.[A-Za-z_][A-Za-z0-9_$]{0,62})?$"
# A Hugging Face style model id: "name" or "org/name".
MODEL_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}(/[A-Za-z0-9][A-Za-z0-9._-]{0,95})?$"
