"""The JSON that ``stenod bench`` writes, as pydantic models: the one definition of the format.

``SCHEMA_VERSION`` goes up whenever a field changes meaning or disappears; new optional fields do
not bump it. ``stenod bench schema`` prints the JSON Schema generated from these models, and
docs/bench-result.schema.json is that output, checked by the tests to stay in sync.

Definitions used throughout (also in docs/BENCHMARKS.md):

* ``audio_s``: decoded duration of the audio (samples / 16 000).
* ``inference_s``: wall time of ``Engine.transcribe`` only; decoding the file and loading the
  model are measured separately (``decode_s``, ``load_s``).
* ``rtf`` (real-time factor): ``inference_s / audio_s``. Below 1 is faster than real time;
  ``speed_x = 1 / rtf``. For a configuration, one *pass* transcribes every file once and its RTF
  is the pass's summed inference time over the summed audio duration; the median, min and max are
  over the repeated passes.
* ``cpu_rtf``: process CPU seconds (user + system, every thread) per audio second of a pass. On a
  shared machine wall-clock RTF grows with the neighbours' load; CPU time much less so.
* ``peak_rss_mb``: the worker process's peak resident set size (``getrusage(RUSAGE_SELF).ru_maxrss``)
  measured in the child at the end of its run, so it covers loading and every pass.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

SCHEMA_VERSION = 1

RunStatus = Literal["ok", "error"]
StopReason = Literal["requests", "duration", "error"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


class Spread(_Model):
    """Median and range of repeated measurements."""

    median: float
    min: float
    max: float
    n: int = Field(ge=0)
    """How many measurements."""

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        if not values:
            raise ValueError("no measurements")
        return cls(median=statistics.median(values), min=min(values), max=max(values), n=len(values))


class Percentiles(_Model):
    """Latency distribution of successful requests, seconds."""

    p50: float
    p95: float
    p99: float
    mean: float
    min: float
    max: float


class HostInfo(_Model):
    """The machine a benchmark ran on."""

    hostname: str
    platform: str
    python: str
    cpu_model: str
    logical_cores: int
    usable_cores: int
    """Cores this process may run on (``sched_getaffinity``)."""
    memory_total_mb: float
    gpu_names: list[str]
    """``nvidia-smi`` names, empty without a usable CUDA GPU."""
    stenod_version: str
    packages: dict[str, str]
    """Versions of faster-whisper, ctranslate2, pywhispercpp where installed."""
    load_avg_1m: float
    """1-minute load average when the run started: above ``usable_cores`` means other work was
    competing for the CPU and absolute numbers are inflated; ratios inside one run still hold."""


class BenchFile(_Model):
    """One audio file of the benchmark set."""

    file: str
    """Path as given."""
    audio_s: float
    reference: str | None = None
    language: str | None = None


class FileMeasurement(_Model):
    """One file under one configuration."""

    file: str
    audio_s: float
    inference_s: Spread
    rtf: Spread
    """``inference_s / audio_s`` for each repeat."""
    hypothesis: str
    """Text of the last repeat."""
    wer: float | None = None
    """Normalized error rate of this file (CER for ja/zh); ``None`` without a reference."""


class BenchConfig(_Model):
    """One cell of the engine grid: what is measured. The parent sends it to the worker process,
    and every :class:`EngineRun` carries it."""

    model: str
    engine: str
    device: str
    compute_type: str
    threads: int

    @property
    def label(self) -> str:
        return f"{self.model} {self.engine} {self.device}/{self.compute_type} t={self.threads}"


class EngineRun(BenchConfig):
    """One configuration, measured in its own fresh process."""

    status: RunStatus
    error: str | None = None
    """Why the configuration could not run (unsupported compute type, missing engine, ...)."""
    gpu_name: str | None = None
    load_s: float = 0.0
    """Time to build the engine (read weights, initialize CTranslate2/whisper.cpp)."""
    decode_s: float = 0.0
    """Time to decode all files to 16 kHz once (not part of ``inference_s``)."""
    warmup_s: float = 0.0
    """Time of the discarded warm-up transcription(s)."""
    audio_s: float = 0.0
    """Total duration of the files in one pass."""
    inference_s: Spread | None = None
    """Summed ``transcribe`` time of one pass over all files, per repeat."""
    rtf: Spread | None = None
    """``inference_s / audio_s`` per pass."""
    cpu_s: Spread | None = None
    """Process CPU time (user + system, all threads) of one pass, per repeat."""
    cpu_rtf: Spread | None = None
    """``cpu_s / audio_s``: CPU seconds spent per audio second. Unlike ``rtf`` it barely moves when
    other processes compete for the cores, and ``cores / cpu_rtf`` bounds what a fully busy machine
    can transcribe (audio seconds per second)."""
    speed_x: float | None = None
    """``1 / rtf.median``: audio seconds per processing second for one call at a time."""
    total_s: float | None = None
    """``load_s + decode_s + inference_s.median``: the cost of transcribing the set once from a
    cold start, as ``stenod transcribe`` would."""
    rss_before_load_mb: float | None = None
    """Process RSS after imports, before the model: the interpreter's share of ``peak_rss_mb``."""
    rss_after_load_mb: float | None = None
    peak_rss_mb: float | None = None
    wer: float | None = None
    """Corpus-level normalized error rate over files with references (CER for ja/zh)."""
    wer_files: int = 0
    """How many files had a reference."""
    wall_s: float = 0.0
    """Wall time of the worker process, start-up included."""
    load_avg_1m: float | None = None
    """1-minute load average when this configuration finished."""
    files: list[FileMeasurement] = Field(default_factory=list)

    @classmethod
    def failed(cls, config: BenchConfig, message: str, *, gpu_name: str | None, wall_s: float = 0.0) -> EngineRun:
        """A configuration that could not run, and why."""
        return cls(**config.model_dump(), status="error", error=message, gpu_name=gpu_name, wall_s=wall_s)


