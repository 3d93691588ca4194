"""The one way in: settings plus per-call choices become :class:`TranscriptionOptions`, and settings
become a loaded :class:`Engine` (or a :class:`ModelManager` that loads engines on demand).

Every entry point goes through here: the HTTP API (``api/params.py``, ``api/app.py``),
``stenod transcribe``, ``stenod batch`` (its worker processes too), ``stenod bench`` and job workers.
So a default, a validation rule or a thread policy is written once, and every entry point gets the
same answer and the same error for the same input.

A job worker, for example::

    settings = load_settings()
    engine = load_engine(settings)                       # default model, every core for one call
    options = build_options(settings.model, language="de", task="translate")
    result = transcribe_source(engine, path, options, max_duration_s=settings.audio.max_duration_s)

Layering: this module sits above ``engines``, ``models`` and ``scheduler`` and below ``api``,
``cli``, ``batch``, ``bench`` and ``jobs``; nothing below it imports it.
"""

from __future__ import annotations

from collections.abc import Callable

from stenod.engines.base import Engine, TranscriptionOptions, check_model_supports_or_raise, temperature_schedule
from stenod.engines.factory import (
    CpuPlan,
    cpu_batch_clips,
    cpu_count,
    create_engine,
    prepare_model_or_raise,
    runs_on_cpu,
)
from stenod.engines.memory import keep_freed_memory
from stenod.errors import UnsupportedParameterError
from stenod.languages import normalize_language_or_raise
from stenod.models.access import ModelAccess
from stenod.models.registry import ResolvedModel, resolve_model_or_raise
from stenod.scheduler.model_manager import EngineFactory, ModelManager
from stenod.settings import ModelSettings, Settings
from stenod.transcript import Task

__all__ = [
    "SINGLE_CALL_MAX_THREADS",
    "EngineFactory",
    "build_model_manager",
    "build_options",
    "check_supported_or_raise",
    "engine_factory",
    "job_worker_cpu_plan",
    "load_engine",
    "model_access",
    "parse_task_or_raise",
    "prepare_model",
    "resolve_model",
    "server_cpu_plan",
    "single_call_threads",
    "threads_per_process",
]

SINGLE_CALL_MAX_THREADS = 8
"""One call at a time (``stenod transcribe``, a job worker) gets every core up to this many; more
threads in one greedy decode stop paying off (docs/BENCHMARKS.md)."""


# -- options -------------------------------------------------------------------------------------
def parse_task_or_raise(task: Task | str) -> Task:
    """``"transcribe"`` / ``"translate"`` (any case) as a :class:`Task`.

    Raises:
        UnsupportedParameterError: any other value, naming ``task``.
    """
    if isinstance(task, Task):
        return task
    try:
        return Task(task.strip().lower())
    except ValueError:
        raise UnsupportedParameterError(
            f"task {task!r} is not supported; use transcribe or translate", param="task"
        ) from None


