"""Durable jobs, split the way Celery splits itself:

- ``app``: the Celery app and its delivery settings (acks late, prefetch 1, reject on worker
  loss, visibility timeout), and the API's publisher;
- ``worker``: the per-process runtime of ``stenod worker`` (stores and model built after fork);
- ``tasks``: thin tasks over ``runner`` (one job: claim, lease, transcribe, store the result once)
  and ``webhooks`` (Standard Webhooks signing and retries);
- ``inprocess``: the default without a broker (workers inside ``stenod serve``);
- ``runtime``: wiring from settings; ``sweeper``: retention and republishing.

Storage (SQL job store, blob stores) lives in :mod:`stenod.storage`; the API-side operations in
:mod:`stenod.service.jobs`.
"""
