"""Server overhead and slot layout, measured side by side in one run.

1. faster-whisper used directly (in-process, same model, threads and parallelism as the server,
   decoding included) at concurrency C, versus stenod's HTTP API at the same C: the ratio is the
   cost of HTTP, multipart, scheduling and rendering (target <= 1.05).
2. stenod with two single-thread slots versus one two-thread slot (the layout a serialized
   server such as whisper.cpp's uses) under the same load: which default to ship.

Prints a Markdown table and writes JSON (``--output``). Example:

    python benchmarks/server_overhead.py --model tiny.en --limit 16 --concurrency 1,8
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from stenod.audio import decode_audio
from stenod.bench.corpus import load_corpus_or_raise
from stenod.bench.load import LoadItem, LoadOptions, run_load
from stenod.models import resolve_model_or_raise
from stenod.settings import ModelSettings

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CORPUS = REPO.parent / "shared" / "corpus" / "librispeech-clean100-a"


@dataclass
class Row:
    target: str
    slots: int
    threads: int
    concurrency: int
    requests: int
    audio_s: float
    wall_s: float
    throughput: float
    """Audio seconds per wall second."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def direct(model_path: Path, items: list[LoadItem], *, slots: int, threads: int, concurrency: int, rounds: int) -> Row:
    from faster_whisper import WhisperModel

    model = WhisperModel(str(model_path), device="cpu", compute_type="int8", cpu_threads=threads, num_workers=slots)

    def one(item: LoadItem) -> None:
        audio = decode_audio(io.BytesIO(item.data)).samples
        segments, _ = model.transcribe(audio, beam_size=1, best_of=1, language="en" if not model.model.is_multilingual else None)
        list(segments)

    one(items[0])  # warm-up
    work = items * rounds
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, work))
    wall = time.perf_counter() - started
    audio = sum(i.audio_s for i in work)
    model.model.unload_model()
    return Row("faster-whisper direct", slots, threads, concurrency, len(work), audio, wall, audio / wall)


def served(model: str, items: list[LoadItem], *, slots: int, threads: int, concurrency: int, rounds: int, log_dir: Path) -> Row:
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    log = (log_dir / f"serve-{slots}x{threads}-c{concurrency}.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "stenod", "serve", "--model", model, "--port", str(port), "--slots", str(slots),
         "--threads", str(threads), "--queue-size", "64"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        httpx.post(f"{url}/v1/audio/transcriptions", files={"file": (items[0].name, items[0].data)}, timeout=120)
        n = len(items) * rounds
        options = LoadOptions(url=url, max_requests=n, max_duration_s=3600, request_timeout_s=600)
        (level,) = asyncio.run(run_load(options, items, [concurrency]))
        assert level.ok == n, level.status_counts
        return Row("stenod HTTP", slots, threads, concurrency, level.ok, level.audio_s_ok, level.wall_s,
                   level.throughput_audio_s_per_s)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        log.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--limit", type=int, default=16, help="files from the corpus set")
    parser.add_argument("--rounds", type=int, default=1, help="times each file is sent per measurement")
    parser.add_argument("--concurrency", default="1,8")
    parser.add_argument("--output", type=Path, default=REPO / "bench-results" / "server_overhead.json")
    args = parser.parse_args()
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    corpus = load_corpus_or_raise([args.corpus], limit=args.limit)
    items = [
        LoadItem(name=c.path.name, data=c.path.read_bytes(), audio_s=decode_audio(c.path).duration_s, reference=c.reference)
        for c in corpus
    ]
    cores = len(os.sched_getaffinity(0))
    model_path = resolve_model_or_raise(args.model, cache_dir=ModelSettings().cache_dir, offline=True).path
    args.output.parent.mkdir(parents=True, exist_ok=True)
    rows: list[Row] = []
    for c in concurrencies:
        slots = min(c, cores)
        rows.append(direct(model_path, items, slots=slots, threads=max(1, cores // slots), concurrency=c, rounds=args.rounds))
        rows.append(served(args.model, items, slots=slots, threads=max(1, cores // slots), concurrency=c,
                           rounds=args.rounds, log_dir=args.output.parent))
    if cores >= 2:  # the serialized layout, for the default-slots decision
        c = max(concurrencies)
        rows.append(served(args.model, items, slots=1, threads=cores, concurrency=c, rounds=args.rounds,
                           log_dir=args.output.parent))
    print(f"model {args.model}, {len(items)} files x {args.rounds} rounds, {cores} cores\n")
    print("| target | slots x threads | C | requests | audio s | wall s | audio s / s | direct / stenod |")
    print("|---|---|---|---|---|---|---|---|")
    direct_by = {(r.concurrency, r.slots, r.threads): r.throughput for r in rows if r.target.startswith("faster")}
    for r in rows:
        baseline = direct_by.get((r.concurrency, r.slots, r.threads))
        ratio = baseline / r.throughput if baseline and r.target.startswith("stenod") else None
        print(f"| {r.target} | {r.slots} x {r.threads} | {r.concurrency} | {r.requests} | {r.audio_s:.1f} | "
              f"{r.wall_s:.2f} | {r.throughput:.2f} | {'' if ratio is None else f'{ratio:.3f}'} |")
    args.output.write_text(json.dumps({"model": args.model, "cores": cores, "rows": [asdict(r) for r in rows]}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
