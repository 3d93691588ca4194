"""The durable job API (``/v1/jobs``): submit audio (upload or ``audio_url``) for transcription
in the background, poll or get a webhook, fetch the result in any format, cancel, delete.

Routes only translate HTTP: every check the synchronous routes make (parameters, model, empty
file, container header, duration, diarization channels) runs here *before* anything is stored or
queued, with the same status codes; then one :class:`~stenod.service.jobs.JobService` call. Jobs
belong to the caller's tenant (:class:`~stenod.api.deps.Principal`): another tenant's job id is
a 404, exactly like an id that never existed.
"""

from __future__ import annotations

import tempfile
from typing import Annotated, Any, BinaryIO, Literal

import anyio.to_thread
from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import UploadFile

from stenod.api.deps import CurrentPrincipal, State, named_upload_or_raise, refuse_when_draining
from stenod.api.params import OPENAI_FORMATS, build_request, parse_granularities
from stenod.errors import InputError, ServiceUnavailableError, UnsupportedParameterError
from stenod.formats import MEDIA_TYPES, parse_response_format_or_raise, render
from stenod.jobs.runtime import JobsRuntime
from stenod.service import parse_task_or_raise
from stenod.service.egress import check_url_or_raise, download_to
from stenod.service.jobs import JobParams
from stenod.storage.job_store import FINAL_STATUSES, JobRecord
from stenod.transcript import Task

router = APIRouter()

JOB_STATUSES = ("queued", "processing", "completed", "failed", "cancelled")
MAX_JSON_BODY_BYTES = 64 * 1024
MAX_IDEMPOTENCY_KEY_CHARS = 255
DEFAULT_LIST_LIMIT = 20