def build_options(
    model_settings: ModelSettings,
    *,
    language: str | None = None,
    task: Task | str = Task.TRANSCRIBE,
    temperature: float | None = None,
    prompt: str | None = None,
    word_timestamps: bool = False,
    vad: bool | None = None,
    without_timestamps: bool = False,
    batch_size: int = 0,
) -> TranscriptionOptions:
    """Decoding options for one call: the per-call choices on top of the configured defaults
    (``beam_size``, ``vad_min_duration_s`` come from ``model_settings``).

    Args:
        model_settings: ``settings.model``.
        language: an ISO-639-1 code in any case, or ``None`` / ``""`` / ``auto`` / ``detect`` to
            detect it.
        task: transcribe, or translate to English.
        temperature: start temperature in [0, 1] (``None`` = 0); decoding falls back in 0.2 steps.
        prompt: initial prompt (vocabulary, style); empty means none.
        word_timestamps: word-level times (slower).
        vad: voice-activity detection; ``None`` turns it on for audio longer than
            ``model_settings.vad_min_duration_s``.
        without_timestamps: decode without timestamp tokens (whisper.cpp's ``no_timestamps``).
        batch_size: > 1 decodes that many VAD-cut windows of one file together (faster-whisper).

    Raises:
        UnknownLanguageError: ``language`` is not a code Whisper knows.
        UnsupportedParameterError: a bad ``task`` or ``temperature``, naming the parameter.
    """
    start = 0.0 if temperature is None else temperature
    if not 0.0 <= start <= 1.0:
        raise UnsupportedParameterError(f"temperature must be between 0 and 1, got {start:g}", param="temperature")
    return TranscriptionOptions(
        language=normalize_language_or_raise(language),
        task=parse_task_or_raise(task),
        beam_size=model_settings.beam_size,
        temperature=temperature_schedule(start),
        initial_prompt=prompt or None,
        word_timestamps=word_timestamps,
        vad=vad,
        vad_min_duration_s=model_settings.vad_min_duration_s,
        without_timestamps=without_timestamps,
        batch_size=batch_size,
    )


def check_supported_or_raise(engine: Engine, options: TranscriptionOptions) -> None:
    """Fail before any audio is decoded when ``engine``'s model cannot do what ``options`` ask
    (translation or a non-English language on an English-only model).

    Raises:
        UnsupportedParameterError: naming ``task`` or ``language``.
    """
    info = engine.info()
    check_model_supports_or_raise(options, model_name=info.model, multilingual=info.multilingual)


# -- threads -------------------------------------------------------------------------------------
def single_call_threads(model_settings: ModelSettings, *, cores: int | None = None) -> int:
    """Threads for an engine that runs one call at a time: ``model_settings.threads`` when set,
    else every core up to :data:`SINGLE_CALL_MAX_THREADS`."""
    return model_settings.threads or min(SINGLE_CALL_MAX_THREADS, cores or cpu_count())


