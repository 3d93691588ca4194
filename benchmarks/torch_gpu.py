"""GPU benchmark of the torch engine against transformers' ASR pipeline, same weights, same audio.

Runs where a CUDA GPU is (the lent H200 in docs/BENCHMARKS.md); writes one JSON file of results
and hypotheses (WER is scored afterwards on a machine with the normalizer, by
``benchmarks/torch_gpu_report.py``). Every phase appends to the JSON as it finishes, so a run cut
short still reports what it measured.

Phases (each engine measured in the same process, one after the other, on the same card):
  wer        every corpus set, all files of a set submitted at once
  longform   the long files, all at once, several copies (long-form throughput)
  short-C    C concurrent clients replaying short clips (C = 8, 32, 128), closed loop
The baseline is ``pipeline("automatic-speech-recognition", chunk_length_s=30, batch_size=24,
fp16, sdpa)``, the insanely-fast-whisper recipe: each request group is one pipeline call over
the group's clips (a server wrapping the pipeline can batch no more than what is waiting).

Usage:
  python benchmarks/torch_gpu.py --model HF_FOLDER --audio DIR_OF_NPZ --out results.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

SR = 16_000
SHORT_SETS = ("librispeech-clean100-a", "ljspeech-lj001", "en-misc-short")
ENGLISH_SETS = ("en-misc-short", "ljspeech-lj001", "librispeech-clean100-a", "en-mfa-voicequality", "longform-en")


def load_sets(audio_dir: Path) -> dict[str, dict[str, np.ndarray]]:
    sets: dict[str, dict[str, np.ndarray]] = {}
    for f in sorted(audio_dir.glob("*.npz")):
        with np.load(f) as data:
            sets[f.stem] = {k: (data[k].astype(np.float32) / 32767.0) for k in data.files}
    return sets


class Results:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict = {"phases": {}}

    def put(self, key: str, value: object) -> None:
        self.data["phases"][key] = value
        self.path.write_text(json.dumps(self.data, indent=1))
        print(f"[{time.strftime('%H:%M:%S')}] {key}: " + json.dumps(
            {k: v for k, v in value.items() if k != "hypotheses"} if isinstance(value, dict) else value)[:600], flush=True)


# --------------------------------------------------------------------------------------------------
# The two systems
# --------------------------------------------------------------------------------------------------


class TorchEngineSystem:
    name = "stenod-torch"

    def __init__(self, model: str, dtype: str, max_rows: int) -> None:
        from stenod.engines.base import EngineConfig
        from stenod.engines.torch_whisper.engine import TorchWhisperEngine

        self.engine = TorchWhisperEngine(
            EngineConfig("bench", model, True, device="cuda" if CUDA else "cpu", compute_type=dtype, threads=1, concurrency=256),
            max_rows=max_rows,
        )

    beam_size = 1

    def options(self, language: str | None):
        from stenod.engines.base import TranscriptionOptions

        return TranscriptionOptions(language=language, vad=False, beam_size=self.beam_size)

    def run_group(self, clips: list[np.ndarray], language: str | None, workers: int) -> list[str]:
        opts = self.options(language)
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            return [t.text for t in pool.map(lambda a: self.engine.transcribe(a, opts), clips)]

    def closed_loop(self, clips: list[np.ndarray], concurrency: int, language: str) -> tuple[list[str], list[float]]:
        opts = self.options(language)
        texts: list[str] = [""] * len(clips)
        latencies: list[float] = [0.0] * len(clips)
        lock = threading.Lock()
        nxt = [0]

        def worker() -> None:
            while True:
                with lock:
                    i = nxt[0]
                    nxt[0] += 1
                if i >= len(clips):
                    return
                t0 = time.perf_counter()
                texts[i] = self.engine.transcribe(clips[i], opts).text
                latencies[i] = time.perf_counter() - t0

        threads = [threading.Thread(target=worker) for _ in range(concurrency)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return texts, latencies

    def close(self) -> None:
        self.engine.close()


class PipelineSystem:
    name = "transformers-pipeline"

    def __init__(self, model: str, dtype: str) -> None:
        from transformers import pipeline

        self.pipe = pipeline(
            "automatic-speech-recognition",
            model=model,
            dtype=getattr(torch, dtype),
            device="cuda:0" if CUDA else "cpu",
            model_kwargs={"attn_implementation": "sdpa"},
        )

    def run_group(self, clips: list[np.ndarray], language: str | None, workers: int) -> list[str]:
        kwargs = {"task": "transcribe"}
        if language:
            kwargs["language"] = language
        out = self.pipe([c.copy() for c in clips], chunk_length_s=30, batch_size=24, generate_kwargs=kwargs)
        return [o["text"] for o in out]

    def closed_loop(self, clips: list[np.ndarray], concurrency: int, language: str) -> tuple[list[str], list[float]]:
        """What a server around the pipeline can do with C clients: take the C waiting clips, run
        them as one pipeline call (batch_size 24), repeat. Latency = the group's time."""
        texts: list[str] = []
        latencies: list[float] = []
        for i in range(0, len(clips), concurrency):
            group = clips[i : i + concurrency]
            t0 = time.perf_counter()
            texts += self.run_group(group, language, concurrency)
            latencies += [time.perf_counter() - t0] * len(group)
        return texts, latencies

    def close(self) -> None:
        del self.pipe


# --------------------------------------------------------------------------------------------------


CUDA = torch.cuda.is_available()


def peak_reset() -> None:
    if CUDA:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def peak_mb() -> float:
    if not CUDA:
        return 0.0
    torch.cuda.synchronize()
    return round(torch.cuda.max_memory_allocated() / 2**20, 1)


