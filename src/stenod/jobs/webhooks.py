"""Webhooks on final job states, signed the Standard Webhooks way
(https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md):

- ``webhook-id``: the message id, the same on every retry of one notification (receivers dedupe);
- ``webhook-timestamp``: Unix seconds of this attempt;
- ``webhook-signature``: ``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``, keyed with the
  secret (``whsec_`` + base64 is decoded; any other string is used as UTF-8 bytes).

One attempt at a time (:func:`deliver_once`); the caller schedules the retry after the delay it
returns (a timer in-process, a countdown task under Celery), and every attempt is recorded on the
job. Targets are checked by :mod:`stenod.service.egress` on every attempt (DNS may change).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
from typing import Any

import httpx

from stenod.errors import UnsafeURLError
from stenod.service.egress import EgressPolicy, post_json
from stenod.settings import JobsSettings
from stenod.storage.job_store import JobStore

logger = logging.getLogger(__name__)

MAX_BACKOFF_S = 600.0


def secret_bytes(secret: str) -> bytes:
    if secret.startswith("whsec_"):
        return base64.b64decode(secret.removeprefix("whsec_"))
    return secret.encode()


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_bytes(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """What a receiver does (used by tests and documented in docs/SCALING.md)."""
    expected = sign(secret, headers["webhook-id"], int(headers["webhook-timestamp"]), body)
    return any(hmac.compare_digest(expected, s) for s in headers["webhook-signature"].split())


def deliver_once(store: JobStore, job_id: str, settings: JobsSettings, policy: EgressPolicy) -> float | None:
    """Send one notification attempt for the job's final state.

    Returns the delay before the next attempt, or ``None`` when done (delivered, given up,
    refused target, job gone or not final).
    """
    job = store.get(job_id)
    if job is None or not job.webhook_url or not job.final or job.webhook_status in ("delivered", "failed"):
        return None
    secret = settings.webhook_secret.get_secret_value() if settings.webhook_secret else ""
    body = json.dumps({"id": job.id, "status": job.status}, separators=(",", ":")).encode()
    message_id = f"msg_{job.id}_{job.status}"
    timestamp = int(time.time())
    headers = {
        "content-type": "application/json",
        "user-agent": "stenod-webhooks",
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, message_id, timestamp, body),
    }
    number = len(job.webhook_attempts) + 1
    attempt: dict[str, Any] = {"attempt": number, "at": timestamp, "status_code": None, "error": None}
    retry = True
    try:
        attempt["status_code"] = post_json(job.webhook_url, body, headers, policy,
                                           timeout_s=settings.webhook_timeout_s)
    except UnsafeURLError as exc:
        attempt["error"] = exc.message
        retry = False
    except httpx.HTTPError as exc:
        attempt["error"] = f"{type(exc).__name__}: {exc}"[:300]
    delivered = attempt["status_code"] is not None and 200 <= attempt["status_code"] < 300
    give_up = not delivered and (not retry or number >= settings.webhook_max_attempts)
    status = "delivered" if delivered else ("failed" if give_up else "retrying")
    store.record_webhook_attempt(job_id, attempt, status=status)
    if delivered or give_up:
        logger.info("job %s: webhook %s after %d attempt(s)", job_id, status, number)
        return None
    return min(settings.webhook_backoff_s * 2 ** (number - 1), MAX_BACKOFF_S)
