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

from stenod.bench.corpus import CorpusItem
from stenod.bench.job import RESULT_PREFIX, WorkerFile, WorkerJob
from stenod.bench.schema import BenchConfig, EngineBenchSettings, EngineRun
from stenod.errors import StenodError
from stenod.models import ResolvedModel
from stenod.service import prepare_model
from stenod.settings import Settings

logger = logging.getLogger(__name__)


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
        BenchConfig(model=m, engine=e, device=d, compute_type=c, threads=t)
        for m, e, d, c, t in itertools.product(models, engines, devices, compute_types, threads)
    ]


def cell_settings(settings: Settings, config: BenchConfig) -> Settings:
    """``settings`` with the cell's model, engine, device and compute type."""
    model = settings.model.model_copy(update={
        "name": config.model, "engine": config.engine, "device": config.device,
        "compute_type": config.compute_type, "threads": config.threads,
    })
    return settings.model_copy(update={"model": model})


def prepare_model_or_raise(config: BenchConfig, settings: Settings) -> ResolvedModel:
    """Resolve the cell's model to the weights its engine loads (converting to ggml for whisper.cpp
    through the same decision as engine creation, :func:`stenod.service.prepare_model`), so the
    one-time preparation is not timed as loading.

    Raises:
        ModelNotFoundError: unknown or unavailable model.
        ModelLoadError, UnsupportedParameterError: the weights cannot be prepared for this engine.
    """
    return prepare_model(cell_settings(settings, config))


def run_config(
    config: BenchConfig,
    items: Sequence[CorpusItem],
    *,
    settings: Settings,
    bench: EngineBenchSettings,
    gpu_name: str | None,
) -> EngineRun:
    """Measure one configuration in a fresh worker process.

    Never raises for a configuration that cannot run: the returned run has ``status="error"`` and
    the reason, so one unsupported cell does not lose the rest of the grid.
    """
    if config.device == "cuda" and gpu_name is None:
        return EngineRun.failed(config, "no CUDA device found", gpu_name=gpu_name)
    try:
        resolved = prepare_model_or_raise(config, settings)
    except StenodError as exc:
        return EngineRun.failed(config, exc.message, gpu_name=gpu_name)
    job = WorkerJob(
        config=config, model_path=str(resolved.path), multilingual=resolved.multilingual,
        model_format=resolved.format,
        files=[WorkerFile(path=str(i.path), reference=i.reference, language=i.language) for i in items],
        bench=bench, gpu_name=gpu_name if config.device == "cuda" else None,
    )
    started = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "stenod.bench.worker"],
            input=job.model_dump_json(), capture_output=True, text=True, timeout=bench.timeout_s, check=False,
        )
    except subprocess.TimeoutExpired:
        return EngineRun.failed(config, f"timed out after {bench.timeout_s:g} s", gpu_name=gpu_name,
                               wall_s=time.perf_counter() - started)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return EngineRun.model_validate_json(line[len(RESULT_PREFIX):])
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return EngineRun.failed(config, f"worker exited with status {proc.returncode}: {tail}", gpu_name=gpu_name,
                           wall_s=time.perf_counter() - started)


def run_matrix(
    configs: Sequence[BenchConfig],
    items: Sequence[CorpusItem],
    *,
    settings: Settings,
    bench: EngineBenchSettings,
    gpu_name: str | None,
    on_run: Callable[[BenchConfig, EngineRun], None] | None = None,
) -> list[EngineRun]:
    """Run every configuration, one fresh process after another (never in parallel: they would
    compete for the same cores). ``on_run`` is called after each, for progress output."""
    runs: list[EngineRun] = []
    for config in configs:
        run = run_config(config, items, settings=settings, bench=bench, gpu_name=gpu_name)
        runs.append(run)
        if on_run is not None:
            on_run(config, run)
    return runs
