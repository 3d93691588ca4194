"""Celery tasks: thin wrappers over the job runner and the webhook deliverer.

A task never decides a job's fate from Celery's point of view alone: the job store does (atomic
claim, lease, attempts). Celery retries only to wait (the job is held by a live lease) or to ride
out an unavailable database or blob store.
"""

from __future__ import annotations

import logging

from botocore.exceptions import BotoCoreError, ClientError
from celery import Celery, Task
from celery.exceptions import Reject
from sqlalchemy.exc import DBAPIError

from stenod.errors import StorageUnavailableError
from stenod.jobs import worker
from stenod.jobs.app import DELIVER_WEBHOOK_TASK, RUN_JOB_TASK
from stenod.jobs.webhooks import deliver_once

logger = logging.getLogger(__name__)

INFRA_ERRORS = (DBAPIError, BotoCoreError, ClientError, OSError, StorageUnavailableError)
MAX_INFRA_BACKOFF_S = 30.0


def _backoff(task: Task) -> float:
    return min(MAX_INFRA_BACKOFF_S, 2.0 ** (task.request.retries or 0))


def register_tasks(app: Celery) -> None:
    @app.task(name=RUN_JOB_TASK, bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=None)
    def run_job(self: Task, job_id: str) -> str:
        ctx = worker.context()
        ctx.task_started()
        try:
            outcome = ctx.runner.process(job_id)
        except INFRA_ERRORS as exc:
            logger.warning("job %s: store unavailable (%s); retrying in %.0f s", job_id, type(exc).__name__,
                           _backoff(self))
            raise self.retry(countdown=_backoff(self), exc=exc) from exc
        finally:
            ctx.task_done()
        if outcome.outcome == "held":  # another worker's lease is live: look again when it runs out
            raise self.retry(countdown=outcome.retry_in_s + 1.0)
        if outcome.outcome == "released":
            # Warm shutdown: the job is queued again in the store; the message goes back to the
            # broker at once, so another worker takes it without waiting for a visibility timeout.
            raise Reject("worker shutting down; job handed back", requeue=True)
        return outcome.outcome

    @app.task(name=DELIVER_WEBHOOK_TASK, bind=True, acks_late=True, max_retries=None)
    def deliver_webhook(self: Task, job_id: str) -> None:
        ctx = worker.context()
        try:
            delay = deliver_once(ctx.backends.store, job_id, ctx.settings.jobs, ctx.backends.policy)
        except INFRA_ERRORS as exc:
            raise self.retry(countdown=_backoff(self), exc=exc) from exc
        if delay is not None:
            raise self.retry(countdown=delay)
