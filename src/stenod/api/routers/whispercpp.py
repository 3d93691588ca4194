"""whisper.cpp server compatible routes, so its curl examples and clients work verbatim:
``POST /inference`` and ``POST /load``."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated

import anyio.to_thread
from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.responses import Response

from stenod.api.deps import (
    State,
    named_upload_or_raise,
    quota_of,
    refuse_when_draining,
    require_admin,
    require_api_key,
)
from stenod.api.params import build_request, parse_response_format
from stenod.api.responses import rendered_response, transcribe_or_cancel
from stenod.errors import ModelLoadError, UnsupportedParameterError

router = APIRouter(dependencies=[Depends(require_api_key)])


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


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
) -> Response:
    """whisper.cpp's transcription endpoint (other whisper.cpp fields are accepted and ignored)."""
    fmt = parse_response_format(response_format, ("json", "text", "srt", "vtt", "verbose_json"))
    params = build_request(
        endpoint="inference", model=model, task="translate" if _flag(translate) else "transcribe",
        language=language, prompt=prompt, temperature=temperature, word_timestamps=False,
        model_settings=state.settings.model, without_timestamps=_flag(no_timestamps), diarize=_flag(diarize),
    )
    params = replace(params, quota=quota_of(request))
    upload = named_upload_or_raise(file)
    served = await transcribe_or_cancel(request, state.service, upload, params)
    return rendered_response(served, fmt, ("segment",))


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
