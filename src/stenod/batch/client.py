"""Send the batch to a running stenod (or any OpenAI-compatible) server instead of local workers.

Each file is POSTed to ``/v1/audio/transcriptions`` (``/v1/audio/translations`` for
``--task translate``) as OpenAI's multipart form with ``response_format=verbose_json``; the other
formats are rendered locally from the returned segments, so one request gives every output.

Retries are bounded and only for answers that mean "try later": 429, 502, 503, 504 and connection
errors or timeouts. Transcribing a file has no side effects on the server, so a retry is safe. The
delay honours ``Retry-After`` (seconds or an HTTP date), else backs off exponentially with jitter
from ``backoff_s``, and is capped at ``max_backoff_s``; the same policy as openai-python's client.
"""

from __future__ import annotations

import email.utils
import logging
import random
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from stenod.batch.runner import WorkOutcome, short_error
from stenod.formats import transcript_from_verbose_json
from stenod.transcript import Task

logger = logging.getLogger(__name__)

RETRY_STATUS_CODES = frozenset({429, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class ServerOptions:
    """How to reach the server and what to ask it for."""

    base_url: str
    """``http://host:port``; a trailing ``/v1`` is accepted."""
    model: str
    language: str | None = None
    task: Task = Task.TRANSCRIBE
    concurrency: int = 2
    retries: int = 5
    backoff_s: float = 1.0
    max_backoff_s: float = 60.0
    timeout_s: float = 900.0
    api_key: str | None = None
    word_timestamps: bool = False
    """Ask for word times too (word-level subtitle cues, words in verbose_json)."""


def normalize_base_url(url: str) -> str:
    url = url.strip().rstrip("/")
    if url.endswith("/v1"):
        url = url[: -len("/v1")]
    if not url.startswith(("http://", "https://")):
        url = "http://" + url
    return url


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta seconds or HTTP date), or ``None``."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def retry_delay_s(attempt: int, retry_after: float | None, *, backoff_s: float, max_backoff_s: float) -> float:
    """Delay before retry number ``attempt`` (0-based)."""
    if retry_after is not None:
        return min(retry_after, max_backoff_s)
    base = min(backoff_s * (2 ** attempt), max_backoff_s)
    return base * random.uniform(0.75, 1.0)


def _error_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if body.get("detail"):
            return str(body["detail"])
    text = response.text.strip().splitlines()
    return text[0][:200] if text else response.reason_phrase


class ServerClient:
    """Synchronous client for one server; thread-safe (one shared ``httpx.Client``)."""

    def __init__(self, options: ServerOptions, *, transport: httpx.BaseTransport | None = None) -> None:
        self.options = options
        self.base_url = normalize_base_url(options.base_url)
        headers = {"Authorization": f"Bearer {options.api_key}"} if options.api_key else {}
        self._http = httpx.Client(
            base_url=self.base_url, headers=headers, transport=transport,
            timeout=httpx.Timeout(options.timeout_s, connect=10.0),
            limits=httpx.Limits(max_connections=options.concurrency, max_keepalive_connections=options.concurrency),
        )
        self.cancel = threading.Event()

    def check_reachable(self) -> str | None:
        """``None`` when the server answers at all (any status), else why it cannot be reached."""
        try:
            self._http.get("/ready", timeout=10.0)
        except httpx.TransportError as exc:
            return f"cannot reach {self.base_url}: {type(exc).__name__}: {exc}"
        return None

    def transcribe(self, path: Path) -> WorkOutcome:
        """POST ``path`` with bounded retries; every failure is returned as a value."""
        opts = self.options
        endpoint = "/v1/audio/translations" if opts.task == "translate" else "/v1/audio/transcriptions"
        granularities = ["segment", "word"] if opts.word_timestamps else ["segment"]
        data: dict[str, Any] = {"model": opts.model, "response_format": "verbose_json",
                                "timestamp_granularities[]": granularities}
        if opts.language and opts.task != "translate":
            data["language"] = opts.language
        reason = ""
        for attempt in range(opts.retries + 1):
            if self.cancel.is_set():
                return WorkOutcome.failure("cancelled")
            retry_after: float | None = None
            started = time.perf_counter()
            try:
                with path.open("rb") as f:
                    response = self._http.post(endpoint, data=data,
                                               files={"file": (path.name, f, "application/octet-stream")})
            except OSError as exc:
                return WorkOutcome.failure(f"cannot read file: {exc.strerror or exc}")
            except httpx.TransportError as exc:
                reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            except RuntimeError as exc:  # the client was closed: the batch is being abandoned
                return WorkOutcome.failure(f"cancelled ({exc})")
            else:
                elapsed = time.perf_counter() - started
                if response.status_code == 200:
                    return self._outcome(response, elapsed, path)
                message = _error_message(response)
                if response.status_code not in RETRY_STATUS_CODES:
                    return WorkOutcome.failure(f"server answered {response.status_code}: {short_error(message, path)}",
                                               processing_s=elapsed)
                reason = f"server answered {response.status_code}: {message}"
                retry_after = parse_retry_after(response.headers.get("retry-after"))
            if attempt == opts.retries:
                break
            delay = retry_delay_s(attempt, retry_after, backoff_s=opts.backoff_s, max_backoff_s=opts.max_backoff_s)
            logger.info("%s: %s; retry %d/%d in %.1fs", path.name, reason, attempt + 1, opts.retries, delay)
            if self.cancel.wait(delay):
                return WorkOutcome.failure("cancelled")
        return WorkOutcome.failure(f"gave up after {opts.retries + 1} attempts: {reason}")

    @staticmethod
    def _outcome(response: httpx.Response, elapsed: float, path: Path) -> WorkOutcome:
        try:
            transcript = transcript_from_verbose_json(response.json())
        except (ValueError, TypeError, KeyError) as exc:
            return WorkOutcome.failure(f"server sent an unreadable verbose_json response: {exc}", processing_s=elapsed)
        return WorkOutcome(transcript=transcript, duration_s=transcript.duration, processing_s=elapsed)

    def close(self) -> None:
        self.cancel.set()
        self._http.close()


class ServerRunner:
    """Up to ``concurrency`` files in flight against one server."""

    def __init__(self, client: ServerClient) -> None:
        self._client = client
        self._executor = ThreadPoolExecutor(max_workers=client.options.concurrency, thread_name_prefix="stenod-upload")

    @property
    def capacity(self) -> int:
        return self._client.options.concurrency

    @property
    def description(self) -> str:
        return f"server {self._client.base_url}, {self.capacity} request(s) in flight, model {self._client.options.model}"

    def submit(self, path: Path) -> Future[WorkOutcome]:
        return self._executor.submit(self._client.transcribe, path)

    def shutdown(self, *, abandon: bool) -> None:
        if abandon:
            self._client.cancel.set()
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._client.close()
            return
        self._executor.shutdown(wait=True)
        self._client.close()