def timed(fn):  # type: ignore[no-untyped-def]
    if CUDA:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    if CUDA:
        torch.cuda.synchronize()
    return out, time.perf_counter() - t0


def bench_system(system, sets, results: Results, args, tag: str) -> None:  # type: ignore[no-untyped-def]
    langs = {}
    warm = list(sets["en-misc-short"].values())
    system.run_group(warm[:4], "en", 4)  # warm-up: kernels, allocator, cuBLAS handles

    # WER sets: all files of a set at once.
    for set_name, clips in sets.items():
        if set_name not in args.wer_sets:
            continue
        language = "en" if set_name in ENGLISH_SETS else None
        names = list(clips)
        audio_s = sum(len(a) for a in clips.values()) / SR
        peak_reset()
        texts, wall = timed(lambda c=clips, ns=names, lang=language: system.run_group([c[n] for n in ns], lang, len(ns)))
        results.put(f"{tag}/wer/{set_name}", {
            "system": system.name, "files": len(names), "audio_s": round(audio_s, 2), "wall_s": round(wall, 3),
            "x_real_time": round(audio_s / wall, 1), "peak_gpu_mb": peak_mb(),
            "hypotheses": dict(zip(names, texts, strict=False)),
        })

    # Long-form: copies of the long files, all at once.
    long_clips = list(sets["longform-en"].values()) * args.long_copies
    audio_s = sum(len(a) for a in long_clips) / SR
    peak_reset()
    texts, wall = timed(lambda: system.run_group(long_clips, "en", len(long_clips)))
    results.put(f"{tag}/longform", {
        "system": system.name, "files": len(long_clips), "audio_s": round(audio_s, 1), "wall_s": round(wall, 3),
        "x_real_time": round(audio_s / wall, 1), "peak_gpu_mb": peak_mb(),
        "hypotheses": {str(i): t for i, t in enumerate(texts[: len(sets["longform-en"])])},
    })
    # One long file alone (latency of a single long request).
    one = max(sets["longform-en"].values(), key=len)
    _, wall = timed(lambda: system.run_group([one], "en", 1))
    results.put(f"{tag}/longform-single", {
        "system": system.name, "audio_s": round(len(one) / SR, 1), "wall_s": round(wall, 3),
        "x_real_time": round(len(one) / SR / wall, 1),
    })

    # Short requests, closed loop at each concurrency.
    pool = [a for s in SHORT_SETS for a in sets[s].values()]
    for c in args.concurrency:
        n = max(args.short_requests, 2 * c)
        clips = [pool[i % len(pool)] for i in range(n)]
        audio_s = sum(len(a) for a in clips) / SR
        peak_reset()
        (texts, lat), wall = timed(lambda cl=clips, cc=c: system.closed_loop(cl, cc, "en"))
        lat_sorted = sorted(lat)
        results.put(f"{tag}/short-{c}", {
            "system": system.name, "concurrency": c, "requests": n, "audio_s": round(audio_s, 1),
            "wall_s": round(wall, 3), "x_real_time": round(audio_s / wall, 1),
            "requests_per_s": round(n / wall, 2), "latency_p50_s": round(statistics.median(lat), 3),
            "latency_p95_s": round(lat_sorted[int(0.95 * (len(lat_sorted) - 1))], 3), "peak_gpu_mb": peak_mb(),
        })
    del langs

    if isinstance(system, TorchEngineSystem):  # accuracy at speed: beam 5 on LibriSpeech, 32 clients
        system.beam_size = 5
        names = list(sets["librispeech-clean100-a"])
        clips = [sets["librispeech-clean100-a"][n] for n in names]
        audio_s = sum(len(a) for a in clips) / SR
        peak_reset()
        (texts, lat), wall = timed(lambda: system.closed_loop(clips, 32, "en"))
        results.put(f"{tag}/beam5-short-32", {
            "system": system.name, "beam_size": 5, "concurrency": 32, "requests": len(clips), "audio_s": round(audio_s, 1),
            "wall_s": round(wall, 3), "x_real_time": round(audio_s / wall, 1), "peak_gpu_mb": peak_mb(),
            "hypotheses": dict(zip(names, texts, strict=False)),
        })
        system.beam_size = 1


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--audio", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--dtype", default="float16")
    ap.add_argument("--max-rows", type=int, default=128)
    ap.add_argument("--long-copies", type=int, default=8)
    ap.add_argument("--short-requests", type=int, default=256)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[8, 32, 128])
    ap.add_argument("--systems", nargs="+", default=["torch", "pipeline"])
    ap.add_argument("--wer-sets", nargs="+", default=[*list(ENGLISH_SETS), "multilingual-fleurs"])
    args = ap.parse_args()
    results = Results(Path(args.out))
    sets = load_sets(Path(args.audio))
    props = torch.cuda.get_device_properties(0) if CUDA else None
    results.data["host"] = {
        "gpu": props.name if props else "none", "gpu_memory_mb": round(props.total_memory / 2**20) if props else 0,
        "gpu_count": torch.cuda.device_count(),
        "torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
        "cpus": os.cpu_count(), "dtype": args.dtype, "max_rows": args.max_rows,
        "sets": {k: round(sum(len(a) for a in v.values()) / SR, 1) for k, v in sets.items()},
    }
    try:
        import transformers

        results.data["host"]["transformers"] = transformers.__version__
    except ImportError:
        pass
    for name in args.systems:
        t0 = time.perf_counter()
        system = TorchEngineSystem(args.model, args.dtype, args.max_rows) if name == "torch" else PipelineSystem(args.model, args.dtype)
        results.put(f"{name}/load", {"load_s": round(time.perf_counter() - t0, 2)})
        bench_system(system, sets, results, args, name)
        system.close()
        if CUDA:
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
