"""Long files through the server's engine: WER per file, wall and CPU seconds, core utilization.

    HF_HUB_OFFLINE=1 python benchmarks/longform_server.py --cache-dir /work/.cache-stenod \\
        --output bench-out/longform-server.json

The files of ``benchmarks/longform_coverage.py`` (its 20 built recordings, ``--sweep`` included)
and the two ``longform-en`` files, each through :func:`stenod.decoding.transcribe_with_coverage`
on the engine ``stenod serve`` builds on this machine (``server_cpu_plan``: on 2 cores 2
CTranslate2 workers x 1 thread, window batches on), one file at a time, language given.
``utilization`` is process CPU seconds over (cores x wall seconds): how much of the machine one
long request keeps busy. To compare two versions of the code, run it on a checkout of each,
back to back on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))

from longform_coverage import CORPUS, SPECS  # noqa: E402

from stenod.audio import decode_audio  # noqa: E402
from stenod.bench.longform import build_recording, corpus_clips  # noqa: E402
from stenod.bench.wer import wer  # noqa: E402
from stenod.decoding import transcribe_with_coverage  # noqa: E402
from stenod.engines import TranscriptionOptions  # noqa: E402
from stenod.engines.factory import cpu_count, create_engine  # noqa: E402
from stenod.models import resolve_model_or_raise  # noqa: E402
from stenod.service.builder import server_cpu_plan  # noqa: E402
from stenod.settings import Settings  # noqa: E402


def _files() -> list[tuple[str, str, object, str]]:
    """(name, language, samples, reference) of every file, built recordings first."""
    files: list[tuple[str, str, object, str]] = []
    for index, spec in enumerate(SPECS):
        clips = corpus_clips(CORPUS / spec.set_name, language=spec.language, limit=spec.count, skip=spec.skip)
        if spec.reverse:
            clips = clips[::-1]
        language = spec.language or "en"
        rec = build_recording(str(index), clips, language=language, pause_range_s=spec.pauses,
                              filler_every=spec.filler_every, seed=index if spec.seed is None else spec.seed)
        files.append((f"{index} {spec.set_name} {language}", language, rec.audio, rec.reference))
    refs = dict(line.split("\t", 1) for line in (CORPUS / "longform-en/transcripts.tsv").read_text(encoding="utf-8").splitlines() if "\t" in line)
    for path in sorted((CORPUS / "longform-en/audio").iterdir()):
        files.append((path.stem, "en", decode_audio(path).samples, refs[path.stem]))
    return files


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="base")
    parser.add_argument("--cache-dir", type=Path, default=Path(".cache"))
    parser.add_argument("--output", type=Path, default=REPO / "bench-results" / "longform-server.json")
    args = parser.parse_args()
    settings = Settings()
    plan = server_cpu_plan(settings)
    resolved = resolve_model_or_raise(args.model, cache_dir=args.cache_dir, offline=True)
    engine = create_engine(resolved, settings.model, threads=plan.threads, concurrency=plan.concurrency,
                           batch_size=plan.batch_size)
    files = _files()
    transcribe_with_coverage(engine, files[-1][2][: 16000 * 60], TranscriptionOptions(language="en"))  # type: ignore[index]
    per_file: dict[str, float] = {}
    wall_started, cpu_started = time.perf_counter(), time.process_time()
    for name, language, audio, reference in files:
        text = transcribe_with_coverage(engine, audio, TranscriptionOptions(language=language)).text  # type: ignore[arg-type]
        per_file[name] = round(100 * wer([reference], [text], language=language), 2)
    wall, cpu = time.perf_counter() - wall_started, time.process_time() - cpu_started
    engine.close()
    result = {
        "model": args.model, "plan": {"threads": plan.threads, "workers": plan.concurrency, "batch": plan.batch_size},
        "audio_s": round(sum(len(f[2]) for f in files) / 16000, 1), "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),  # type: ignore[arg-type]
        "utilization": round(cpu / (cpu_count() * wall), 3), "mean_wer": round(statistics.mean(per_file.values()), 3),
        "load_average": [round(x, 2) for x in os.getloadavg()], "wer": per_file,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(json.dumps({k: v for k, v in result.items() if k != "wer"}))
    for name, value in per_file.items():
        print(f"| {name} | {value} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
