"""The Celery app: broker settings and delivery guarantees in one place (the worker runtime is in
``jobs/worker.py``, the tasks in ``jobs/tasks.py``, storage in ``storage/``).

Guarantees and why each setting:

- ``task_acks_late``: a message is acknowledged after the task ran, so a worker that dies mid-job
  leaves it unacknowledged and the broker delivers it again;
- ``task_reject_on_worker_lost``: a prefork child killed by a signal (SIGKILL, the OOM killer)
  has its message requeued at once instead of acknowledged as failed;
- ``worker_prefetch_multiplier = 1``: a worker holds only the message it runs, so a slow job does
  not sit on others that an idle worker could take;
- Redis ``visibility_timeout`` longer than the longest job: Redis redelivers unacknowledged
  messages after it, and a shorter one would run long jobs twice at once (the store's lease
  would still let only one result count);
- lost messages (a broker restarted without persistence) are covered by the store: the API's
  sweeper publishes again any job queued too long, and any running job whose lease ran out.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from kombu import Queue

from stenod.settings import JobsSettings

RUN_JOB_TASK = "stenod.run_job"
DELIVER_WEBHOOK_TASK = "stenod.deliver_webhook"
BROKER_CONNECT_TIMEOUT_S = 5.0


def broker_kind(url: str) -> str:
    scheme = url.split(":", 1)[0].lower()
    if scheme in ("redis", "rediss"):
        return "redis"
    if scheme in ("amqp", "amqps", "pyamqp"):
        return "amqp"
    raise ValueError(f"jobs.broker_url: unsupported broker {scheme!r}; use redis:// or amqp://")


def create_celery(settings: JobsSettings) -> Celery:
    """A Celery app for ``settings.broker_url``; no results backend (results live in the job store).

    Raises:
        ValueError: an unsupported broker URL.
    """
    kind = broker_kind(settings.broker_url)
    app = Celery("stenod", broker=settings.broker_url, set_as_current=False)
    transport_options: dict[str, Any] = {}
    if kind == "redis":
        transport_options = {"visibility_timeout": settings.visibility_timeout_s, "socket_timeout": 10,
                             "socket_connect_timeout": BROKER_CONNECT_TIMEOUT_S}
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        result_backend=None,
        task_default_queue=settings.queue_name,
        task_queues=[Queue(settings.queue_name, routing_key=settings.queue_name)],
        task_routes={RUN_JOB_TASK: {"queue": settings.queue_name},
                     DELIVER_WEBHOOK_TASK: {"queue": settings.queue_name}},
        broker_transport_options=transport_options,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,  # a worker waits for a restarting broker instead of exiting
        broker_connection_timeout=BROKER_CONNECT_TIMEOUT_S,
        task_serializer="json",
        accept_content=["json"],
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        task_publish_retry=True,
        task_publish_retry_policy={"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5,
                                   "interval_max": 2.0},
        broker_heartbeat=30 if kind == "amqp" else 0,
        worker_cancel_long_running_tasks_on_connection_loss=False,
    )
    return app


class CeleryQueue:
    """Publishes job ids to the broker; the API's side of Celery."""

    def __init__(self, app: Celery, settings: JobsSettings) -> None:
        self.app = app
        self.settings = settings
        self.mode = broker_kind(settings.broker_url)

    def publish(self, job_id: str) -> None:
        self.app.send_task(RUN_JOB_TASK, args=[job_id], queue=self.settings.queue_name)

    def publish_webhook(self, job_id: str, *, countdown_s: float = 0.0) -> None:
        self.app.send_task(DELIVER_WEBHOOK_TASK, args=[job_id], queue=self.settings.queue_name,
                           countdown=countdown_s or None)

    def depth(self) -> int | None:
        """Messages ready in the queue (Redis: list length; RabbitMQ: passive declare)."""
        try:
            with self.app.connection_for_write() as conn:
                conn.ensure_connection(max_retries=1, timeout=BROKER_CONNECT_TIMEOUT_S)
                if self.mode == "redis":
                    client = conn.default_channel.client
                    return int(client.llen(self.settings.queue_name))
                declared = conn.default_channel.queue_declare(queue=self.settings.queue_name, passive=True)
                return int(declared.message_count)
        except Exception:
            return None