def threads_per_process(requested: int, *, processes: int, cores: int | None = None) -> int:
    """Threads for each of ``processes`` worker processes sharing the machine (batch workers, Celery
    job workers): ``requested`` when > 0, else ``cores // processes`` (at least 1)."""
    return requested if requested > 0 else max(1, (cores or cpu_count()) // max(1, processes))


def server_cpu_plan(settings: Settings, *, cores: int | None = None) -> CpuPlan:
    """Slots x threads for ``stenod serve`` from ``server.slots`` and ``model.threads`` (0 = choose;
    see :func:`stenod.engines.plan_cpu`); the torch engine on GPUs gets 32 slots per GPU unless
    slots are set (:func:`stenod.engines.factory.plan_server_slots`)."""
    from stenod.engines.factory import plan_server_slots

    return plan_server_slots(settings.model, cores=cores or cpu_count(), slots=settings.server.slots,
                             threads=settings.model.threads)


def job_worker_cpu_plan(settings: Settings, *, threads: int, jobs_at_once: int) -> CpuPlan:
    """Threads and concurrency for one job worker process running ``jobs_at_once`` jobs over one
    model copy, with the server's window batches (a long file's first-pass windows share decodes,
    across the jobs of the process too), so a job costs what the same request costs there."""
    return CpuPlan(threads=threads, concurrency=jobs_at_once, batch_size=cpu_batch_clips(settings.model, slots=0))


# -- models and engines --------------------------------------------------------------------------
def resolve_model(settings: Settings, name: str | None = None) -> ResolvedModel:
    """Weights on disk for ``name`` (default: ``settings.model.name``): bundled, a local folder or
    ggml file, or the hub unless offline. Assembles bundled weights on first use.

    Raises:
        ModelNotFoundError: unknown name, missing path, or not downloadable offline.
    """
    return resolve_model_or_raise(name or settings.model.name, cache_dir=settings.model.cache_dir,
                                  offline=settings.offline)


def prepare_model(settings: Settings, name: str | ResolvedModel | None = None) -> ResolvedModel:
    """:func:`resolve_model`, then whatever one-time preparation the configured engine needs (the
    cached ggml conversion for whisper.cpp). Do it in a parent process so workers only load.

    Raises:
        ModelNotFoundError, ModelLoadError, UnsupportedParameterError.
    """
    resolved = name if isinstance(name, ResolvedModel) else resolve_model(settings, name)
    return prepare_model_or_raise(resolved, settings.model)


def load_engine(
    settings: Settings,
    *,
    model: str | ResolvedModel | None = None,
    threads: int | None = None,
    concurrency: int = 1,
) -> Engine:
    """Resolve ``model`` (default: ``settings.model.name``) and load its engine as configured in
    ``settings.model`` (engine, device, compute type). Blocking: seconds for large models.

    Args:
        model: a name or path, or an already-resolved model (e.g. resolved once by a parent process).
        threads: intra-op threads per call; ``None`` uses :func:`single_call_threads`.
        concurrency: calls that may run at once on this engine, sharing one copy of the weights.

    Raises:
        ModelNotFoundError: the model cannot be found.
        ModelLoadError: the weights could not be loaded or converted.
        UnsupportedParameterError: the configured engine cannot run this model format.
    """
    _keep_freed_memory(settings)
    resolved = model if isinstance(model, ResolvedModel) else resolve_model(settings, model)
    return create_engine(
        resolved, settings.model,
        threads=single_call_threads(settings.model) if threads is None else threads,
        concurrency=concurrency,
    )


def _keep_freed_memory(settings: Settings) -> None:
    """CPU engines reuse freed buffers (:mod:`stenod.engines.memory`). Not on GPU hosts, where
    the engines' large buffers live on the device and the host allocator was measured as is."""
    if runs_on_cpu(settings.model):
        keep_freed_memory(settings.model.keep_freed_memory_mb)


def engine_factory(settings: Settings, plan: CpuPlan) -> EngineFactory:
    """What a :class:`ModelManager` calls to load a resolved model: every model gets ``plan.threads``
    threads per call and ``plan.concurrency`` concurrent calls over one copy of the weights."""

    def factory(model: ResolvedModel) -> Engine:
        return create_engine(
            model, settings.model, threads=plan.threads, concurrency=plan.concurrency, batch_size=plan.batch_size
        )

    return factory


def model_access(settings: Settings) -> ModelAccess:
    """Which model names clients may send, from ``settings.model`` (see :mod:`stenod.models.access`)."""
    m = settings.model
    return ModelAccess(
        configured=frozenset({m.name, *m.served}), model_dirs=tuple(m.model_dirs),
        allow_paths=m.allow_request_paths, allow_downloads=m.allow_request_downloads and not settings.offline,
    )


def build_model_manager(
    settings: Settings,
    plan: CpuPlan,
    *,
    factory: EngineFactory | None = None,
    on_load: Callable[[str, float], None] | None = None,
    on_load_error: Callable[[str], None] | None = None,
) -> ModelManager:
    """The server's (or a long-lived worker's) model manager, configured from ``settings.server``
    and the client model policy (:func:`model_access`).

    Args:
        plan: threads and concurrency each loaded engine gets (:func:`server_cpu_plan`).
        factory: loads an engine for a resolved model; default :func:`engine_factory`. Tests pass
            a fast fake here (``create_app(settings, engine_factory=...)`` forwards it).
        on_load: called with (model name, seconds) after each load, e.g. for metrics.
        on_load_error: called with the model name when a load fails for an operator's reason.
    """
    _keep_freed_memory(settings)  # before the server's threads start
    return ModelManager(
        settings.model, factory or engine_factory(settings, plan), offline=settings.offline,
        max_loaded=settings.server.max_loaded_models, idle_ttl_s=settings.server.model_idle_ttl_s,
        on_load=on_load, on_load_error=on_load_error, access=model_access(settings),
    )
