"""Issue 10's targets, side by side in one run on the same base weights (int8 / ggml q8_0).

    python benchmarks/throughput.py --clips 24 --rounds 2 --output docs/bench/throughput-2core.json

Targets, all on ``base``:

* ``whisper.cpp``: pywhispercpp on the ggml q8_0 conversion of the same weights, 2 threads, one
  request at a time (a stand-in for whisper.cpp's server, which serializes requests behind a
  mutex). In-process, audio decoded from the uploaded bytes like a server would.
* ``faster-whisper 2x1``: faster-whisper's best library setup on this machine, one
  ``WhisperModel`` with 2 workers x 1 thread, 8 client threads calling ``transcribe``.
* ``stenod``: ``stenod serve`` with its automatic plan and defaults, 8 concurrent HTTP clients.
* ``stenod unbatched``: the same with ``STENOD_MODEL__BATCH_CLIPS=1`` (every request decoded on
  its own, the plan before cross-request batching).
* ``stenod today``: the same server with ``STENOD_MODEL__TRIM_ENCODER=false``, i.e. the path
  before issue 10 (full 30 s encoder windows, sequential long-form decoding).
* ``stenod beam5``: the new path with ``STENOD_MODEL__BEAM_SIZE=5``.

Measurements: short clips (``librispeech-clean100-a``) at concurrency 8; the same clips one at a
time (latency at concurrency 1, medians); the ``longform-en`` files one at a time. Each round runs
every target once, targets back to back in a fixed order, so drift in machine load hits them alike;
ratios are computed per round and the median over rounds is reported. Every client sends
``language=en`` (the clips are English; whisper.cpp's server defaults to ``en`` too).

On a shared machine wall-clock throughput mostly measures each process's share of the cores (a
process with two busy threads among sixteen runnable ones gets about an eighth of the machine,
however efficient it is), so every measurement also records the CPU seconds the target's process
used; audio seconds per CPU second is the efficiency that decides throughput on idle cores.

Prints a Markdown table and writes JSON (``--output``), rewritten after every measurement so a run
stopped early keeps what it measured.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import io
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

from stenod.audio import decode_audio
from stenod.bench.corpus import load_corpus_or_raise
from stenod.bench.load import LoadItem, LoadOptions, run_load
from stenod.bench.wer import wer
from stenod.engines import EngineConfig, TranscriptionOptions
from stenod.models import resolve_model_or_raise
from stenod.models.ggml_cache import ensure_ggml_model_or_raise
from stenod.settings import ModelSettings

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO.parent / "shared" / "corpus"
MODEL = "base"
LANGUAGE = "en"
TARGETS = ("whisper.cpp", "faster-whisper 2x1", "stenod", "stenod unbatched", "stenod today", "stenod beam5")
SERVER_ENV: dict[str, dict[str, str]] = {
    "stenod": {},
    "stenod unbatched": {"STENOD_MODEL__BATCH_CLIPS": "1"},
    # Today's path: before issue 10 there was no trimmed encoder and glibc kept its malloc defaults.
    "stenod today": {"STENOD_MODEL__TRIM_ENCODER": "false", "STENOD_MODEL__KEEP_FREED_MEMORY_MB": "0"},
    "stenod beam5": {"STENOD_MODEL__BEAM_SIZE": "5"},
    # Not run by default (--targets): stenod with glibc's malloc defaults, for the effect of
    # model.keep_freed_memory_mb side by side.
    "stenod malloc defaults": {"STENOD_MODEL__KEEP_FREED_MEMORY_MB": "0"},
}


ONE_AT_A_TIME = ("stenod", "stenod today", "whisper.cpp", "stenod malloc defaults")
"""Targets measured one request at a time too (``short-c1``, ``long-c1``)."""


@dataclass
class Measurement:
    round: int
    target: str
    workload: str
    """``short-c8``, ``short-c1`` or ``long-c1``."""
    concurrency: int
    requests: int
    audio_s: float
    wall_s: float
    throughput: float
    """Audio seconds transcribed per wall second (x real time)."""
    latency_p50_s: float
    wer: float
    errors: int = 0
    cpu_s: float = 0.0
    """CPU seconds the target's process used during the measurement (all threads)."""
    audio_per_cpu_s: float = 0.0
    """Audio seconds per CPU second: efficiency, robust to other load on the machine. On idle cores
    a target that keeps both cores busy (all of these do) runs at about ``cores x`` this."""