class JobURLRequest(BaseModel):
    """``POST /v1/jobs`` as JSON: the audio is fetched from ``audio_url`` (http/https, public
    addresses only, redirects checked, size and time limited)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    audio_url: str = Field(max_length=2048)
    model: str | None = None
    language: str | None = None
    prompt: str | None = None
    response_format: str | None = None
    temperature: float | None = None
    timestamp_granularities: list[str] | None = Field(default=None, alias="timestamp_granularities[]")
    task: str | None = None
    diarize: bool = False
    webhook_url: str | None = Field(default=None, max_length=2048)


def job_object(job: JobRecord) -> dict[str, object]:
    """The public shape of a job (``object: transcription.job``); never internal keys or leases."""
    webhook: dict[str, object] | None = None
    if job.webhook_url:
        webhook = {"url": job.webhook_url, "status": job.webhook_status, "attempts": job.webhook_attempts}
    return {
        "id": job.id,
        "object": "transcription.job",
        "status": job.status,
        "progress": round(job.progress, 4),
        "created_at": int(job.created_at),
        "started_at": int(job.started_at) if job.started_at is not None else None,
        "completed_at": int(job.completed_at) if job.completed_at is not None else None,
        "expires_at": int(job.expires_at),
        "model": job.model,
        "language": job.language,
        "duration": job.duration,
        "error": {"message": job.error_message, "code": job.error_code} if job.status == "failed" else None,
        "attempts": job.attempts,
        "task": job.params.get("task", "transcribe"),
        "webhook": webhook,
    }


def runtime_or_raise(state: State) -> JobsRuntime:
    runtime: JobsRuntime | None = getattr(state, "jobs", None)
    if runtime is None:
        reason = getattr(state, "jobs_error", None) or "the job store is not configured"
        raise ServiceUnavailableError(f"the job API is unavailable: {reason}")
    return runtime


def _str_field(form: Any, name: str) -> str | None:
    value = form.get(name)
    if value is None or isinstance(value, UploadFile):
        return None
    return str(value)


def _parse_float(value: str | None, param: str) -> float | None:
    if value is None or value.strip() == "":
        return None
    try:
        return float(value)
    except ValueError as exc:
        raise UnsupportedParameterError(f"{param} must be a number, got {value[:32]!r}", param=param) from exc


def _parse_bool(value: str | bool | None, param: str) -> bool:
    if value is None or isinstance(value, bool):
        return bool(value)
    text = value.strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off", ""):
        return False
    raise UnsupportedParameterError(f"{param} must be true or false", param=param)


def _check_idempotency_key(key: str | None) -> str | None:
    if key is None:
        return None
    if not key or len(key) > MAX_IDEMPOTENCY_KEY_CHARS or not key.isprintable():
        raise UnsupportedParameterError(
            f"Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY_CHARS} printable characters", param="Idempotency-Key"
        )
    return key


def _job_params(state: State, fields: dict[str, Any]) -> tuple[JobParams, str]:
    """Validate like the synchronous routes; returns the params and the canonical model name."""
    granularity_values = fields.get("timestamp_granularities")
    if fields.get("response_format") is not None:
        fmt = parse_response_format_or_raise(fields["response_format"], OPENAI_FORMATS)
        granularities = parse_granularities(granularity_values, fmt)
    else:  # the format is chosen when the result is fetched; word timings are kept for verbose_json
        granularities = parse_granularities(granularity_values, "verbose_json")
    task = parse_task_or_raise(fields.get("task") or Task.TRANSCRIBE)
    request = build_request(
        endpoint="jobs", model=fields.get("model"), task=task,
        language=fields.get("language") if task is Task.TRANSCRIBE else None, prompt=fields.get("prompt"),
        temperature=fields.get("temperature"), word_timestamps="word" in granularities,
        model_settings=state.settings.model,
    )
    model = state.manager.check_client_model_or_raise(request.model)
    params = JobParams(
        model=model, task=task, language=request.options.language, prompt=request.options.initial_prompt,
        temperature=request.options.temperature[0], word_timestamps=request.options.word_timestamps,
        diarize=bool(fields.get("diarize")),
    )
    return params, model


def _check_webhook(runtime: JobsRuntime, url: str | None) -> str | None:
    if not url:
        return None
    if runtime.settings.jobs.webhook_secret is None:
        raise UnsupportedParameterError(
            "webhook_url needs a signing secret on the server ([jobs] webhook_secret)", param="webhook_url"
        )
    check_url_or_raise(url, runtime.backends.policy, param="webhook_url")
    return url


async def _form_fields(request: Request) -> tuple[dict[str, Any], UploadFile]:
    form = await request.form()
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise InputError("send the audio as the multipart field 'file' (or JSON with audio_url)", param="file")
    granularities = [str(v) for v in form.getlist("timestamp_granularities[]") if not isinstance(v, UploadFile)]
    fields: dict[str, Any] = {
        name: _str_field(form, name)
        for name in ("model", "language", "prompt", "response_format", "task", "webhook_url")
    }
    fields["temperature"] = _parse_float(_str_field(form, "temperature"), "temperature")
    fields["diarize"] = _parse_bool(_str_field(form, "diarize"), "diarize")
    fields["timestamp_granularities"] = granularities or None
    return fields, upload


async def _json_fields(request: Request) -> dict[str, Any]:
    body = await request.body()
    if len(body) > MAX_JSON_BODY_BYTES:
        raise InputError(f"JSON body larger than {MAX_JSON_BODY_BYTES} bytes", param=None)
    try:
        parsed = JobURLRequest.model_validate_json(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first.get("loc", ())) or None
        raise InputError(f"{param}: {first.get('msg')}" if param else str(first.get("msg")), param=param) from exc
    fields = parsed.model_dump(by_alias=False)
    return fields


@router.post("/v1/jobs", status_code=202, dependencies=[Depends(refuse_when_draining)])
async def create_job(
    request: Request,
    state: State,
    principal: CurrentPrincipal,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> JSONResponse:
    """Queue a transcription: multipart ``file`` plus the fields of ``/v1/audio/transcriptions``
    (and ``task``, ``diarize``, ``webhook_url``), or JSON with ``audio_url``. 202 with the job;
    200 with the existing job for a repeated ``Idempotency-Key``."""
    runtime = runtime_or_raise(state)
    key = _check_idempotency_key(idempotency_key)
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    service = runtime.service
    if content_type == "application/json":
        fields = await _json_fields(request)
        params, model = _job_params(state, fields)
        webhook = await anyio.to_thread.run_sync(_check_webhook, runtime, fields.get("webhook_url"))
        job, created = await anyio.to_thread.run_sync(
            lambda: _submit_url(runtime, fields["audio_url"], params, principal.tenant_id, model, key, webhook)
        )
    elif content_type == "multipart/form-data":
        fields, file = await _form_fields(request)
        params, model = _job_params(state, fields)
        upload = named_upload_or_raise(file)  # type: ignore[arg-type]
        webhook = await anyio.to_thread.run_sync(_check_webhook, runtime, fields.get("webhook_url"))

        def submit_upload() -> tuple[JobRecord, bool]:
            service.check_audio_or_raise(upload, diarize=params.diarize, name=upload.name)  # type: ignore[arg-type]
            return service.submit(upload, params, tenant_id=principal.tenant_id, model=model,  # type: ignore[arg-type]
                                  idempotency_key=key, webhook_url=webhook)

        job, created = await anyio.to_thread.run_sync(submit_upload)
    else:
        raise InputError("send multipart/form-data with a 'file', or application/json with 'audio_url'",
                         param="Content-Type")
    return JSONResponse(job_object(job), status_code=202 if created else 200)


def _submit_url(runtime: JobsRuntime, url: str, params: JobParams, tenant_id: str, model: str,
                key: str | None, webhook: str | None) -> tuple[JobRecord, bool]:
    settings = runtime.settings
    service = runtime.service
    if key is not None:  # a retry of a known request must not download again
        existing = runtime.backends.store.get_by_idempotency_key(tenant_id, key)
        if existing is not None:
            return existing, False
    with tempfile.TemporaryFile(prefix="stenod-url-") as tmp:
        download_to(url, tmp, runtime.backends.policy, max_bytes=int(settings.audio.max_file_mb * 1_000_000),
                    timeout_s=settings.jobs.audio_url_timeout_s)
        tmp.seek(0)
        source: BinaryIO = tmp
        service.check_audio_or_raise(source, diarize=params.diarize, name="audio_url")
        return service.submit(source, params, tenant_id=tenant_id, model=model, idempotency_key=key,
                              webhook_url=webhook)


@router.get("/v1/jobs")
async def list_jobs(
    state: State,
    principal: CurrentPrincipal,
    status: Annotated[str | None, Query(max_length=16)] = None,
    limit: Annotated[int, Query(ge=1)] = DEFAULT_LIST_LIMIT,
    after: Annotated[str | None, Query(max_length=64)] = None,
) -> dict[str, object]:
    """The caller's jobs, newest first, ``after`` = the last id of the previous page."""
    runtime = runtime_or_raise(state)
    if status is not None and status not in JOB_STATUSES:
        raise UnsupportedParameterError(f"status must be one of {', '.join(JOB_STATUSES)}", param="status")
    if limit > runtime.settings.jobs.max_list_limit:
        raise UnsupportedParameterError(f"limit must be at most {runtime.settings.jobs.max_list_limit}", param="limit")
    jobs, has_more = await anyio.to_thread.run_sync(
        lambda: runtime.service.list(tenant_id=principal.tenant_id, status=status, limit=limit, after=after)
    )
    data = [job_object(j) for j in jobs]
    return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None, "has_more": has_more}


