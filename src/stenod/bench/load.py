"""Load client: replay audio files with C concurrent clients against an OpenAI-compatible or
whisper.cpp-compatible endpoint and measure what a user of that endpoint gets.

* ``openai``: ``POST {url}/v1/audio/transcriptions`` multipart (``file``, ``model``,
  ``response_format=json``, ``language``) -> ``{"text": ...}``.
* ``whispercpp``: ``POST {url}/inference`` multipart (``file``, ``response_format=json``,
  ``temperature``, ``language``) -> ``{"text": ...}``, as whisper.cpp's ``server`` example.

Each level runs C workers that take the next request index from a shared counter and send file
``index % len(files)`` (round-robin), until ``max_requests`` requests have been sent or
``max_duration_s`` has passed since the level started; every request is bounded by
``request_timeout_s`` (total, not per read), so a level ends by ``max_duration_s +
request_timeout_s`` at the latest. Requests that got no HTTP response are counted under
``connect_error`` (nothing listening, DNS), ``timeout`` or ``transport_error``. A level also stops
early once ``ABORT_AFTER_CONNECT_ERRORS`` requests in a row failed to connect with none succeeding.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import mimetypes
import socket
import statistics
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

import httpx

from stenod.bench.corpus import CorpusItem
from stenod.bench.schema import BenchFile, LoadLevel, Percentiles, StopReason

logger = logging.getLogger(__name__)

Api = Literal["openai", "whispercpp"]
API_PATHS: dict[str, str] = {"openai": "/v1/audio/transcriptions", "whispercpp": "/inference"}
ABORT_AFTER_CONNECT_ERRORS = 5
CONNECT_ERROR = "connect_error"
TIMEOUT = "timeout"
TRANSPORT_ERROR = "transport_error"
INVALID_RESPONSE = "invalid_response"


class EndpointUnreachableError(ConnectionError):
    """Nothing answers at the URL (connection refused, unknown host, timeout on connect)."""


@dataclass(frozen=True, slots=True)
class LoadItem:
    """One file to replay, read into memory once so disk speed does not enter the measurement."""

    name: str
    data: bytes
    audio_s: float
    reference: str | None = None
    language: str | None = None


def load_items_or_raise(corpus: Sequence[CorpusItem]) -> tuple[list[LoadItem], list[BenchFile]]:
    """Read each file into memory and find its duration (from the header, or by decoding when the
    header does not say), for replay and for the result file.

    Raises:
        AudioDecodeError, EmptyAudioError: a file is not audio.
    """
    from stenod.audio import decode_audio, probe_audio

    items: list[LoadItem] = []
    files: list[BenchFile] = []
    for ci in corpus:
        audio_s = probe_audio(ci.path).duration_s
        if audio_s is None:
            audio_s = decode_audio(ci.path).duration_s
        items.append(LoadItem(ci.path.name, ci.path.read_bytes(), audio_s, ci.reference, ci.language))
        files.append(BenchFile(file=str(ci.path), audio_s=audio_s, reference=ci.reference, language=ci.language))
    return items, files


@dataclass(frozen=True, slots=True)
class LoadOptions:
    url: str
    api: Api = "openai"
    model: str | None = None
    """Sent as ``model``; omitted when ``None`` (the server's default)."""
    language: str | None = None
    """Sent when set and the file has no language of its own."""
    max_requests: int = 100
    max_duration_s: float = 60.0
    request_timeout_s: float = 300.0
    api_key: str | None = None


@dataclass(frozen=True, slots=True)
class RequestRecord:
    item: int
    status: str
    """HTTP status as text, or one of ``connect_error``, ``timeout``, ``transport_error``,
    ``invalid_response`` (200 without a ``text`` field)."""
    latency_s: float
    finished_at: float
    text: str | None = None
    detail: str | None = None


def is_loopback_url(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def endpoint_url(options: LoadOptions) -> str:
    return options.url.rstrip("/") + API_PATHS[options.api]


def _form(options: LoadOptions, item: LoadItem) -> dict[str, str]:
    data: dict[str, str] = {"response_format": "json"}
    if options.model:
        data["model"] = options.model
    language = item.language or options.language
    if language:
        data["language"] = language
    if options.api == "whispercpp":
        data["temperature"] = "0.0"
    return data


def _describe(exc: BaseException) -> str:
    """One line for a transport error; the OS reason (connection refused, unknown host) where the
    exception chain has one, since httpx's own message is often just "All connection attempts failed"."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ConnectionRefusedError):
            return "connection refused"
        if isinstance(seen, socket.gaierror):
            return f"unknown host ({seen.strerror or seen})"
        if isinstance(seen, OSError) and seen.strerror:
            return seen.strerror.lower()
        seen = seen.__cause__ or seen.__context__
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:200]


async def send_one(client: httpx.AsyncClient, options: LoadOptions, item: LoadItem, index: int) -> RequestRecord:
    """Send one transcription request and classify the outcome (never raises for network errors)."""
    mime = mimetypes.guess_type(item.name)[0] or "application/octet-stream"
    headers = {"Authorization": f"Bearer {options.api_key}"} if options.api_key else {}
    started = time.perf_counter()

    def record(status: str, text: str | None = None, detail: str | None = None) -> RequestRecord:
        now = time.perf_counter()
        return RequestRecord(index, status, now - started, now, text, detail)

    try:
        async with asyncio.timeout(options.request_timeout_s):
            response = await client.post(
                endpoint_url(options), files={"file": (item.name, item.data, mime)},
                data=_form(options, item), headers=headers,
            )
    except (TimeoutError, httpx.TimeoutException) as exc:
        if isinstance(exc, httpx.ConnectTimeout):
            return record(CONNECT_ERROR, detail=_describe(exc))
        return record(TIMEOUT, detail=f"no response within {options.request_timeout_s:g} s")
    except httpx.ConnectError as exc:
        return record(CONNECT_ERROR, detail=_describe(exc))
    except httpx.TransportError as exc:
        return record(TRANSPORT_ERROR, detail=_describe(exc))
    if response.status_code != 200:
        return record(str(response.status_code), detail=response.text[:200])
    try:
        body = response.json()
        text = body["text"]
        if not isinstance(text, str):
            raise TypeError("text is not a string")
    except (ValueError, KeyError, TypeError) as exc:
        return record(INVALID_RESPONSE, detail=f"200 without a JSON text field ({_describe(exc)})")
    return record("200", text=text)


async def check_reachable_or_raise(options: LoadOptions, *, timeout_s: float = 5.0) -> None:
    """Open one connection to the endpoint's host before the load starts.

    Any HTTP answer (even 404) counts as reachable; only transport failures raise.

    Raises:
        EndpointUnreachableError: with the URL and the reason, e.g. connection refused.
    """
    async with httpx.AsyncClient(timeout=timeout_s) as client:
        try:
            await client.get(options.url.rstrip("/") + "/")
        except httpx.TransportError as exc:
            raise EndpointUnreachableError(
                f"cannot reach {options.url}: {_describe(exc)}; is the server running?"
            ) from exc


def percentiles(values: Sequence[float]) -> Percentiles:
    """Nearest-rank-interpolated percentiles (``statistics.quantiles``, inclusive method)."""
    ordered = sorted(values)
    if len(ordered) == 1:
        v = ordered[0]
        return Percentiles(p50=v, p95=v, p99=v, mean=v, min=v, max=v)
    q = statistics.quantiles(ordered, n=100, method="inclusive")
    return Percentiles(p50=q[49], p95=q[94], p99=q[98], mean=statistics.fmean(ordered),
                       min=ordered[0], max=ordered[-1])


async def run_level(
    options: LoadOptions,
    items: Sequence[LoadItem],
    concurrency: int,
    *,
    client: httpx.AsyncClient | None = None,
) -> tuple[LoadLevel, list[RequestRecord]]:
    """Run one concurrency level within its bounds; see the module docstring."""
    if not items:
        raise ValueError("no audio to send")
    from stenod.bench.wer import grouped_wer

    own_client = client is None
    if client is None:
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        client = httpx.AsyncClient(timeout=httpx.Timeout(options.request_timeout_s), limits=limits)
    records: list[RequestRecord] = []
    next_index = 0
    stop: StopReason | None = None
    connect_streak = 0
    started = time.perf_counter()
    deadline = started + options.max_duration_s

    async def worker() -> None:
        nonlocal next_index, stop, connect_streak
        while stop is None:
            if next_index >= options.max_requests:
                stop = stop or "requests"
                return
            if time.perf_counter() >= deadline:
                stop = stop or "duration"
                return
            index = next_index
            next_index += 1
            rec = await send_one(client, options, items[index % len(items)], index)
            records.append(rec)
            if rec.status == CONNECT_ERROR:
                connect_streak += 1
                if connect_streak >= ABORT_AFTER_CONNECT_ERRORS and not any(r.status == "200" for r in records):
                    stop = "error"
            else:
                connect_streak = 0

    try:
        tasks = [asyncio.create_task(worker()) for _ in range(concurrency)]
        _, pending = await asyncio.wait(tasks, timeout=options.max_duration_s + options.request_timeout_s + 5.0)
        for task in pending:  # only if a request outlived its own timeout: abandon it
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    finally:
        if own_client:
            await client.aclose()
    wall_s = (max(r.finished_at for r in records) - started) if records else time.perf_counter() - started
    return summarize_level(records, items, concurrency=concurrency, wall_s=wall_s,
                           stopped_by=stop or "duration", wer_fn=grouped_wer), records


def summarize_level(
    records: Sequence[RequestRecord],
    items: Sequence[LoadItem],
    *,
    concurrency: int,
    wall_s: float,
    stopped_by: StopReason,
    wer_fn: Callable[[Sequence[str], Sequence[str], Sequence[str | None]], float],
) -> LoadLevel:
    ok = [r for r in records if r.status == "200"]
    audio_s_ok = sum(items[r.item % len(items)].audio_s for r in ok)
    scored = [(items[r.item % len(items)], r.text or "") for r in ok if items[r.item % len(items)].reference]
    wall = max(wall_s, 1e-9)
    return LoadLevel(
        concurrency=concurrency,
        requests=len(records),
        ok=len(ok),
        errors=len(records) - len(ok),
        status_counts=dict(Counter(r.status for r in records)),
        wall_s=wall_s,
        audio_s_ok=audio_s_ok,
        throughput_audio_s_per_s=audio_s_ok / wall,
        requests_per_s=len(records) / wall,
        latency_s=percentiles([r.latency_s for r in ok]) if ok else None,
        wer=wer_fn([i.reference or "" for i, _ in scored], [t for _, t in scored], [i.language for i, _ in scored])
        if scored else None,
        stopped_by=stopped_by,
    )


async def run_load(
    options: LoadOptions,
    items: Sequence[LoadItem],
    concurrencies: Sequence[int],
    *,
    on_level: Callable[[LoadLevel, list[RequestRecord]], None] | None = None,
) -> list[LoadLevel]:
    """Check the endpoint once, then run each concurrency level in turn.

    A level in which every request failed to connect (the server went away) ends the run; a level
    of only HTTP errors (say 429 under overload) is recorded and the next level runs.

    Raises:
        EndpointUnreachableError: nothing answers at ``options.url``, before or during the run.
    """
    await check_reachable_or_raise(options)
    levels: list[LoadLevel] = []
    for c in concurrencies:
        level, records = await run_level(options, items, c)
        levels.append(level)
        if on_level is not None:
            on_level(level, records)
        if level.ok == 0 and set(level.status_counts) <= {CONNECT_ERROR}:
            detail = next((r.detail for r in records if r.detail), "connection failed")
            raise EndpointUnreachableError(f"lost {options.url} at concurrency {c}: {detail}")
    return levels


def failure_summary(levels: Sequence[LoadLevel]) -> str:
    """``"503 x3, timeout x1"``: every non-200 outcome over all levels."""
    counts: Counter[str] = Counter()
    for level in levels:
        counts.update({k: v for k, v in level.status_counts.items() if k != "200"})
    return ", ".join(f"{k} x{v}" for k, v in sorted(counts.items()))
