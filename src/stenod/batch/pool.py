"""Local transcription: a pool of worker processes, or one process with the batched pipeline.

Worker processes are started with the ``spawn`` context (no fork of a process holding threads or
CTranslate2 state) and each loads the model once, in the pool initializer. With ``threads`` intra-op
threads each, ``workers * threads`` should not exceed the cores: greedy decoding of short files
scales poorly inside one call, so on small machines several single-thread workers beat one
process with every core (see docs/BENCHMARKS.md, "Batch pipeline").

Ctrl-C belongs to the parent: workers ignore SIGINT, so a terminal's Ctrl-C (sent to the whole
process group) does not kill them mid-file, and the parent decides whether in-flight files finish
or are abandoned. Workers return transcripts; the parent writes every output file, so terminating
a worker can never leave a partial output behind.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from stenod.batch.runner import WorkOutcome, short_error
from stenod.engines import CancelledError, Engine, TranscriptionOptions, cpu_count, plan_cpu
from stenod.errors import StenodError
from stenod.models import ResolvedModel
from stenod.service import load_engine, prepare_model, single_call_threads, threads_per_process, transcribe_source
from stenod.settings import Settings

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """Everything a worker needs to load its engine; picklable for the spawn context."""

    model: ResolvedModel
    """Resolved (and for whisper.cpp converted) once by the parent, so workers only load."""
    settings: Settings
    options: TranscriptionOptions
    threads: int
    max_duration_s: float


def transcribe_path(engine: Engine, path: Path, config: WorkerConfig, cancel: threading.Event | None = None) -> WorkOutcome:
    """Decode and transcribe one file; every failure becomes a :class:`WorkOutcome` value."""
    started = time.perf_counter()
    try:
        result = transcribe_source(engine, path, config.options, max_duration_s=config.max_duration_s, cancel=cancel)
    except StenodError as exc:
        return WorkOutcome.failure(short_error(exc.message, path), processing_s=time.perf_counter() - started)
    except CancelledError:
        return WorkOutcome.failure("cancelled", processing_s=time.perf_counter() - started)
    except Exception as exc:  # one odd file must not end a 10,000-file batch
        logger.exception("unexpected error on %s", path)
        return WorkOutcome.failure(f"unexpected error: {type(exc).__name__}: {exc}",
                                   processing_s=time.perf_counter() - started)
    return WorkOutcome(
        transcript=result.transcript,
        duration_s=result.audio_duration_s,
        processing_s=time.perf_counter() - started,
    )


def _load_engine(config: WorkerConfig) -> Engine:
    return load_engine(config.settings, model=config.model, threads=config.threads)


def choose_workers(*, cores: int, requested_workers: int, requested_threads: int, pending: int) -> tuple[int, int]:
    """``(workers, threads per worker)``. Defaults follow :func:`~stenod.engines.plan_cpu` (one
    single-thread worker per core on machines up to 2 cores, measured fastest for short files; see
    docs/BENCHMARKS.md "Batch pipeline"), never more workers than files, threads = cores // workers.
    A requested value (> 0) is kept."""
    plan = plan_cpu(cores=cores, threads=requested_threads, concurrency=requested_workers)
    workers = max(1, min(plan.concurrency, pending)) if requested_workers <= 0 else requested_workers
    return workers, threads_per_process(requested_threads, processes=workers, cores=cores)


def local_runner(
    settings: Settings, options: TranscriptionOptions, *, pending: int, cores: int | None = None
) -> InProcessRunner | ProcessPoolRunner:
    """The local runner ``settings.batch`` asks for: one process with the batched pipeline when
    ``batch.batch_size`` > 1, else a pool of worker processes sized by :func:`choose_workers`.
    Resolves the model (assembling bundled weights, converting for whisper.cpp) here, once, so the
    workers only load it.

    Raises:
        ModelNotFoundError, ModelLoadError, UnsupportedParameterError: the model cannot be prepared.
    """
    b = settings.batch
    cores = cores or cpu_count()
    model = prepare_model(settings)
    if b.batch_size > 1:
        threads = b.threads or single_call_threads(settings.model, cores=cores)
        return InProcessRunner(WorkerConfig(model=model, settings=settings, options=options, threads=threads,
                                            max_duration_s=settings.audio.max_duration_s))
    workers, threads = choose_workers(cores=cores, requested_workers=b.workers,
                                      requested_threads=b.threads or settings.model.threads, pending=pending)
    config = WorkerConfig(model=model, settings=settings, options=options, threads=threads,
                          max_duration_s=settings.audio.max_duration_s)
    return ProcessPoolRunner(config, workers=workers)


# Worker-process state: one engine per process, set by the pool initializer.
_worker_engine: Engine | None = None
_worker_config: WorkerConfig | None = None
_worker_load_error: str | None = None


def _worker_init(config: WorkerConfig) -> None:
    global _worker_engine, _worker_config, _worker_load_error
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.getLogger("faster_whisper").setLevel(logging.WARNING)
    _use_thread_lock_for_tqdm()
    _worker_config = config
    try:
        _worker_engine = _load_engine(config)
    except StenodError as exc:
        _worker_load_error = exc.message


def _use_thread_lock_for_tqdm() -> None:
    """faster-whisper's tqdm otherwise creates a multiprocessing RLock (a POSIX semaphore) in each
    worker; a worker terminated on abandon never frees it, and the resource tracker then prints
    "leaked semaphore objects" at exit. A worker needs no cross-process lock for a progress bar
    it never shows. See https://github.com/tqdm/tqdm/pull/1677."""
    try:
        from tqdm import tqdm
    except ImportError:
        return
    tqdm.set_lock(threading.RLock())


