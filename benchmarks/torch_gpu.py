"""GPU benchmark of the torch engine against transformers' ASR pipeline, same weights, same audio.

Runs where a CUDA GPU is (the lent H200 in docs/BENCHMARKS.md); writes one JSON file of results
and hypotheses (WER is scored afterwards on a machine with the normalizer, by
``benchmarks/torch_gpu_report.py``). Every phase appends to the JSON as it finishes, so a run cut
short still reports what it measured.

Phases (all systems loaded in the same process, on the same card):
  wer        every corpus set, all files of a set submitted at once (each system's default:
             torch with timestamps, the pipeline without)
  wer-nots / wer-ts   the same like for like: torch without timestamps, pipeline with them
  wer-t0     torch with timestamps but no temperature fallback (the pipeline has none)
  longform   the long files, all at once, several copies (long-form throughput), per round
  short-C    C concurrent clients replaying short clips (C = 8, 32, 128), closed loop; the
             systems alternate round by round so a slow spell hits both
  beam5      both systems with beam 5 (32 clients on LibriSpeech, and every WER set)
Systems: ``torch`` (greedy on fixed buffers replayed as CUDA graphs, the default), ``torch-eager``
(the general decoding loop, short phases only: what the graphs bring) and ``pipeline``.
The baseline is ``pipeline("automatic-speech-recognition", chunk_length_s=30, batch_size=24,
fp16, sdpa)``, the insanely-fast-whisper recipe: each request group is one pipeline call over
the group's clips (a server wrapping the pipeline can batch no more than what is waiting).
The pipeline is told its beam width (``num_beams``) on every call: since transformers 5 the ASR
pipeline's own default is beam search with 5 beams (``pipe.generation_config.num_beams``), so a
call without it compares the torch engine's greedy decoding with the pipeline's beam search.
Greedy phases run both greedy; the beam5 phases run both with 5 beams.

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

    def __init__(self, model: str, dtype: str, max_rows: int, static: bool = True) -> None:
        from stenod.engines.base import EngineConfig
        from stenod.engines.torch_whisper.engine import TorchWhisperEngine

        if not static:
            self.name = "stenod-torch-eager"
        self.engine = TorchWhisperEngine(
            EngineConfig("bench", model, True, device="cuda" if CUDA else "cpu", compute_type=dtype, threads=1, concurrency=256),
            max_rows=max_rows,
            static_decoding=static,
        )

    beam_size = 1
    timestamps = True
    fallback = True
    """Temperature fallback (the engine's default); the pipeline has none."""

    def options(self, language: str | None):
        from stenod.engines.base import TranscriptionOptions

        extra = {} if self.fallback else {"temperature": (0.0,)}
        return TranscriptionOptions(
            language=language, vad=False, beam_size=self.beam_size, without_timestamps=not self.timestamps, **extra
        )

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

    timestamps = False
    beam_size = 1

    def run_group(self, clips: list[np.ndarray], language: str | None, workers: int) -> list[str]:
        kwargs: dict[str, object] = {"task": "transcribe", "num_beams": self.beam_size}
        if language:
            kwargs["language"] = language
        extra = {"return_timestamps": True} if self.timestamps else {}
        out = self.pipe([c.copy() for c in clips], chunk_length_s=30, batch_size=24, generate_kwargs=kwargs, **extra)
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


def allocated_mb() -> float:
    if not CUDA:
        return 0.0
    torch.cuda.synchronize()
    return torch.cuda.memory_allocated() / 2**20


class Peak:
    """Peak GPU memory of one phase attributed to one system: what it keeps resident (weights,
    fixed buffers) plus the most the phase added on top of what was allocated before it (the
    other systems stay loaded, so the process-wide peak would count them too)."""

    def __init__(self, resident_mb: float) -> None:
        self.resident_mb = resident_mb
        self.before = allocated_mb()
        if CUDA:
            torch.cuda.reset_peak_memory_stats()

    def mb(self) -> float:
        if not CUDA:
            return 0.0
        torch.cuda.synchronize()
        return round(self.resident_mb + torch.cuda.max_memory_allocated() / 2**20 - self.before, 1)


def timed(fn):  # type: ignore[no-untyped-def]
    if CUDA:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    if CUDA:
        torch.cuda.synchronize()
    return out, time.perf_counter() - t0


def wer_phases(system, sets, results: Results, args, key: str) -> None:  # type: ignore[no-untyped-def]
    """Every WER set, all files of a set at once; ``key`` names the variant (wer, wer-nots...)."""
    for set_name, clips in sets.items():
        if set_name not in args.wer_sets:
            continue
        language = "en" if set_name in ENGLISH_SETS else None
        names = list(clips)
        audio_s = sum(len(a) for a in clips.values()) / SR
        peak = Peak(system.resident_mb)
        texts, wall = timed(lambda c=clips, ns=names, lang=language: system.run_group([c[n] for n in ns], lang, len(ns)))
        results.put(f"{system.tag}/{key}/{set_name}", {
            "system": system.name, "files": len(names), "audio_s": round(audio_s, 2), "wall_s": round(wall, 3),
            "x_real_time": round(audio_s / wall, 1), "peak_gpu_mb": peak.mb(), "timestamps": system.timestamps,
            "beam_size": getattr(system, "beam_size", 1), "hypotheses": dict(zip(names, texts, strict=False)),
        })


def longform_phases(system, sets, results: Results, args) -> None:  # type: ignore[no-untyped-def]
    long_clips = list(sets["longform-en"].values()) * args.long_copies
    audio_s = sum(len(a) for a in long_clips) / SR
    walls = []
    peak = Peak(system.resident_mb)
    for _ in range(args.rounds):
        texts, wall = timed(lambda: system.run_group(long_clips, "en", len(long_clips)))
        walls.append(wall)
    results.put(f"{system.tag}/longform", {
        "system": system.name, "files": len(long_clips), "rounds": args.rounds, "audio_s": round(audio_s, 1),
        "wall_s": round(sum(walls), 3), "x_real_time": round(args.rounds * audio_s / sum(walls), 1),
        "x_real_time_rounds": [round(audio_s / w, 1) for w in walls], "peak_gpu_mb": peak.mb(),
        "hypotheses": {str(i): t for i, t in enumerate(texts[: len(sets["longform-en"])])},
    })
    one = max(sets["longform-en"].values(), key=len)
    walls = [timed(lambda: system.run_group([one], "en", 1))[1] for _ in range(args.rounds)]
    results.put(f"{system.tag}/longform-single", {
        "system": system.name, "audio_s": round(len(one) / SR, 1), "wall_s": round(sum(walls), 3),
        "x_real_time": round(args.rounds * len(one) / SR / sum(walls), 1),
        "x_real_time_rounds": [round(len(one) / SR / w, 1) for w in walls],
    })


def short_phases(systems, sets, results: Results, args) -> None:  # type: ignore[no-untyped-def]
    """C clients in a closed loop; the systems alternate round by round (order reversed every
    round), so a slow spell of the machine hits both."""
    pool = [a for s in SHORT_SETS for a in sets[s].values()]
    for c in args.concurrency:
        n = max(args.short_requests, 3 * c)
        clips = [pool[i % len(pool)] for i in range(n)]
        audio_s = sum(len(a) for a in clips) / SR
        acc = {s.tag: {"walls": [], "lat": [], "peak": 0.0} for s in systems}
        for r in range(args.rounds):
            for system in systems if r % 2 == 0 else systems[::-1]:
                peak = Peak(system.resident_mb)
                (_texts, lat), wall = timed(lambda cl=clips, cc=c, s=system: s.closed_loop(cl, cc, "en"))
                a = acc[system.tag]
                a["walls"].append(wall)
                a["lat"] += lat
                a["peak"] = max(a["peak"], peak.mb())
                print(f"  short-{c} round {r} {system.tag}: {audio_s / wall:.1f} x RT", flush=True)
        for system in systems:
            a = acc[system.tag]
            lat_sorted = sorted(a["lat"])
            results.put(f"{system.tag}/short-{c}", {
                "system": system.name, "concurrency": c, "requests": n, "rounds": args.rounds, "audio_s": round(audio_s, 1),
                "wall_s": round(sum(a["walls"]), 3), "x_real_time": round(args.rounds * audio_s / sum(a["walls"]), 1),
                "x_real_time_rounds": [round(audio_s / w, 1) for w in a["walls"]],
                "requests_per_s": round(args.rounds * n / sum(a["walls"]), 2),
                "latency_p50_s": round(statistics.median(lat_sorted), 3),
                "latency_p95_s": round(lat_sorted[int(0.95 * (len(lat_sorted) - 1))], 3), "peak_gpu_mb": a["peak"],
            })


def beam_phase(system, sets, results: Results) -> None:  # type: ignore[no-untyped-def]
    """Accuracy at speed: beam 5 on LibriSpeech, 32 clients (the pipeline in groups of 32)."""
    system.beam_size = 5
    names = list(sets["librispeech-clean100-a"])
    clips = [sets["librispeech-clean100-a"][n] for n in names]
    audio_s = sum(len(a) for a in clips) / SR
    peak = Peak(system.resident_mb)
    (texts, lat), wall = timed(lambda: system.closed_loop(clips, 32, "en"))
    results.put(f"{system.tag}/beam5-short-32", {
        "system": system.name, "beam_size": 5, "concurrency": 32, "requests": len(clips), "audio_s": round(audio_s, 1),
        "wall_s": round(wall, 3), "x_real_time": round(audio_s / wall, 1), "peak_gpu_mb": peak.mb(),
        "latency_p50_s": round(statistics.median(lat), 3), "hypotheses": dict(zip(names, texts, strict=False)),
    })
    system.beam_size = 1


def load(name: str, args, results: Results):  # type: ignore[no-untyped-def]
    before = allocated_mb()
    t0 = time.perf_counter()
    if name == "pipeline":
        system = PipelineSystem(args.model, args.dtype)
    else:
        system = TorchEngineSystem(args.model, args.dtype, args.max_rows, static=name == "torch")
    system.tag = name
    system.resident_mb = round(allocated_mb() - before, 1)
    warm = list(sets_cache["en-misc-short"].values())
    system.run_group(warm[:4], "en", 4)  # warm-up: kernels, allocator, cuBLAS handles
    if CUDA:  # and the larger batch buckets
        system.run_group(warm * 8, "en", 48)
    results.put(f"{name}/load", {"load_s": round(time.perf_counter() - t0, 2), "resident_gpu_mb": system.resident_mb})
    return system


sets_cache: dict[str, dict[str, np.ndarray]] = {}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--audio", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--dtype", default="float16")
    ap.add_argument("--max-rows", type=int, default=128)
    ap.add_argument("--long-copies", type=int, default=8)
    ap.add_argument("--short-requests", type=int, default=320)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[8, 32, 128])
    ap.add_argument("--systems", nargs="+", default=["torch", "pipeline", "torch-eager"],
                    help="torch (fixed buffers + CUDA graphs), torch-eager (the general loop), pipeline")
    ap.add_argument("--wer-sets", nargs="+", default=list(ENGLISH_SETS))
    ap.add_argument("--skip", nargs="*", default=[], help="phases to skip: wer, like, longform, short, beam")
    args = ap.parse_args()
    results = Results(Path(args.out))
    sets = load_sets(Path(args.audio))
    sets_cache.update(sets)
    props = torch.cuda.get_device_properties(0) if CUDA else None
    results.data["host"] = {
        "gpu": props.name if props else "none", "gpu_memory_mb": round(props.total_memory / 2**20) if props else 0,
        "gpu_count": torch.cuda.device_count(),
        "torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
        "cpus": os.cpu_count(), "dtype": args.dtype, "max_rows": args.max_rows, "rounds": args.rounds,
        "sets": {k: round(sum(len(a) for a in v.values()) / SR, 1) for k, v in sets.items()},
    }
    try:
        import transformers

        results.data["host"]["transformers"] = transformers.__version__
    except ImportError:
        pass
    systems = [load(name, args, results) for name in args.systems]
    for system in systems:
        if hasattr(system, "pipe"):  # what a call without num_beams would have used
            results.data["host"]["pipeline_default_num_beams"] = system.pipe.generation_config.num_beams
    main_systems = [s for s in systems if s.tag != "torch-eager"]
    if "wer" not in args.skip:  # each system's own default: torch with timestamps, pipeline without
        for system in main_systems:
            wer_phases(system, sets, results, args, "wer")
    if "like" not in args.skip:  # like for like: torch without timestamps, pipeline with
        for system in main_systems:
            system.timestamps = not system.timestamps
            wer_phases(system, sets, results, args, "wer-nots" if system.tag == "torch" else "wer-ts")
            system.timestamps = not system.timestamps
            if system.tag == "torch":  # and without temperature fallback, which the pipeline lacks
                system.fallback = False
                wer_phases(system, sets, results, args, "wer-t0")
                system.fallback = True
    if "longform" not in args.skip:
        for system in main_systems:
            longform_phases(system, sets, results, args)
    if "short" not in args.skip:
        short_phases(systems, sets, results, args)
    if "beam" not in args.skip:
        for system in main_systems:
            beam_phase(system, sets, results)
            system.beam_size = 5
            wer_phases(system, sets, results, args, "wer-beam5")
            system.beam_size = 1
    for system in systems:
        if hasattr(system, "engine"):
            results.put(f"{system.tag}/device_stats", {"stats": system.engine.device_stats()})
        system.close()


if __name__ == "__main__":
    main()