class EngineBenchSettings(_Model):
    """How every configuration of the grid is measured."""

    repeats: int
    """Measured passes over all files."""
    warmup: int
    """Discarded transcriptions of the first file before measuring."""
    language: str | None
    """Language of files that have none of their own; ``None`` detects."""
    beam_size: int
    timeout_s: float
    """Seconds one configuration's worker process may take."""


class _BenchResult(_Model):
    """What every result file has, whichever kind."""

    schema_version: int = SCHEMA_VERSION
    kind: str
    created_at: datetime
    command: str
    """The command line that produced this file."""
    host: HostInfo
    files: list[BenchFile]


class EngineBenchResult(_BenchResult):
    """``stenod bench engines`` output."""

    kind: Literal["engines"] = "engines"
    settings: EngineBenchSettings
    runs: list[EngineRun]


class LoadLevel(_Model):
    """One concurrency level of a load test."""

    concurrency: int
    requests: int
    """Requests that completed (any outcome) within the bounds."""
    ok: int
    errors: int
    status_counts: dict[str, int]
    """Outcome per HTTP status (``"200"``, ``"429"`` ...), plus ``connect_error``, ``timeout``
    and ``transport_error`` for requests that got no response."""
    wall_s: float
    """From the first request sent to the last response received."""
    audio_s_ok: float
    """Audio seconds of the successful requests."""
    throughput_audio_s_per_s: float
    """``audio_s_ok / wall_s``: audio seconds transcribed per wall second."""
    requests_per_s: float
    latency_s: Percentiles | None = None
    """Over successful requests; ``None`` when none succeeded."""
    wer: float | None = None
    """Normalized error rate of the returned text over successful requests with references."""
    stopped_by: StopReason
    """Which bound ended the level: the request count, the duration, or errors only."""


class ServerBenchSettings(_Model):
    url: str
    api: Literal["openai", "whispercpp"]
    model: str | None
    language: str | None
    max_requests: int
    """Per concurrency level."""
    max_duration_s: float
    """Per concurrency level: no request is sent after this, and requests still running at
    ``max_duration_s + request_timeout_s`` are abandoned."""
    request_timeout_s: float


class ServerBenchResult(_BenchResult):
    """``stenod bench server`` output. ``host`` is the machine running the load client (not
    necessarily the server)."""

    kind: Literal["server"] = "server"
    settings: ServerBenchSettings
    levels: list[LoadLevel]


BenchResult = Annotated[EngineBenchResult | ServerBenchResult, Field(discriminator="kind")]
BENCH_RESULT_ADAPTER: TypeAdapter[EngineBenchResult | ServerBenchResult] = TypeAdapter(BenchResult)


def load_result_or_raise(text: str) -> EngineBenchResult | ServerBenchResult:
    """Parse a result file's text.

    Raises:
        ValueError: not JSON, not a bench result, or a schema version this stenod cannot read.
    """
    import json

    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"not JSON ({exc})") from exc
    if not isinstance(raw, dict) or raw.get("kind") not in ("engines", "server"):
        raise ValueError("not a stenod bench result (no \"kind\": engines|server)")
    version = raw.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ValueError(f"schema_version {version!r}; this stenod reads version {SCHEMA_VERSION}")
    return BENCH_RESULT_ADAPTER.validate_python(raw)


def json_schema() -> dict[str, object]:
    """The JSON Schema of a result file (either kind)."""
    schema = BENCH_RESULT_ADAPTER.json_schema()
    schema["$id"] = f"https://stenod.dev/schemas/bench-result-v{SCHEMA_VERSION}.json"
    schema["title"] = "stenod bench result"
    return schema
