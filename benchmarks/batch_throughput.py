"""Throughput of ``stenod batch`` in its local modes, end to end as a user runs it.

For each model and corpus set, runs ``stenod batch`` (a fresh process each time, so worker start-up
and model loading are included) in three configurations on the same files:

- ``1 worker``: one worker process with every core (threads = cores);
- ``N workers``: one single-thread worker per core;
- ``batched``: one process, every core, faster-whisper's BatchedInferencePipeline (``--batch-size``).

Configurations are interleaved per (model, set), and with ``--rounds`` > 1 every other round runs
them in reverse order, so that load from other processes on a shared machine hits them alike; read
the results as side-by-side ratios within a round. Writes a JSON result and prints a
Markdown table.

    python benchmarks/batch_throughput.py --models tiny.en,base \\
        --sets librispeech-clean100-a,longform-en --output bench-results/batch-throughput.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CORPUS = REPO.parent / "shared" / "corpus"


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def configurations(cores: int, batch_size: int) -> list[tuple[str, list[str]]]:
    return [
        ("1 worker", ["--workers", "1", "--threads", str(cores)]),
        (f"{cores} workers", ["--workers", str(cores), "--threads", "1"]),
        (f"batched (batch size {batch_size})", ["--batch-size", str(batch_size), "--threads", str(cores)]),
    ]


def link_files(source: Path, dest: Path, limit: int) -> int:
    dest.mkdir(parents=True)
    files = sorted(p for p in source.iterdir() if p.is_file())[: limit or None]
    for f in files:
        (dest / f.name).symlink_to(f.resolve())
    return len(files)


def run_one(stenod: str, input_dir: Path, out: Path, model: str, extra: list[str]) -> dict[str, Any]:
    cmd = [stenod, "batch", str(input_dir), "-o", str(out), "-m", model, "--formats", "txt", *extra]
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {done.returncode}:\n{done.stderr[-2000:]}")
    summary = json.loads((out / "summary.json").read_text())
    return {
        "command": " ".join(cmd[1:]),
        "process_s": round(elapsed, 2),
        "wall_s": summary["wall_s"],
        "files_ok": summary["files_ok"],
        "audio_s": summary["total_audio_s"],
        "throughput_audio_x": summary["throughput_audio_x"],
        "end_to_end_audio_x": round(summary["total_audio_s"] / elapsed, 2),
        "files_per_min": summary["throughput_files_per_min"],
        "overall_rtf": summary["overall_rtf"],
        "runner": summary["runner"],
    }


def markdown(results: list[dict[str, Any]]) -> str:
    lines = [
        "| round | set | model | configuration | files | audio s | wall s | x real time | vs 1 worker | per-file RTF |",
        "|---:|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    base = {(r["round"], r["set"], r["model"]): r["end_to_end_audio_x"] for r in results
            if r["configuration"] == "1 worker"}
    for r in results:
        key = (r["round"], r["set"], r["model"])
        ratio = r["end_to_end_audio_x"] / base[key] if base.get(key) else float("nan")
        lines.append(
            f"| {r['round']} | {r['set']} | {r['model']} | {r['configuration']} | {r['files_ok']} | {r['audio_s']:.0f} | "
            f"{r['process_s']:.1f} | {r['end_to_end_audio_x']:.1f} | {ratio:.2f} | {r['overall_rtf']:.3f} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tiny.en,base")
    parser.add_argument("--sets", default="librispeech-clean100-a")
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--limit", type=int, default=0, help="First N files of each set (0 = all).")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=1, help="Repeat; odd rounds run the configurations in reverse.")
    parser.add_argument("--output", type=Path, default=REPO / "bench-results" / "batch-throughput.json")
    args = parser.parse_args()

    stenod = shutil.which("stenod") or str(Path(sys.executable).parent / "stenod")
    cores = _cores()
    results: list[dict[str, Any]] = []
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="stenod-batch-bench-") as tmp:
        for set_name in args.sets.split(","):
            input_dir = Path(tmp) / set_name
            n_files = link_files(args.corpus / set_name / "audio", input_dir, args.limit)
            for round_no in range(1, args.rounds + 1):
                for model in args.models.split(","):
                    configs = configurations(cores, args.batch_size)
                    for name, extra in (configs if round_no % 2 else configs[::-1]):
                        out = Path(tmp) / "out" / f"{set_name}-{model}-{len(results)}"
                        r = run_one(stenod, input_dir, out, model, extra)
                        r.update(round=round_no, set=set_name, model=model, configuration=name, files=n_files)
                        results.append(r)
                        print(f"round {round_no} {set_name} {model} {name}: {r['end_to_end_audio_x']:.1f}x real "
                              f"time ({r['process_s']:.1f} s)", file=sys.stderr, flush=True)
    report = {
        "benchmark": "batch_throughput",
        "argv": sys.argv,
        "machine": {"cores": cores, "platform": platform.platform(), "python": platform.python_version(),
                    "loadavg_before": load_before, "loadavg_after": os.getloadavg()},
        "results": results,
        "markdown": markdown(results),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(report["markdown"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
