"""The one settings object. Sources, highest priority first: CLI flags (passed as overrides),
environment variables ``STENOD_*`` (nested with ``__``, e.g. ``STENOD_SERVER__PORT``), an optional
TOML file (``--config`` or ``STENOD_CONFIG_FILE``), then the defaults below.

Built once at start-up and passed down; no other module reads the environment.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

EngineName = Literal["auto", "faster-whisper", "whisper.cpp", "torch"]
DEVICE_PATTERN = r"^(auto|cpu|all|cuda(:\d+)?(,cuda(:\d+)?)*)$"
"""``auto``, ``cpu``, ``cuda``, ``cuda:N``, a comma list of CUDA devices, or ``all`` GPUs."""
ComputeType = Literal["auto", "int8", "int8_float16", "int8_float32", "float16", "bfloat16", "float32"]
LogFormat = Literal["json", "console"]


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "stenod"


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "stenod"


class ModelSettings(BaseModel):
    model_config = ConfigDict(use_attribute_docstrings=True)

    name: str = "base"
    """Default model: a bundled name (``base``, ``tiny.en``), a hub name (``small``, ``large-v3``,
    ``Systran/faster-whisper-small``), a CTranslate2 model folder, or a ggml ``.bin`` file."""
    engine: EngineName = "auto"
    """``auto`` picks whisper.cpp for ggml files, ``torch`` for transformers folders or when a
    usable CUDA GPU and PyTorch are present, and faster-whisper otherwise."""
    device: str = Field(default="auto", pattern=DEVICE_PATTERN)
    """``auto`` uses CUDA when a usable GPU is present, else the CPU; ``cuda:0,cuda:1`` or ``all``
    runs one torch-engine worker per GPU."""
    compute_type: ComputeType = "auto"
    """``auto``: int8 on CPU (about 2x float32 at the same accuracy here), float16 on CUDA."""
    threads: int = Field(default=0, ge=0)
    """CPU threads per inference slot; 0 picks from the core count (see docs/ARCHITECTURE.md)."""
    cache_dir: Path = Field(default_factory=_default_cache_dir)
    """Where assembled bundled weights and hub downloads live."""
    offline: bool = False
    """Never reach the model hub; also implied by ``HF_HUB_OFFLINE=1``."""
    beam_size: int = Field(default=1, ge=1, le=16)
    """1 is greedy decoding: on CPU about 1.5x faster than beam 5 for a small WER cost."""
    vad_min_duration_s: float = Field(default=30.0, ge=0)
    """Voice-activity detection is on by default for audio longer than this."""
    trim_encoder: bool = True
    """faster-whisper: clips under 30 s run the encoder on their audio only (a guarded fallback
    redoes a bad result on the full window); ``false`` restores the ordinary full-window path."""
    keep_freed_memory_mb: int = Field(default=512, ge=0, le=2047)
    """CPU engines on glibc: freed buffers stay in the process for the next call, up to this many
    MiB free at the heap's top (one malloc arena, no mmap per buffer); 0 keeps glibc's defaults,
    under which a long file spent a fifth of its CPU time on page faults (docs/ARCHITECTURE.md)."""
    parallel_windows: bool = False
    """faster-whisper: decode long audio as VAD windows in parallel on every worker (with
    ``trim_encoder``); off by default, it measured slower and less accurate on 2 cores."""
    batch_clips: int = Field(default=0, ge=0, le=64)
    """faster-whisper server on CPU: short clips of concurrent requests decoded together in one
    call; 0 picks 8 (measured, docs/ARCHITECTURE.md), 1 decodes each request on its own. The
    server runs this many requests per CTranslate2 worker at once."""
    batch_wait_ms: float = Field(default=3.0, ge=0, le=100)
    """Longest a short clip waits for batch company when a CTranslate2 worker is idle."""
    served: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Models clients may name besides the default and the bundled ones, comma-separated (names,
    hub names or paths: the operator's choice, listed in ``GET /v1/models``)."""
    model_dirs: Annotated[list[Path], NoDecode] = Field(default_factory=list)
    """Folders, comma-separated, whose entries (CTranslate2 model folders, ggml ``.bin`` files)
    clients may name by their plain entry name."""
    allow_request_paths: bool = False
    """Let API clients name any file-system path as ``model`` (off: only offered names)."""
    allow_request_downloads: bool = False
    """Let API clients name hub models, downloaded on first use (off: only offered names)."""

    @field_validator("served", "model_dirs", mode="before")
    @classmethod
    def _split_model_csv(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return value


class AudioSettings(BaseModel):
    model_config = ConfigDict(use_attribute_docstrings=True)

    max_duration_s: float = Field(default=4 * 3600, gt=0)
    """Longest audio accepted, checked from the container header before decoding."""
    max_file_mb: float = Field(default=200.0, gt=0)
    """Largest upload accepted by the server, enforced while receiving."""
    chunk_s: float = Field(default=300.0, ge=30.0)
    """Audio longer than this is decoded as a stream and transcribed in chunks of at most this many
    seconds, cut at quiet points, so memory does not grow with duration (docs/RELIABILITY.md)."""


class ServerSettings(BaseModel):
    model_config = ConfigDict(use_attribute_docstrings=True)

    host: str = "127.0.0.1"
    """Bind address; loopback by default, ``0.0.0.0`` to serve the network."""
    port: int = Field(default=8080, ge=0, le=65535)
    """TCP port (whisper.cpp's server default)."""
    slots: int = Field(default=0, ge=0)
    """Concurrent inference slots sharing one copy of the weights; 0 picks from the cores."""
    queue_size: int = Field(default=32, ge=0)
    """Requests that may wait for a slot; beyond this the server answers 429 with Retry-After."""
    request_timeout_s: float = Field(default=600.0, gt=0)
    """Deadline for one synchronous request, queueing included (408 when exceeded)."""
    drain_timeout_s: float = Field(default=30.0, ge=0)
    """On SIGTERM, how long running requests get to finish; then they are answered 503 and the
    process exits (queued requests get 503 at once)."""
    header_timeout_s: float = Field(default=10.0, gt=0)
    """A connection must deliver a request's headers within this many seconds, else 408 and close."""
    body_idle_timeout_s: float = Field(default=30.0, gt=0)
    """Longest pause while a request body arrives, else 408 and close."""
    memory_budget_mb: float = Field(default=0.0, ge=0)
    """Memory that transcription requests may reserve together (estimated per request from its
    duration, at most one chunk). A request that does not fit waits, first come first served and
    holding no slot, until memory is given back; one larger than the whole budget, or still waiting
    after ``memory_wait_s``, gets 429 + Retry-After. 0 = no budget."""
    memory_wait_s: float = Field(default=60.0, ge=0)
    """Longest wait for the memory budget (at most ``queue_size`` requests wait at once)."""
    max_connections: int = Field(default=1000, ge=1)
    """Open connections at most; one more gets 503 and is closed (keep it under the descriptor limit)."""
    max_connections_per_client: int = Field(default=64, ge=1)
    """Open connections from one client address at most (behind a proxy, that is the proxy)."""
    preload: bool = True
    """Load the default model at start-up (``/ready`` is 503 until it is loaded)."""
    model_idle_ttl_s: float = Field(default=0.0, ge=0)
    """Unload a non-default model after this many idle seconds; 0 keeps models loaded."""
    max_loaded_models: int = Field(default=2, ge=1)
    """Models kept in memory at once; the least recently used idle one is unloaded first."""
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    """Bearer keys accepted by the API, comma-separated; empty means no authentication."""
    admin_api_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    """Bearer keys that may also use admin routes (``POST /load``), comma-separated; they are
    accepted wherever ``api_keys`` are. Without one, ``/load`` is refused (403)."""
    key_store: bool = False
    """Also accept keys made with ``stenod keys`` (stored hashed in the jobs database, with per-key
    limits); authentication is then required."""
    key_cache_s: float = Field(default=0.0, ge=0)
    """0: every request looks its key up in the database (one indexed query), so a revoked or
    expired key is refused at once on every server. Above 0, a valid key is remembered this long:
    a revoked key keeps working up to this many seconds on each server that saw it."""
    rate_limit_storage_url: str = ""
    """Where per-key limit counters live: empty = this process; ``redis://host:6379/0`` shares
    them between API servers."""
    protect_metrics: bool = False
    """``/metrics`` needs an API key (when authentication is on)."""
    protect_docs: bool = False
    """``/docs``, ``/redoc`` and ``/openapi.json`` need an API key (when authentication is on)."""
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Origins allowed to call the API from a browser, comma-separated; empty disables CORS."""
    print_progress: bool = False
    """Log transcription progress of each request."""
    web_ui: bool = True
    """Serve the browser page at ``/`` (upload, follow and read transcripts through the job API;
    needs ``[jobs] enabled``)."""

    @field_validator("api_keys", "admin_api_keys", "cors_origins", mode="before")
    @classmethod
    def _split_csv(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return value


class LogSettings(BaseModel):
    model_config = ConfigDict(use_attribute_docstrings=True)

    level: Literal["debug", "info", "warning", "error"] = "info"
    """Lowest level logged by ``stenod serve``."""
    format: LogFormat = "json"
    """``json``: one JSON object per line with the request id; ``console`` for humans."""


class BatchSettings(BaseModel):
    """``stenod batch``: directory transcription (env ``STENOD_BATCH__*``, TOML ``[batch]``)."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    workers: int = Field(default=0, ge=0)
    """Local worker processes, each loading the model once; 0 picks from the cores (one per
    core on small machines, see docs/BENCHMARKS.md "Batch pipeline")."""
    threads: int = Field(default=0, ge=0)
    """CPU threads per worker; 0 means cores // workers."""
    batch_size: int = Field(default=0, ge=0)
    """> 1 runs one process with faster-whisper's batched pipeline (windows of one file decoded
    together) instead of a worker pool; 0 uses the worker pool."""
    formats: str = "json,srt,vtt,txt"
    """Output formats, comma-separated: txt, json, verbose_json, srt, vtt, tsv."""
    server_concurrency: int = Field(default=2, ge=1)
    """``--server`` mode: requests in flight at once."""
    server_retries: int = Field(default=5, ge=0)
    """``--server`` mode: retries per file on 429/503/connection errors (not on other errors)."""
    server_backoff_s: float = Field(default=1.0, gt=0)
    """First retry delay when the server sends no Retry-After; doubles per attempt."""
    server_max_backoff_s: float = Field(default=60.0, gt=0)
    """Cap on any single retry delay, Retry-After included."""
    server_timeout_s: float = Field(default=900.0, gt=0)
    """Per-request timeout in ``--server`` mode (upload, queueing and transcription)."""
    server_api_key: SecretStr | None = None
    """Bearer key sent in ``--server`` mode when the server requires one."""


class JobsSettings(BaseModel):
    """Durable jobs (``/v1/jobs``): stores, queue, workers, webhooks (env ``STENOD_JOBS__*``, TOML
    ``[jobs]``). With every URL empty, ``stenod serve`` runs jobs itself on SQLite and a local
    folder under ``data_dir``; see docs/SCALING.md for the production set-up."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    enabled: bool = True
    """Serve the job API (``/v1/jobs``) and, in in-process mode, run jobs inside ``stenod serve``."""
    data_dir: Path = Field(default_factory=_default_data_dir)
    """Folder for the default SQLite job store (``jobs.db``) and local blob store (``blobs/``)."""
    database_url: str = ""
    """Job store: empty = SQLite in ``data_dir``; ``sqlite:///path/jobs.db`` or
    ``postgresql://user:password@host:5432/db`` (the psycopg driver is added for you)."""
    blob_url: str = ""
    """Where uploaded audio and results live: empty = ``data_dir/blobs``; ``file:///path`` or
    ``s3://bucket/prefix``."""
    s3_endpoint_url: str | None = None
    """S3-compatible endpoint (MinIO, Ceph, R2...); unset uses AWS. Credentials come from the
    standard AWS chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, profile, instance role)."""
    s3_region: str = "us-east-1"
    """Region for S3 requests."""
    broker_url: str = ""
    """Queue: empty = in-process workers inside ``stenod serve``; ``redis://host:6379/0`` or
    ``amqp://user:password@host:5672//`` = Celery, with ``stenod worker`` processes."""
    queue_name: str = "stenod.jobs"
    """Celery queue (Redis list / RabbitMQ queue) the API publishes to and workers consume."""
    worker_pool: Literal["threads", "prefork"] = "threads"
    """``stenod worker``: ``threads`` runs its ``--concurrency`` jobs in one process over one model
    copy (less CPU and memory); ``prefork`` gives each job a process with its own copy, so a job
    that crashes its process takes no other job with it."""
    workers: int = Field(default=1, ge=0)
    """In-process mode: jobs run at once inside ``stenod serve`` (each also takes an inference
    slot, shared with synchronous requests); 0 runs none (an API-only server)."""
    max_attempts: int = Field(default=3, ge=1)
    """A job whose worker dies (crash, OOM kill) this many times is failed, not retried again."""
    lease_s: float = Field(default=60.0, ge=5)
    """A running job's lease: workers renew it every third of this; a job whose lease ran out
    (its worker died) is given to another worker."""
    shutdown_timeout_s: float = Field(default=120.0, gt=0)
    """``stenod worker`` on SIGTERM: how long a running job has to reach its next window and go
    back to the queue before the worker process exits anyway (the job is then run again once its
    lease runs out, counting an attempt)."""
    visibility_timeout_s: float = Field(default=6 * 3600, gt=0)
    """Redis broker: seconds before an unacknowledged message is delivered again. Must exceed the
    longest job (4 h of audio by default); RabbitMQ redelivers on disconnect instead."""
    retention_s: float = Field(default=7 * 24 * 3600, gt=0)
    """Audio and results of a job are deleted this many seconds after it ends (or is created,
    if it never ends); the job then answers 404."""
    sweep_interval_s: float = Field(default=60.0, gt=0)
    """How often the API deletes expired jobs and re-publishes jobs the broker lost."""
    republish_after_s: float = Field(default=300.0, gt=0)
    """Celery mode: a job still queued this long after it was last published is published again
    (a broker that restarted without persistence loses messages; duplicates are harmless)."""
    max_list_limit: int = Field(default=100, ge=1)
    """Largest ``limit`` accepted by ``GET /v1/jobs``."""
    webhook_secret: SecretStr | None = None
    """Standard Webhooks signing secret (``whsec_`` + base64, or any string); while unset, jobs
    with a ``webhook_url`` are refused (400) rather than sent unsigned."""
    webhook_max_attempts: int = Field(default=5, ge=1)
    """Deliveries tried per final state before the webhook is marked failed."""
    webhook_backoff_s: float = Field(default=2.0, gt=0)
    """First retry delay after a failed delivery; doubles per attempt (capped at 10 minutes)."""
    webhook_timeout_s: float = Field(default=10.0, gt=0)
    """Timeout of one webhook delivery."""
    audio_url_timeout_s: float = Field(default=120.0, gt=0)
    """Total time allowed to download an ``audio_url`` (size is capped by ``audio.max_file_mb``)."""
    allowed_networks: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Networks (CIDR, comma-separated) that ``webhook_url`` and ``audio_url`` may reach even
    though they are loopback/private/link-local; everything else in those ranges is refused."""

    @field_validator("allowed_networks", mode="before")
    @classmethod
    def _split_csv(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="STENOD_",
        env_nested_delimiter="__",
        extra="ignore",
        validate_default=True,
        use_attribute_docstrings=True,
    )

    model: ModelSettings = Field(default_factory=ModelSettings)
    audio: AudioSettings = Field(default_factory=AudioSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    log: LogSettings = Field(default_factory=LogSettings)
    batch: BatchSettings = Field(default_factory=BatchSettings)
    jobs: JobsSettings = Field(default_factory=JobsSettings)
    config_file: Path | None = None
    """TOML file with the same sections ([model], [audio], [server], [log])."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_path = _config_file_from(init_settings, env_settings)
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml_path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_path))
        return tuple(sources)

    @property
    def offline(self) -> bool:
        return self.model.offline or os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")


def _config_file_from(*sources: PydanticBaseSettingsSource) -> Path | None:
    for source in sources:
        value = source().get("config_file")
        if value:
            path = Path(value)
            if not path.is_file():
                raise FileNotFoundError(f"config file not found: {path}")
            return path
    return None


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build settings from all sources; ``overrides`` are CLI flags as nested dicts, ``None``
    values meaning "flag not given"."""
    cleaned = _drop_none(overrides)
    if config_file is not None:
        cleaned["config_file"] = config_file
    return Settings(**cleaned)


def _drop_none(values: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            nested = _drop_none(value)
            if nested:
                out[key] = nested
        elif value is not None:
            out[key] = value
    return out