def _worker_transcribe(path: str) -> WorkOutcome:
    if _worker_engine is None or _worker_config is None:
        return WorkOutcome.failure(_worker_load_error or "worker has no model loaded", fatal=True)
    return transcribe_path(_worker_engine, Path(path), _worker_config)


@contextmanager
def _sigint_ignored_for_children() -> Iterator[None]:
    """Spawned children inherit an *ignored* SIGINT (a Python handler is reset by exec), so a
    worker never sees Ctrl-C, not even while importing, before its initializer runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class ProcessPoolRunner:
    """``workers`` spawned processes, each with its own engine (``threads`` threads).

    Memory: one copy of the weights per worker (about 100 MB for tiny/base int8, 1.5 GB for large).
    A worker that dies (crash, OOM kill) breaks the pool; the next :meth:`submit` starts a new one.
    """

    def __init__(self, config: WorkerConfig, *, workers: int) -> None:
        self._config = config
        self._workers = workers
        self._pool: ProcessPoolExecutor | None = None

    @property
    def capacity(self) -> int:
        return self._workers

    @property
    def description(self) -> str:
        return (f"{self._workers} worker process{'es' if self._workers != 1 else ''} x "
                f"{self._config.threads} thread{'s' if self._config.threads != 1 else ''}, "
                f"model {self._config.model.name}")

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=self._workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_worker_init,
            initargs=(self._config,),
        )

    def submit(self, path: Path) -> Future[WorkOutcome]:
        if self._pool is None or getattr(self._pool, "_broken", False):
            if self._pool is not None:
                logger.warning("a worker process died; starting a new pool")
                self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = self._new_pool()
        with _sigint_ignored_for_children():  # workers are spawned lazily, inside submit
            return self._pool.submit(_worker_transcribe, str(path))

    def shutdown(self, *, abandon: bool) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        if not abandon:
            pool.shutdown(wait=True)
            return
        # ProcessPoolExecutor has no public terminate before Python 3.14 (terminate_workers).
        terminate = getattr(pool, "terminate_workers", None)
        if terminate is not None:
            terminate()
            return
        processes = list((getattr(pool, "_processes", None) or {}).values())
        for proc in processes:
            if proc.is_alive():
                proc.terminate()
        for proc in processes:
            proc.join(timeout=5)
        # The pool notices its dead workers, fails their futures and cleans up its queues.
        pool.shutdown(wait=True, cancel_futures=True)


class InProcessRunner:
    """One engine in this process, all threads on one file at a time; with ``batch_size`` > 1 the
    engine decodes up to that many VAD-cut windows of the file in one batch."""

    def __init__(self, config: WorkerConfig, *, engine: Engine | None = None) -> None:
        """Args:
            config: model, options and threads; the engine is loaded on the first file.
            engine: an already-loaded engine to use instead (tests, embedding); it is not closed
                by :meth:`shutdown`.
        """
        self._config = config
        self._engine = engine
        self._owns_engine = engine is None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stenod-batch")
        self._cancel = threading.Event()

    @property
    def capacity(self) -> int:
        return 1

    @property
    def description(self) -> str:
        batched = f", batched pipeline batch size {self._config.options.batch_size}" if self._config.options.batch_size > 1 else ""
        return f"1 process x {self._config.threads} threads{batched}, model {self._config.model.name}"

    def _run(self, path: Path) -> WorkOutcome:
        if self._engine is None:
            try:
                self._engine = _load_engine(self._config)
            except StenodError as exc:
                return WorkOutcome.failure(exc.message, fatal=True)
        return transcribe_path(self._engine, path, self._config, cancel=self._cancel)

    def submit(self, path: Path) -> Future[WorkOutcome]:
        return self._executor.submit(self._run, path)

    def shutdown(self, *, abandon: bool) -> None:
        if abandon:
            self._cancel.set()  # the engine stops at its next segment
        self._executor.shutdown(wait=True, cancel_futures=True)
        if self._engine is not None and self._owns_engine:
            self._engine.close()
        self._engine = None
