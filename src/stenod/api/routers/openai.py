"""OpenAI-compatible audio and model routes: the official ``openai`` client works unchanged."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.responses import Response

from stenod.api.decoding import openai_chunking_or_raise
from stenod.api.deps import State, named_upload_or_raise, quota_of, refuse_when_draining, require_api_key
from stenod.api.params import OPENAI_FORMATS, build_request, parse_granularities
from stenod.api.responses import rendered_response, streamed_response, transcribe_or_cancel
from stenod.formats import parse_response_format_or_raise
from stenod.models.access import list_dir_models, unknown_model_error
from stenod.models.catalog import list_models
from stenod.transcript import Task

router = APIRouter(dependencies=[Depends(require_api_key)])


async def _audio_route(
    request: Request,
    state: State,
    *,
    task: Task,
    endpoint: str,
    file: UploadFile,
    model: str | None,
    language: str | None,
    prompt: str | None,
    response_format: str | None,
    temperature: float | None,
    timestamp_granularities: list[str] | None,
    stream: bool,
    chunking_strategy: str | None = None,
) -> Response:
    fmt = parse_response_format_or_raise(response_format, OPENAI_FORMATS)
    granularities = parse_granularities(timestamp_granularities, fmt)
    params = build_request(
        endpoint=endpoint, model=model, task=task, language=language, prompt=prompt, temperature=temperature,
        word_timestamps="word" in granularities, model_settings=state.settings.model,
    )
    params = replace(params, options=openai_chunking_or_raise(params.options, chunking_strategy),
                     quota=quota_of(request))
    upload = named_upload_or_raise(file)
    if stream:
        return await streamed_response(state.service, upload, params)
    served = await transcribe_or_cancel(request, state.service, upload, params)
    return rendered_response(served, fmt, granularities)


@router.post("/v1/audio/transcriptions", dependencies=[Depends(refuse_when_draining)])
async def create_transcription(
    request: Request,
    state: State,
    file: Annotated[UploadFile, File(description="Audio file in any container FFmpeg reads.")],
    model: Annotated[str | None, Form()] = None,
    language: Annotated[str | None, Form()] = None,
    prompt: Annotated[str | None, Form()] = None,
    response_format: Annotated[str | None, Form()] = None,
    temperature: Annotated[float | None, Form()] = None,
    timestamp_granularities: Annotated[list[str] | None, Form(alias="timestamp_granularities[]")] = None,
    stream: Annotated[bool, Form()] = False,
    chunking_strategy: Annotated[str | None, Form(description='"auto", or {"type": "server_vad", "threshold", "prefix_padding_ms", "silence_duration_ms"}: voice-activity detection with those settings.')] = None,
) -> Response:
    """Transcribe audio in its own language (OpenAI ``audio.transcriptions.create``)."""
    return await _audio_route(
        request, state, task=Task.TRANSCRIBE, endpoint="transcriptions", file=file, model=model, language=language,
        prompt=prompt, response_format=response_format, temperature=temperature,
        timestamp_granularities=timestamp_granularities, stream=stream, chunking_strategy=chunking_strategy,
    )


@router.post("/v1/audio/translations", dependencies=[Depends(refuse_when_draining)])
async def create_translation(
    request: Request,
    state: State,
    file: Annotated[UploadFile, File(description="Audio file in any container FFmpeg reads.")],
    model: Annotated[str | None, Form()] = None,
    prompt: Annotated[str | None, Form()] = None,
    response_format: Annotated[str | None, Form()] = None,
    temperature: Annotated[float | None, Form()] = None,
) -> Response:
    """Translate speech to English text (OpenAI ``audio.translations.create``)."""
    return await _audio_route(
        request, state, task=Task.TRANSLATE, endpoint="translations", file=file, model=model, language=None,
        prompt=prompt, response_format=response_format, temperature=temperature,
        timestamp_granularities=None, stream=False,
    )


def _model_object(name: str, created: int, owned_by: str) -> dict[str, object]:
    return {"id": name, "object": "model", "created": created, "owned_by": owned_by}


def _model_ids(state: State) -> list[tuple[str, str]]:
    manager = state.manager
    entries = list_models(default=manager.default_name, cache_dir=state.settings.model.cache_dir, include_hub=False)
    ids = [(e.name, e.source) for e in entries if e.available]
    extra = [(n, "configured") for n in manager.offered_names()]
    extra += [(n, "local") for n, _ in list_dir_models(manager.access.model_dirs)]
    extra += [(n, "local") for n in manager.loaded_names()]
    for name, source in extra:
        if name not in {i for i, _ in ids}:
            ids.append((name, source))
    return ids


@router.get("/v1/models")
def list_models_route(state: State) -> dict[str, object]:
    """Models this server can serve without a download (bundled and loaded ones)."""
    created = int(state.started_at)
    data = [_model_object(name, created, f"stenod-{source}") for name, source in _model_ids(state)]
    return {"object": "list", "data": data}


@router.get("/v1/models/{model_id:path}")
def get_model_route(model_id: str, state: State) -> dict[str, object]:
    for name, source in _model_ids(state):
        if name == model_id or (model_id == "whisper-1" and name == state.manager.default_name):
            return _model_object(model_id, int(state.started_at), f"stenod-{source}")
    raise unknown_model_error(model_id, [name for name, _ in _model_ids(state)])


