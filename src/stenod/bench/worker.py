"""One benchmark configuration in a fresh process: ``python -m stenod.bench.worker < job.json``.

The parent (:mod:`stenod.bench.matrix`) writes a :class:`WorkerJob` as JSON on stdin; this process
decodes the files, loads the engine, runs the warm-up and the repeats, and prints exactly one line
``STENOD_BENCH_RESULT {json}`` (an :class:`~stenod.bench.schema.EngineRun`) on stdout. Logs go to
stderr. A fresh process per configuration keeps one configuration's allocator state, thread pools
and page cache of weights from flattering or penalizing the next, and makes ``ru_maxrss`` the peak
of this configuration alone.

Passes are interleaved (repeat 1 over all files, then repeat 2 ...) so slow drift in machine load
spreads over every file instead of hitting one file's repeats.
"""

from __future__ import annotations

import logging
import resource
import sys
import time
from pathlib import Path

from stenod.bench.job import RESULT_PREFIX, WorkerFile, WorkerJob
from stenod.bench.schema import EngineRun, FileMeasurement, Spread

logger = logging.getLogger(__name__)


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _peak_rss_mb() -> float:
    # Linux reports ru_maxrss in KiB (macOS in bytes).
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _error_run(job: WorkerJob, message: str, started: float) -> EngineRun:
    return EngineRun.failed(job.config, message, gpu_name=job.gpu_name, wall_s=time.perf_counter() - started)


def run_job(job: WorkerJob, *, started: float) -> EngineRun:
    """Measure one configuration in this process (call it in a fresh one)."""
    from stenod.audio import decode_audio
    from stenod.bench.host import load_avg_1m
    from stenod.bench.wer import grouped_wer, wer
    from stenod.engines import TranscriptionOptions
    from stenod.errors import StenodError
    from stenod.models.registry import ResolvedModel
    from stenod.service import build_options, load_engine
    from stenod.settings import ModelSettings, Settings

    cfg, bench = job.config, job.bench
    if cfg.engine == "faster-whisper":
        import faster_whisper  # noqa: F401  (imported before the baseline RSS, so it is not counted as the model's)

    t = time.perf_counter()
    try:
        decoded = [decode_audio(f.path) for f in job.files]
    except StenodError as exc:
        return _error_run(job, exc.message, started)
    decode_s = time.perf_counter() - t
    audio = [d.samples for d in decoded]
    durations = [d.duration_s for d in decoded]
    total_audio_s = sum(durations)

    rss_before = _rss_mb()
    resolved = ResolvedModel(cfg.model, Path(job.model_path), job.model_format, "local", job.multilingual)
    try:
        model_settings = ModelSettings.model_validate({
            "name": cfg.model, "engine": cfg.engine, "device": cfg.device, "compute_type": cfg.compute_type,
            "threads": cfg.threads, "beam_size": bench.beam_size,
        })
    except ValueError as exc:  # an engine, device or compute type stenod does not know
        return _error_run(job, f"invalid configuration: {exc}", started)
    settings = Settings(model=model_settings)
    t = time.perf_counter()
    try:
        engine = load_engine(settings, model=resolved, threads=cfg.threads)
    except StenodError as exc:
        return _error_run(job, exc.message, started)
    except Exception as exc:  # CTranslate2 raises ValueError/RuntimeError for unsupported compute types
        return _error_run(job, f"{type(exc).__name__}: {exc}", started)
    load_s = time.perf_counter() - t
    rss_after = _rss_mb()

    def options_for(f: WorkerFile) -> TranscriptionOptions:
        lang = f.language or bench.language
        return build_options(model_settings, language="en" if not job.multilingual else lang)

    try:
        t = time.perf_counter()
        for _ in range(bench.warmup):
            engine.transcribe(audio[0], options_for(job.files[0]))
        warmup_s = time.perf_counter() - t
        times: list[list[float]] = [[] for _ in job.files]
        texts: list[str] = ["" for _ in job.files]
        pass_cpu: list[float] = []
        for _ in range(bench.repeats):
            cpu_start = _cpu_s()
            for i, f in enumerate(job.files):
                t = time.perf_counter()
                transcript = engine.transcribe(audio[i], options_for(f))
                times[i].append(time.perf_counter() - t)
                texts[i] = transcript.text
            pass_cpu.append(_cpu_s() - cpu_start)
    except StenodError as exc:
        return _error_run(job, exc.message, started)
    finally:
        peak = _peak_rss_mb()
        engine.close()

    files: list[FileMeasurement] = []
    for i, f in enumerate(job.files):
        d = durations[i]
        file_wer = wer([f.reference], [texts[i]], f.language or bench.language) if f.reference else None
        files.append(FileMeasurement(
            file=f.path, audio_s=round(d, 3), inference_s=Spread.of(times[i]),
            rtf=Spread.of([x / d for x in times[i]]), hypothesis=texts[i].strip(), wer=file_wer,
        ))
    pass_times = [sum(times[i][r] for i in range(len(job.files))) for r in range(bench.repeats)]
    rtf = Spread.of([p / total_audio_s for p in pass_times])
    inference = Spread.of(pass_times)
    scored = [(f.reference, texts[i], f.language or bench.language) for i, f in enumerate(job.files) if f.reference]
    corpus_wer = (
        grouped_wer([s[0] for s in scored], [s[1] for s in scored], [s[2] for s in scored]) if scored else None
    )
    return EngineRun(
        **cfg.model_dump(), status="ok", gpu_name=job.gpu_name,
        load_s=load_s, decode_s=decode_s, warmup_s=warmup_s, audio_s=total_audio_s,
        inference_s=inference, rtf=rtf, cpu_s=Spread.of(pass_cpu),
        cpu_rtf=Spread.of([c / total_audio_s for c in pass_cpu]), speed_x=1 / rtf.median if rtf.median > 0 else None,
        total_s=load_s + decode_s + inference.median,
        rss_before_load_mb=round(rss_before, 1), rss_after_load_mb=round(rss_after, 1), peak_rss_mb=round(peak, 1),
        wer=corpus_wer, wer_files=len(scored), wall_s=time.perf_counter() - started,
        load_avg_1m=round(load_avg_1m(), 2), files=files,
    )


def main() -> int:
    started = time.perf_counter()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    job = WorkerJob.model_validate_json(sys.stdin.read())
    run = run_job(job, started=started)
    sys.stdout.write(RESULT_PREFIX + run.model_dump_json() + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
