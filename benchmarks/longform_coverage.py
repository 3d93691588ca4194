"""Long-form accuracy and speed: today's single decoding pass vs the coverage-checked path (issue 11).

    python benchmarks/longform_coverage.py --model base --output-dir bench-out/longform [--sweep]

For every file: the recordings built from corpus clips (:mod:`stenod.bench.longform`: several
FLEURS languages, LibriSpeech, LJ Speech; pauses of 0.3-3 s; silence and noise stretches) and the
shared ``longform-en`` files, it measures

- ``clip_wer``: the same clips transcribed one by one (built recordings and the LJ Speech
  concatenation, whose clips are ``ljspeech-lj001``);
- ``old_wer`` / ``old_s`` / ``old_cpu_s``: ``engine.transcribe`` on the whole file (the path
  before issue 11);
- ``new_wer`` / ``new_s`` / ``new_cpu_s``: :func:`stenod.decoding.transcribe_with_coverage`;
- ``silence_words``: words the new path put inside the silence and noise stretches.

Old and new run back to back on each file (new first on odd files) so drifting machine load hits
both alike. Speed is compared in process CPU seconds (every decoding thread is in this process),
which other programs on a shared machine barely move; wall seconds are kept too, and the load
average is recorded. Writes
``<output-dir>/longform.json`` and ``<output-dir>/longform.md`` and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from stenod.audio.decode import SAMPLE_RATE, decode_audio
from stenod.bench.longform import LongRecording, build_recording, corpus_clips
from stenod.bench.wer import wer
from stenod.decoding import transcribe_with_coverage
from stenod.engines import TranscriptionOptions, create_engine
from stenod.models import resolve_model_or_raise
from stenod.settings import ModelSettings

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO.parent / "shared" / "corpus"


@dataclass(frozen=True)
class Spec:
    set_name: str
    language: str | None
    count: int
    skip: int
    pauses: tuple[float, float]
    filler_every: int
    reverse: bool = False
    """Clips in reverse order (the FLEURS sets have ten clips a language: a new order is a new file)."""
    seed: int | None = None
    """Seed of the pauses and noise; default: the index in :data:`SPECS`."""


SPECS = [
    Spec("multilingual-fleurs", "en", 10, 0, (0.5, 0.5), 0),
    Spec("multilingual-fleurs", "en", 10, 0, (0.3, 3.0), 3),
    Spec("multilingual-fleurs", "de", 10, 0, (0.3, 1.0), 0),
    Spec("multilingual-fleurs", "fr", 10, 0, (1.0, 1.0), 4),
    Spec("multilingual-fleurs", "es", 10, 0, (0.3, 3.0), 3),
    Spec("multilingual-fleurs", "pt", 10, 0, (0.5, 2.0), 0),
    Spec("librispeech-clean100-a", None, 10, 0, (0.5, 0.5), 0),
    Spec("librispeech-clean100-a", None, 12, 20, (0.3, 3.0), 4),
    Spec("ljspeech-lj001", None, 12, 0, (0.3, 0.3), 0),
    Spec("ljspeech-lj001", None, 12, 12, (1.0, 3.0), 3),
]
DEFAULT_COUNT = len(SPECS)
"""The table of docs/ENGINES.md; ``--sweep`` adds the files below (indexes 10-19)."""
SPECS += [
    Spec("multilingual-fleurs", "en", 10, 0, (0.3, 1.0), 0, reverse=True, seed=100),
    Spec("multilingual-fleurs", "de", 10, 0, (1.0, 3.0), 4, reverse=True, seed=101),
    Spec("multilingual-fleurs", "fr", 10, 0, (0.3, 0.6), 0, reverse=True, seed=102),
    Spec("multilingual-fleurs", "es", 10, 0, (0.5, 0.5), 0, reverse=True, seed=103),
    Spec("multilingual-fleurs", "pt", 10, 0, (0.3, 1.0), 3, reverse=True, seed=104),
    Spec("multilingual-fleurs", "pt", 10, 0, (0.3, 0.3), 0, seed=105),
    Spec("librispeech-clean100-a", None, 10, 32, (0.3, 0.8), 0, seed=106),
    Spec("librispeech-clean100-a", None, 10, 42, (1.0, 3.0), 3, seed=107),
    Spec("ljspeech-lj001", None, 12, 24, (0.3, 0.6), 0, seed=108),
    Spec("multilingual-fleurs", "en", 10, 0, (0.3, 0.3), 0, seed=109),
]


@dataclass
class Row:
    file: str
    language: str
    duration_s: float
    clip_wer: float | None
    old_wer: float
    new_wer: float
    old_s: float
    new_s: float
    old_cpu_s: float
    new_cpu_s: float
    silence_words: int


def _timed(fn):  # type: ignore[no-untyped-def]
    """``fn()``, its wall seconds and its process CPU seconds."""
    started, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - started, time.process_time() - cpu


def _options(language: str) -> TranscriptionOptions:
    return TranscriptionOptions(language=language)


def _silence_words(transcript, recording: LongRecording | None) -> int:  # type: ignore[no-untyped-def]
    if recording is None:
        return 0
    count = 0
    for seg in transcript.segments:
        for filler in recording.fillers:
            inside = min(seg.end, filler.end_s - 1.0) - max(seg.start, filler.start_s + 1.0)
            if inside > 0:
                count += len(seg.text.split())
    return count


def _measure(engine, name: str, language: str, audio: np.ndarray, reference: str, clip_wer: float | None,
             recording: LongRecording | None, new_first: bool) -> Row:  # type: ignore[no-untyped-def]
    options = _options(language)
    runs = {
        "old": lambda: engine.transcribe(audio, options),
        "new": lambda: transcribe_with_coverage(engine, audio, options),
    }
    order = ["new", "old"] if new_first else ["old", "new"]
    results = {key: _timed(runs[key]) for key in order}
    (old, old_s, old_cpu), (new, new_s, new_cpu) = results["old"], results["new"]
    return Row(
        file=name, language=language, duration_s=round(len(audio) / SAMPLE_RATE, 1),
        clip_wer=None if clip_wer is None else round(clip_wer, 4),
        old_wer=round(wer([reference], [old.text], language), 4),
        new_wer=round(wer([reference], [new.text], language), 4),
        old_s=round(old_s, 2), new_s=round(new_s, 2), old_cpu_s=round(old_cpu, 2), new_cpu_s=round(new_cpu, 2),
        silence_words=_silence_words(new, recording),
    )


def _table(rows: list[Row]) -> str:
    lines = [
        "| file | s | clipwise WER | old WER | new WER | old CPU s | new CPU s | new/old CPU | new/old wall | words in silence |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        clip = "" if r.clip_wer is None else f"{r.clip_wer:.1%}"
        lines.append(
            f"| {r.file} | {r.duration_s:.0f} | {clip} | {r.old_wer:.1%} | {r.new_wer:.1%} | {r.old_cpu_s:.1f} | "
            f"{r.new_cpu_s:.1f} | {r.new_cpu_s / r.old_cpu_s:.2f} | {r.new_s / r.old_s:.2f} | {r.silence_words} |"
        )
    old_c, new_c = sum(r.old_cpu_s for r in rows), sum(r.new_cpu_s for r in rows)
    old_t, new_t = sum(r.old_s for r in rows), sum(r.new_s for r in rows)
    lines.append(f"| **all** | {sum(r.duration_s for r in rows):.0f} | | | | {old_c:.1f} | {new_c:.1f} | "
                 f"{new_c / old_c:.2f} | {new_t / old_t:.2f} | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="base")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "stenod")
    parser.add_argument("--output-dir", type=Path, default=Path("bench-out/longform"))
    parser.add_argument("--specs", default="", help="comma-separated indexes of SPECS to run (default: all; 'none': only longform-en)")
    parser.add_argument("--no-longform-en", action="store_true", help="skip the shared longform-en files")
    parser.add_argument("--sweep", action="store_true", help=f"also run the {len(SPECS) - DEFAULT_COUNT} sweep files (other clip orders and pauses)")
    args = parser.parse_args(argv)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    resolved = resolve_model_or_raise(args.model, cache_dir=args.cache_dir, offline=True)
    engine = create_engine(resolved, ModelSettings(name=args.model, cache_dir=args.cache_dir), threads=args.threads)
    # A recording's seed is its index in SPECS (or its own), so a --specs subset rebuilds the same files.
    if args.specs == "none":
        chosen: list[int] = []
    else:
        chosen = [int(i) for i in args.specs.split(",") if i.strip()] if args.specs else list(range(DEFAULT_COUNT))
        if args.sweep and not args.specs:
            chosen += list(range(DEFAULT_COUNT, len(SPECS)))
    rows: list[Row] = []

    def save() -> None:
        meta = {"model": args.model, "threads": args.threads, "machine": platform.machine(),
                "load_average": [round(x, 2) for x in os.getloadavg()],
                "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])])}
        (args.output_dir / "longform.json").write_text(
            json.dumps({"meta": meta, "rows": [asdict(r) for r in rows]}, indent=2), encoding="utf-8")
        (args.output_dir / "longform.md").write_text(_table(rows) + "\n", encoding="utf-8")

    for index in chosen:
        spec = SPECS[index]
        language = spec.language or "en"
        clips = corpus_clips(CORPUS / spec.set_name, language=spec.language, limit=spec.count, skip=spec.skip)
        if spec.reverse:
            clips = clips[::-1]
        name = f"{spec.set_name}{'-' + spec.language if spec.language else ''}[{spec.skip}:+{spec.count}]{' reversed' if spec.reverse else ''} pauses {spec.pauses[0]:g}-{spec.pauses[1]:g} s" + (
            f", filler every {spec.filler_every}" if spec.filler_every else "")
        seed = index if spec.seed is None else spec.seed
        rec = build_recording(name, clips, language=language, pause_range_s=spec.pauses, filler_every=spec.filler_every, seed=seed)
        options = _options(language)
        clip_wer = wer([c.reference for c in rec.clips], [engine.transcribe(c.samples, options).text for c in rec.clips], language)
        rows.append(_measure(engine, name, language, rec.audio, rec.reference, clip_wer, rec, new_first=index % 2 == 1))
        print(_table(rows[-1:]).splitlines()[-2], flush=True)
        save()
    if not args.no_longform_en:
        refs = dict(line.split("\t", 1) for line in (CORPUS / "longform-en/transcripts.tsv").read_text(encoding="utf-8").splitlines() if "\t" in line)
        lj = corpus_clips(CORPUS / "ljspeech-lj001")
        for index, path in enumerate(sorted((CORPUS / "longform-en/audio").iterdir())):
            clip_wer = None
            if path.stem.startswith("ljspeech"):
                clip_wer = wer([r for _, r, _ in lj], [engine.transcribe(a, _options("en")).text for _, _, a in lj], "en")
            rows.append(_measure(engine, path.name, "en", decode_audio(path).samples, refs[path.stem], clip_wer, None,
                                 new_first=index % 2 == 1))
            print(_table(rows[-1:]).splitlines()[-2], flush=True)
            save()
    print(_table(rows))
    engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
