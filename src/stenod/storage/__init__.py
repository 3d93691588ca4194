"""Where bytes and rows live: atomic local files, the SQL job store (SQLite or PostgreSQL,
``sql``/``job_store``), and blob stores for job audio and results (local folder or S3,
``blobs``). Nothing here imports the API, service or job layers.

Only the light atomic-file helpers are re-exported; the stores pull in SQLAlchemy and boto3, so
import their modules where they are used."""

from stenod.storage.atomic import atomic_file, write_atomic

__all__ = ["atomic_file", "write_atomic"]