@router.get("/v1/jobs/{job_id}")
async def get_job(job_id: str, state: State, principal: CurrentPrincipal) -> dict[str, object]:
    runtime = runtime_or_raise(state)
    job = await anyio.to_thread.run_sync(lambda: runtime.service.get_or_raise(job_id, tenant_id=principal.tenant_id))
    return job_object(job)


@router.get("/v1/jobs/{job_id}/result")
async def get_job_result(
    job_id: str,
    state: State,
    principal: CurrentPrincipal,
    response_format: Annotated[str | None, Query(max_length=32)] = None,
) -> Response:
    """The transcript in ``json`` (default), ``verbose_json``, ``text``, ``srt`` or ``vtt``; 409 until
    the job is completed."""
    runtime = runtime_or_raise(state)
    fmt = parse_response_format_or_raise(response_format, OPENAI_FORMATS)
    job, transcript, model = await anyio.to_thread.run_sync(
        lambda: runtime.service.result_or_raise(job_id, tenant_id=principal.tenant_id)
    )
    granularities: tuple[Literal["segment", "word"], ...] = (
        ("segment", "word") if job.params.get("word_timestamps") else ("segment",)
    )
    body = render(transcript, fmt, granularities=granularities)
    return Response(content=body, media_type=MEDIA_TYPES[fmt], headers={"X-Stenod-Model": model})


@router.post("/v1/jobs/{job_id}/cancel")
async def cancel_job(job_id: str, state: State, principal: CurrentPrincipal) -> dict[str, object]:
    """Queued: cancelled at once, never runs. Processing: stops at the next window. Final: unchanged."""
    runtime = runtime_or_raise(state)
    job = await anyio.to_thread.run_sync(
        lambda: runtime.service.cancel_or_raise(job_id, tenant_id=principal.tenant_id)
    )
    return job_object(job)


@router.delete("/v1/jobs/{job_id}", status_code=204)
async def delete_job(job_id: str, state: State, principal: CurrentPrincipal) -> Response:
    """Delete the job, its audio and its result; afterwards the id is a 404."""
    runtime = runtime_or_raise(state)
    await anyio.to_thread.run_sync(lambda: runtime.service.delete_or_raise(job_id, tenant_id=principal.tenant_id))
    return Response(status_code=204)


__all__ = ["FINAL_STATUSES", "job_object", "router"]
