"""Where bytes live: local files now; the job store, blob store and queue backends join here."""
