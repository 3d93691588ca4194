"""Where bytes and rows live: atomic local files, the SQL job store (SQLite or PostgreSQL,
``sql``/``job_store``), and blob stores for job audio and results (local folder or S3,
``blobs``). Nothing here imports the API, service or job layers."""