@dataclass
class Report:
    command: str
    host: dict[str, object]
    clips: list[str]
    long_files: list[str]
    measurements: list[Measurement] = field(default_factory=list)
    ratios: dict[str, float] = field(default_factory=dict)
    """Medians over rounds of per-round ratios."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _items(paths: Sequence[Path], refs: dict[str, str]) -> list[LoadItem]:
    return [
        LoadItem(name=p.name, data=p.read_bytes(), audio_s=decode_audio(p).duration_s, reference=refs.get(p.stem))
        for p in paths
    ]


def _in_process(
    target: str, transcribe: Callable[[bytes], str], items: list[LoadItem], *, concurrency: int, workload: str, rnd: int
) -> Measurement:
    latencies: list[float] = []

    def one(item: LoadItem) -> str:
        started = time.perf_counter()
        text = transcribe(item.data)
        latencies.append(time.perf_counter() - started)
        return text

    started = time.perf_counter()
    cpu_started = time.process_time()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        texts = list(pool.map(one, items))
    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    audio = sum(i.audio_s for i in items)
    return Measurement(
        rnd, target, workload, concurrency, len(items), audio, wall, audio / wall, statistics.median(latencies),
        wer([i.reference or "" for i in items], texts), 0, cpu, audio / cpu,
    )


def _process_cpu_s(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Server:
    """``stenod serve`` in a subprocess with extra environment."""

    def __init__(self, name: str, env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = (log_dir / f"serve-{name.replace(' ', '-')}.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "stenod", "serve", "--model", MODEL, "--port", str(self.port), "--queue-size", "64"],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, "HF_HUB_OFFLINE": "1", **env},
        )

    def wait_ready(self, timeout_s: float = 300.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}")
            try:
                if httpx.get(f"{self.url}/ready", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"{self.name} not ready after {timeout_s:.0f} s")

    def measure(self, items: list[LoadItem], *, concurrency: int, workload: str, rnd: int) -> Measurement:
        options = LoadOptions(
            url=self.url, language=LANGUAGE, max_requests=len(items), max_duration_s=3600, request_timeout_s=1800
        )
        cpu_started = _process_cpu_s(self.proc.pid)
        (level,) = asyncio.run(run_load(options, items, [concurrency]))
        cpu = _process_cpu_s(self.proc.pid) - cpu_started
        return Measurement(
            rnd, self.name, workload, concurrency, level.ok, level.audio_s_ok, level.wall_s,
            level.throughput_audio_s_per_s, level.latency_s.p50 if level.latency_s else float("nan"),
            level.wer if level.wer is not None else float("nan"), level.errors, cpu, level.audio_s_ok / cpu,
        )

    def close(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._log.close()


def _whisper_cpp(cache_dir: Path) -> Callable[[bytes], str]:
    from stenod.engines.whisper_cpp import WhisperCppEngine

    resolved = resolve_model_or_raise(MODEL, cache_dir=cache_dir, offline=True)
    ggml = ensure_ggml_model_or_raise(resolved, cache_dir=cache_dir, quantize="q8_0")
    engine = WhisperCppEngine(
        EngineConfig(model_name=MODEL, model_path=str(ggml.path), multilingual=True, compute_type="int8", threads=2)
    )
    options = TranscriptionOptions(language=LANGUAGE)
    return lambda data: engine.transcribe(decode_audio(io.BytesIO(data)).samples, options).text


def _faster_whisper(cache_dir: Path) -> Callable[[bytes], str]:
    from faster_whisper import WhisperModel

    path = resolve_model_or_raise(MODEL, cache_dir=cache_dir, offline=True).path
    model = WhisperModel(str(path), device="cpu", compute_type="int8", cpu_threads=1, num_workers=2)

    def transcribe(data: bytes) -> str:
        audio = decode_audio(io.BytesIO(data)).samples
        segments, _ = model.transcribe(audio, language=LANGUAGE, beam_size=1, best_of=1, vad_filter=len(audio) > 30 * 16000)
        return "".join(s.text for s in segments).strip()

    return transcribe


def _ratios(measurements: list[Measurement]) -> dict[str, float]:
    """Per-round ratios, median over rounds."""
    by: dict[tuple[int, str, str], Measurement] = {(m.round, m.target, m.workload): m for m in measurements}
    rounds = sorted({m.round for m in measurements})
    wanted = {
        "short-c8: stenod / whisper.cpp": ("short-c8", "stenod", "whisper.cpp", "throughput"),
        "short-c8 per CPU s: stenod / whisper.cpp": ("short-c8", "stenod", "whisper.cpp", "audio_per_cpu_s"),
        "short-c8 per CPU s: stenod / faster-whisper 2x1": ("short-c8", "stenod", "faster-whisper 2x1", "audio_per_cpu_s"),
        "short-c8 per CPU s: stenod / stenod today": ("short-c8", "stenod", "stenod today", "audio_per_cpu_s"),
        "short-c8 per CPU s: stenod / stenod unbatched": ("short-c8", "stenod", "stenod unbatched", "audio_per_cpu_s"),
        "short-c8: stenod / stenod unbatched": ("short-c8", "stenod", "stenod unbatched", "throughput"),
        "short-c8 per CPU s: stenod beam5 / whisper.cpp": ("short-c8", "stenod beam5", "whisper.cpp", "audio_per_cpu_s"),
        "long-c1 per CPU s: stenod / whisper.cpp": ("long-c1", "stenod", "whisper.cpp", "audio_per_cpu_s"),
        "long-c1 per CPU s: stenod / stenod today": ("long-c1", "stenod", "stenod today", "audio_per_cpu_s"),
        "short-c8: stenod / faster-whisper 2x1": ("short-c8", "stenod", "faster-whisper 2x1", "throughput"),
        "short-c8: stenod / stenod today": ("short-c8", "stenod", "stenod today", "throughput"),
        "short-c8: stenod today / whisper.cpp": ("short-c8", "stenod today", "whisper.cpp", "throughput"),
        "short-c8: stenod beam5 / whisper.cpp": ("short-c8", "stenod beam5", "whisper.cpp", "throughput"),
        "short-c8: stenod beam5 / stenod": ("short-c8", "stenod beam5", "stenod", "throughput"),
        "long-c1: stenod / whisper.cpp": ("long-c1", "stenod", "whisper.cpp", "throughput"),
        "long-c1: stenod / stenod today": ("long-c1", "stenod", "stenod today", "throughput"),
        "short-c1 median latency: stenod / stenod today": ("short-c1", "stenod", "stenod today", "latency_p50_s"),
        "short-c8: stenod / stenod malloc defaults": ("short-c8", "stenod", "stenod malloc defaults", "throughput"),
        "long-c1: stenod / stenod malloc defaults": ("long-c1", "stenod", "stenod malloc defaults", "throughput"),
        "short-c1 median latency: stenod / stenod malloc defaults": (
            "short-c1", "stenod", "stenod malloc defaults", "latency_p50_s"),
    }
    out: dict[str, float] = {}
    for name, (workload, a, b, attr) in wanted.items():
        values = [
            getattr(by[(r, a, workload)], attr) / getattr(by[(r, b, workload)], attr)
            for r in rounds
            if (r, a, workload) in by and (r, b, workload) in by
        ]
        if values:
            out[name] = round(statistics.median(values), 3)
    return out


def _table(report: Report) -> str:
    lines = [
        "| round | workload | target | C | requests | audio s | wall s | x real time | p50 latency s | WER % "
        "| CPU s | audio s / CPU s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m in report.measurements:
        lines.append(
            f"| {m.round} | {m.workload} | {m.target} | {m.concurrency} | {m.requests} | {m.audio_s:.0f} | "
            f"{m.wall_s:.1f} | {m.throughput:.2f} | {m.latency_p50_s:.2f} | {100 * m.wer:.2f} | {m.cpu_s:.1f} | "
            f"{m.audio_per_cpu_s:.2f} |"
        )
    lines += ["", "| ratio (median over rounds) | value |", "|---|---|"]
    lines += [f"| {k} | {v:.2f} |" for k, v in report.ratios.items()]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=24, help="librispeech-clean100-a clips (of 50)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--workloads", default="short-c8,short-c1,long-c1")
    parser.add_argument("--long-files", default="all", help="'all' or comma-separated stems of longform-en")
    parser.add_argument("--output", type=Path, default=REPO / "bench-results" / "throughput.json")
    args = parser.parse_args()
    targets = [t for t in args.targets.split(",") if t]
    workloads = [w for w in args.workloads.split(",") if w]
    cache_dir = ModelSettings().cache_dir
    corpus = load_corpus_or_raise([CORPUS / "librispeech-clean100-a"], limit=args.clips)
    clips = [LoadItem(c.path.name, c.path.read_bytes(), decode_audio(c.path).duration_s, c.reference) for c in corpus]
    long_set = load_corpus_or_raise([CORPUS / "longform-en"])
    longs = [
        LoadItem(c.path.name, c.path.read_bytes(), decode_audio(c.path).duration_s, c.reference)
        for c in long_set
        if args.long_files == "all" or c.path.stem in args.long_files.split(",")
    ]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    report = Report(
        command=" ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        host={"cores": len(os.sched_getaffinity(0)), "cpu": platform.processor() or platform.machine(),
              "loadavg_start": os.getloadavg()},
        clips=[c.name for c in clips], long_files=[c.name for c in longs],
    )
    servers = {t: Server(t, SERVER_ENV[t], args.output.parent) for t in targets if t in SERVER_ENV}
    in_process: dict[str, Callable[[bytes], str]] = {}
    try:
        if "whisper.cpp" in targets:
            in_process["whisper.cpp"] = _whisper_cpp(cache_dir)
        if "faster-whisper 2x1" in targets:
            in_process["faster-whisper 2x1"] = _faster_whisper(cache_dir)
        for server in servers.values():
            server.wait_ready()
            server.measure(clips[:1], concurrency=1, workload="warm-up", rnd=0)
        for fn in in_process.values():
            fn(clips[0].data)  # warm-up
        plan = {
            "short-c8": (clips, args.concurrency),
            "short-c1": (clips, 1),
            "long-c1": (longs, 1),
        }
        for rnd in range(1, args.rounds + 1):
            for workload in workloads:
                items, concurrency = plan[workload]
                for target in targets:
                    if workload in ("short-c1", "long-c1") and target not in ONE_AT_A_TIME:
                        continue
                    # whisper.cpp serves one request at a time, whatever the number of clients.
                    c = 1 if target == "whisper.cpp" else concurrency
                    if target in servers:
                        m = servers[target].measure(items, concurrency=c, workload=workload, rnd=rnd)
                    else:
                        m = _in_process(target, in_process[target], items, concurrency=c, workload=workload, rnd=rnd)
                    report.measurements.append(m)
                    report.ratios = _ratios(report.measurements)
                    print(f"round {rnd} {workload} {target}: {m.throughput:.2f}x real time, p50 {m.latency_p50_s:.2f} s, "
                          f"WER {100 * m.wer:.2f} %, {m.audio_per_cpu_s:.2f} audio s per CPU s", flush=True)
                    report.host["loadavg_end"] = os.getloadavg()
                    args.output.write_text(json.dumps(asdict(report), indent=2) + "\n", encoding="utf-8")
    finally:
        for server in servers.values():
            server.close()
    print()
    print(_table(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
