"""How should the whisper.cpp engine serve N concurrent calls: N contexts, or one behind a lock?

    python benchmarks/whisper_cpp_contexts.py --model tiny.en --files 6

Measures, in this process (RSS is the process's, so run it alone):

* memory: RSS after loading 1 and 2 whisper contexts of the same ggml file (and after one call
  each, when the compute buffers are allocated);
* throughput over the same files: one context with all threads, one context with one thread
  (what a lock-serialized engine gives each call), and two contexts with one thread each
  running concurrently (what ``WhisperCppEngine(concurrency=2)`` does).

The ggml file is the cached conversion the engine uses (``<cache>/ggml/<model>-q8_0.bin``).
"""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path

import numpy as np
import psutil

from stenod.audio import decode_audio
from stenod.engines import TranscriptionOptions
from stenod.engines.base import EngineConfig
from stenod.engines.whisper_cpp import WhisperCppEngine
from stenod.models import resolve_model_or_raise
from stenod.models.ggml_cache import ensure_ggml_model_or_raise
from stenod.settings import load_settings

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO.parent / "shared" / "corpus" / "librispeech-clean100-a" / "audio"


def _rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def _run(engine: WhisperCppEngine, audios: list[np.ndarray]) -> None:
    for audio in audios:
        engine.transcribe(audio, TranscriptionOptions(language="en"))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--files", type=int, default=6)
    parser.add_argument("--quantize", default="q8_0")
    args = parser.parse_args()
    settings = load_settings()
    resolved = resolve_model_or_raise(args.model, cache_dir=settings.model.cache_dir, offline=True)
    path = ensure_ggml_model_or_raise(resolved, cache_dir=settings.model.cache_dir, quantize=args.quantize).path
    audios = [decode_audio(p).samples for p in sorted(CORPUS.iterdir())[: args.files]]
    audio_s = sum(len(a) for a in audios) / 16_000

    def engine(threads: int, contexts: int) -> WhisperCppEngine:
        return WhisperCppEngine(EngineConfig(model_name=args.model, model_path=str(path), multilingual=resolved.multilingual,
                                             threads=threads, concurrency=contexts))

    rss0 = _rss_mb()
    one = engine(2, 1)
    rss1 = _rss_mb()
    _run(one, audios[:1])
    rss1_run = _rss_mb()
    t = time.perf_counter()
    _run(one, audios)
    one_ctx_2t = time.perf_counter() - t
    one.close()
    single = engine(1, 1)
    t = time.perf_counter()
    _run(single, audios)
    one_ctx_1t = time.perf_counter() - t
    single.close()

    rss_before_two = _rss_mb()
    two = engine(1, 2)
    rss2 = _rss_mb()
    halves = [audios[0::2], audios[1::2]]
    workers = [threading.Thread(target=_run, args=(two, h)) for h in halves]
    t = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    two_ctx_1t = time.perf_counter() - t
    rss2_run = _rss_mb()
    two.close()

    print(f"{args.model} {args.quantize}, {len(audios)} files, {audio_s:.0f} s audio, {psutil.cpu_count()} cores")
    print(f"RSS: 1 context +{rss1 - rss0:.0f} MB (+{rss1_run - rss0:.0f} MB after a call); "
          f"2 contexts +{rss2 - rss_before_two:.0f} MB (+{rss2_run - rss_before_two:.0f} MB after calls)")
    print(f"1 context, 2 threads, files one after another: {one_ctx_2t:.1f} s ({audio_s / one_ctx_2t:.1f}x real time)")
    print(f"1 context, 1 thread,  files one after another: {one_ctx_1t:.1f} s ({audio_s / one_ctx_1t:.1f}x real time)")
    print(f"2 contexts, 1 thread each, two calls at once:  {two_ctx_1t:.1f} s ({audio_s / two_ctx_1t:.1f}x real time)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
