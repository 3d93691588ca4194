"""Run a transcription for a route and shape the HTTP response: plain or SSE-streamed, with
cancellation when the client disconnects."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import AsyncIterator, Sequence

from fastapi import Request
from fastapi.responses import Response, StreamingResponse

from stenod.api.deps import NamedUpload
from stenod.errors import ClientDisconnectedError, StenodError
from stenod.formats import DEFAULT_SUBTITLES, MEDIA_TYPES, ResponseFormat, SubtitleOptions, TimestampGranularity, render
from stenod.languages import language_name
from stenod.service.server_transcription import ServedTranscription, TranscriptionRequest, TranscriptionService
from stenod.transcript import Segment

DISCONNECT_POLL_S = 0.25


async def _watch_disconnect(request: Request, cancel: threading.Event) -> None:
    """Return only when the client is gone. (Not when ``cancel`` is set: the scheduler sets it too,
    on a deadline or a drain, and the work then ends with its own 408/503.)"""
    while True:
        if await request.is_disconnected():
            cancel.set()
            return
        await asyncio.sleep(DISCONNECT_POLL_S)


async def transcribe_or_cancel(
    request: Request, service: TranscriptionService, upload: NamedUpload, params: TranscriptionRequest
) -> ServedTranscription:
    """Transcribe, abandoning the work (and freeing its slot) if the client disconnects."""
    cancel = threading.Event()
    work = asyncio.create_task(service.transcribe(upload, params, cancel=cancel))
    watcher = asyncio.create_task(_watch_disconnect(request, cancel))
    try:
        done, _ = await asyncio.wait({work, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if work not in done:  # client gone while queued or running
            work.cancel()
            with contextlib.suppress(asyncio.CancelledError, StenodError):
                await work
            raise ClientDisconnectedError("client closed the connection")
        return work.result()
    finally:
        watcher.cancel()
        cancel.set()


def rendered_response(
    served: ServedTranscription, response_format: ResponseFormat, granularities: Sequence[TimestampGranularity],
    subtitles: SubtitleOptions = DEFAULT_SUBTITLES,
) -> Response:
    body = render(served.result.transcript, response_format, granularities=granularities, subtitles=subtitles)
    return Response(
        content=body,
        media_type=MEDIA_TYPES[response_format],
        headers={
            "X-Stenod-Model": served.model,
            "X-Stenod-Audio-Duration": f"{served.result.audio_duration_s:.3f}",
            "X-Stenod-Processing-Time": f"{served.result.processing_s:.3f}",
        },
    )


def language_detection_response(served: ServedTranscription) -> Response:
    """whisper.cpp's ``detect_language`` answer: the language (name and code), its probability and
    every language above 0.1 %."""
    result = served.result
    # Rounded first, then filtered: a probability of 0.00104 must not come out as 0.001.
    rounded = {code: round(p, 4) for code, p in (result.language_probabilities or {}).items()}
    probabilities = {code: p for code, p in rounded.items() if p > 0.001}
    body = {
        "detected_language": language_name(result.transcript.language),
        "detected_language_code": result.transcript.language,
        "detected_language_probability": round(result.transcript.language_probability, 4),
        "language_probabilities": probabilities,
    }
    return Response(content=json.dumps(body), media_type="application/json",
                    headers={"X-Stenod-Model": served.model})


def _sse(data: dict[str, object]) -> bytes:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


async def streamed_response(
    service: TranscriptionService, upload: NamedUpload, params: TranscriptionRequest
) -> StreamingResponse:
    """Server-sent events as OpenAI streams transcriptions: ``transcript.text.delta`` per segment,
    then ``transcript.text.done``. Errors before the first segment (busy, bad audio) are returned
    as ordinary error responses; later ones as an ``error`` event."""
    loop = asyncio.get_running_loop()
    cancel = threading.Event()
    queue: asyncio.Queue[Segment | None] = asyncio.Queue()

    def on_segment(segment: Segment) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, segment)

    work = asyncio.create_task(service.transcribe(upload, params, cancel=cancel, on_segment=on_segment))
    work.add_done_callback(lambda _: queue.put_nowait(None))
    first = await queue.get()
    if first is None and (error := work.exception()) is not None:
        raise error

    async def events() -> AsyncIterator[bytes]:
        item = first
        emitted = False
        try:
            while item is not None:
                text = item.text.lstrip() if not emitted else item.text
                emitted = True
                yield _sse({"type": "transcript.text.delta", "delta": text, "logprobs": None})
                item = await queue.get()
            try:
                served = await work
            except StenodError as exc:
                yield _sse({"type": "error", "error": {"message": exc.message, "type": exc.error_type, "code": exc.code}})
                return
            yield _sse({"type": "transcript.text.done", "text": served.result.transcript.text, "logprobs": None})
        finally:
            if not work.done():  # the client went away mid-stream
                cancel.set()
                work.cancel()
                with contextlib.suppress(BaseException):
                    await work

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
