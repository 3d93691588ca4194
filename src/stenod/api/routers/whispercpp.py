"""whisper.cpp server compatible routes, so its curl examples and clients work verbatim:
``POST /inference`` and ``POST /load``."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated

import anyio.to_thread
from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.responses import Response

from stenod.api.decoding import WhisperCppFields, flag
from stenod.api.deps import (
    State,
    named_upload_or_raise,
    quota_of,
    refuse_when_draining,
    require_admin,
    require_api_key,
)
from stenod.api.params import build_request
from stenod.api.responses import language_detection_response, rendered_response, transcribe_or_cancel
from stenod.errors import ModelLoadError, UnsupportedParameterError
from stenod.formats import TimestampGranularity, parse_response_format_or_raise
from stenod.transcript import Task

router = APIRouter(dependencies=[Depends(require_api_key)])


@router.post("/inference", dependencies=[Depends(refuse_when_draining)])
async def inference(
    request: Request,
    state: State,
    file: Annotated[UploadFile, File()],
    response_format: Annotated[str | None, Form()] = None,
    language: Annotated[str | None, Form()] = None,
    translate: Annotated[str | None, Form()] = None,
    temperature: Annotated[float | None, Form()] = None,
    prompt: Annotated[str | None, Form()] = None,
    no_timestamps: Annotated[str | None, Form()] = None,
    model: Annotated[str | None, Form()] = None,
    diarize: Annotated[str | None, Form()] = None,
    detect_language: Annotated[str | None, Form(description="true: only identify the language (with probabilities).")] = None,
    offset_t: Annotated[int | None, Form(description="Start this many milliseconds into the audio.")] = None,
    duration: Annotated[int | None, Form(description="Transcribe at most this many milliseconds (0 = to the end).")] = None,
    max_len: Annotated[int | None, Form(description="At most this many characters per srt/vtt cue; 1 = one word per cue.")] = None,
    split_on_word: Annotated[str | None, Form(description="Accepted; cues are always cut at word boundaries.")] = None,
    beam_size: Annotated[int | None, Form()] = None,
    temperature_inc: Annotated[float | None, Form(description="Fallback step; 0 = no fallback.")] = None,
    logprob_thold: Annotated[float | None, Form()] = None,
    no_speech_thold: Annotated[float | None, Form()] = None,
    entropy_thold: Annotated[float | None, Form(description="<= 0 turns the repetition check off.")] = None,
    vad: Annotated[str | None, Form()] = None,
    vad_threshold: Annotated[float | None, Form()] = None,
    vad_min_silence_duration_ms: Annotated[int | None, Form()] = None,
    vad_speech_pad_ms: Annotated[int | None, Form()] = None,
    token_timestamps: Annotated[str | None, Form()] = None,
) -> Response:
    """whisper.cpp's transcription endpoint, with its decoding fields (see api/decoding.py); other
    whisper.cpp fields are accepted and ignored."""
    fmt = parse_response_format_or_raise(response_format, ("json", "text", "srt", "vtt", "verbose_json"))
    fields = WhisperCppFields(
        offset_t=offset_t, duration=duration, max_len=max_len, beam_size=beam_size, temperature_inc=temperature_inc,
        logprob_thold=logprob_thold, no_speech_thold=no_speech_thold, entropy_thold=entropy_thold, vad=vad,
        vad_threshold=vad_threshold, vad_min_silence_duration_ms=vad_min_silence_duration_ms,
        vad_speech_pad_ms=vad_speech_pad_ms, token_timestamps=token_timestamps,
    )
    subtitles = fields.subtitles_or_raise()
    params = build_request(
        endpoint="inference", model=model, task=Task.TRANSLATE if flag(translate) else Task.TRANSCRIBE,
        language=language, prompt=prompt, temperature=temperature, word_timestamps=False,
        model_settings=state.settings.model, without_timestamps=flag(no_timestamps), diarize=flag(diarize),
    )
    params = replace(params, options=fields.apply_or_raise(params.options, temperature=temperature),
                     detect_language_only=flag(detect_language), quota=quota_of(request))
    upload = named_upload_or_raise(file)
    served = await transcribe_or_cancel(request, state.service, upload, params)
    if params.detect_language_only:
        return language_detection_response(served)
    words = flag(token_timestamps) and fmt == "verbose_json"
    granularities: tuple[TimestampGranularity, ...] = ("segment", "word") if words else ("segment",)
    return rendered_response(served, fmt, granularities, subtitles)


@router.post("/load", dependencies=[Depends(require_admin)])
async def load_model(state: State, model: Annotated[str, Form()]) -> dict[str, object]:
    """Load a model (a name, a model folder or a ggml file) and make it the default. If loading
    fails, the current model keeps serving and the error is returned. Needs an admin key: an
    admin is trusted like the operator, so paths and hub names are allowed here."""
    name = model.strip()
    if not name:
        raise UnsupportedParameterError("model must name a model or a path", param="model")
    try:
        await anyio.to_thread.run_sync(state.manager.switch_default, name)
    except ModelLoadError as exc:  # the caller named weights that do not load: their error, not ours
        raise UnsupportedParameterError(exc.message, param="model") from exc
    return {"status": "ok", "model": name, "loaded": state.manager.loaded_names()}
