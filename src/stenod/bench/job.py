"""What the benchmark parent (:mod:`stenod.bench.matrix`) sends to one worker process
(:mod:`stenod.bench.worker`) on stdin, and the prefix of the one line the worker answers with.

Its own module so the parent never imports the worker module (which runs as ``python -m``).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from stenod.bench.schema import BenchConfig, EngineBenchSettings
from stenod.models import ModelFormat

RESULT_PREFIX = "STENOD_BENCH_RESULT "
"""Marks the worker's one result line on stdout (an :class:`~stenod.bench.schema.EngineRun` as JSON)."""


class WorkerFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str
    reference: str | None = None
    language: str | None = None


class WorkerJob(BaseModel):
    """What the parent asks one worker to measure."""

    model_config = ConfigDict(extra="forbid")

    config: BenchConfig
    model_path: str
    """The prepared weights (a ggml file for whisper.cpp), so this process only loads them."""
    multilingual: bool
    model_format: ModelFormat
    files: list[WorkerFile]
    bench: EngineBenchSettings
    gpu_name: str | None = None
