"""Where bytes live: local files now; the job store, blob store and queue backends join here."""

from stenod.storage.atomic import atomic_file, write_atomic

__all__ = ["atomic_file", "write_atomic"]
