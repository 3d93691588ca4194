"""Housekeeping the API servers run periodically (any number of servers may run it at once: each
step is idempotent): delete jobs past their retention with their audio and results, publish again
the jobs a broker lost, and restart webhook deliveries whose deliverer was lost (receivers dedupe
on ``webhook-id``, so a rare duplicate is harmless)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from stenod.jobs.webhooks import MAX_BACKOFF_S
from stenod.service.jobs import JobService, delete_job_blobs

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SweepReport:
    expired: int
    republished: int
    webhooks_resumed: int = 0


def sweep_once(service: JobService, *, republish: bool, now: float | None = None) -> SweepReport:
    now = time.time() if now is None else now
    store, blobs = service.store, service.blobs
    expired = 0
    for job in store.expired(now=now):
        delete_job_blobs(blobs, job)
        if store.delete(job.id):
            expired += 1
    republished = 0
    if republish:
        for job_id in store.due_for_publish(older_than_s=service.settings.republish_after_s, now=now):
            if service.publish(job_id):
                republished += 1
    resumed = 0
    if service.on_final is not None:
        # Longer than the longest wait between two attempts of a live deliverer.
        idle_s = MAX_BACKOFF_S + service.settings.webhook_timeout_s + 60.0
        for job_id in store.webhooks_due(idle_s=idle_s, now=now):
            service.on_final(job_id)
            resumed += 1
    if expired or republished or resumed:
        logger.info("job sweep: %d expired job(s) deleted, %d job(s) published again, %d webhook(s) resumed",
                    expired, republished, resumed)
    return SweepReport(expired=expired, republished=republished, webhooks_resumed=resumed)
