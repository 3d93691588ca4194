"""The engine benchmark grid: models x engines x devices x compute types x threads, each
configuration measured in a fresh ``python -m stenod.bench.worker`` process.

The parent resolves models (assembling bundled weights, converting CTranslate2 weights to ggml for
whisper.cpp) before any worker starts, so that one-time preparation never shows up in a
configuration's load time or peak memory.
"""

from __future__ import annotations

import itertools
import logging
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from stenod.bench.corpus import CorpusItem
from stenod.bench.schema import EngineRun
from stenod.bench.worker import RESULT_PREFIX, WorkerFile, WorkerJob
from stenod.errors import StenodError
from stenod.models import ResolvedModel, resolve_model_or_raise

logger = logging.getLogger(__name__)

@dataclass(frozen=True, slots=True)
class BenchConfig:
    """One cell of the grid."""

    model: str
    engine: str
    device: str
    compute_type: str
    threads: int

    @property
    def label(self) -> str:
        return f"{self.model} {self.engine} {self.device}/{self.compute_type} t={self.threads}"


def expand_grid(
    *,
    models: Sequence[str],
    engines: Sequence[str],
    devices: Sequence[str],
    compute_types: Sequence[str],
    threads: Sequence[int],
) -> list[BenchConfig]:
    """Every combination, in the order model, engine, device, compute type, threads (so a report
    reads like the RTF table: one model's rows together)."""
    return [
        BenchConfig(m, e, d, c, t)
        for m, e, d, c, t in itertools.product(models, engines, devices, compute_types, threads)
    ]


def prepare_model_or_raise(config: BenchConfig, *, cache_dir: Path, offline: bool) -> ResolvedModel:
    """Resolve ``config.model`` to weights the engine can load; for whisper.cpp, convert a
    CTranslate2 model to its cached ggml file first (:mod:`stenod.models.ggml_cache`, q8_0 for int8
    compute types, f16 for float ones), so the conversion is not timed as loading.

    Raises:
        ModelNotFoundError: unknown or unavailable model.
        ModelLoadError: the ggml conversion failed.
    """
    resolved = resolve_model_or_raise(config.model, cache_dir=cache_dir, offline=offline)
    if config.engine != "whisper.cpp" or resolved.format == "ggml":
        return resolved
    from stenod.models.ggml_cache import ensure_ggml_model_or_raise, ggml_quantization_for

    return ensure_ggml_model_or_raise(
        resolved, cache_dir=cache_dir, quantize=ggml_quantization_for(config.compute_type)
    )


def _error(config: BenchConfig, message: str, gpu_name: str | None, wall_s: float = 0.0) -> EngineRun:
    return EngineRun(
        model=config.model, engine=config.engine, device=config.device, compute_type=config.compute_type,
        threads=config.threads, status="error", error=message, gpu_name=gpu_name, wall_s=wall_s,
    )


def run_config(
    config: BenchConfig,
    items: Sequence[CorpusItem],
    *,
    cache_dir: Path,
    offline: bool,
    repeats: int,
    warmup: int,
    language: str | None,
    beam_size: int,
    timeout_s: float,
    gpu_name: str | None,
) -> EngineRun:
    """Measure one configuration in a fresh worker process.

    Never raises for a configuration that cannot run: the returned run has ``status="error"`` and
    the reason, so one unsupported cell does not lose the rest of the grid.
    """
    if config.device == "cuda" and gpu_name is None:
        return _error(config, "no CUDA device found", gpu_name)
    try:
        resolved = prepare_model_or_raise(config, cache_dir=cache_dir, offline=offline)
    except StenodError as exc:
        return _error(config, exc.message, gpu_name)
    job = WorkerJob(
        model=config.model, model_path=str(resolved.path), multilingual=resolved.multilingual,
        model_format=resolved.format, engine=config.engine, device=config.device,
        compute_type=config.compute_type, threads=config.threads,
        files=[WorkerFile(path=str(i.path), reference=i.reference, language=i.language) for i in items],
        repeats=repeats, warmup=warmup, language=language, beam_size=beam_size,
        gpu_name=gpu_name if config.device == "cuda" else None,
    )
    started = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "stenod.bench.worker"],
            input=job.model_dump_json(), capture_output=True, text=True, timeout=timeout_s, check=False,
        )
    except subprocess.TimeoutExpired:
        return _error(config, f"timed out after {timeout_s:g} s", gpu_name, time.perf_counter() - started)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return EngineRun.model_validate_json(line[len(RESULT_PREFIX):])
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return _error(config, f"worker exited with status {proc.returncode}: {tail}", gpu_name, time.perf_counter() - started)


def run_matrix(
    configs: Sequence[BenchConfig],
    items: Sequence[CorpusItem],
    *,
    cache_dir: Path,
    offline: bool,
    repeats: int,
    warmup: int,
    language: str | None,
    beam_size: int,
    timeout_s: float,
    gpu_name: str | None,
    on_run: Callable[[BenchConfig, EngineRun], None] | None = None,
) -> list[EngineRun]:
    """Run every configuration, one fresh process after another (never in parallel: they would
    compete for the same cores). ``on_run`` is called after each, for progress output."""
    runs: list[EngineRun] = []
    for config in configs:
        run = run_config(
            config, items, cache_dir=cache_dir, offline=offline, repeats=repeats, warmup=warmup,
            language=language, beam_size=beam_size, timeout_s=timeout_s, gpu_name=gpu_name,
        )
        runs.append(run)
        if on_run is not None:
            on_run(config, run)
    return runs
