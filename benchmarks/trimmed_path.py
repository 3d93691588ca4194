"""The faster-whisper engine's short-clip paths on every corpus set, in CPU seconds and WER.

    python benchmarks/trimmed_path.py --output docs/bench/trimmed-path.json

Compares, on the same base int8 weights, one clip at a time (1 CTranslate2 worker x 1 thread, so
process CPU seconds are the engine's own cost and a loaded machine does not skew them):

* ``faster-whisper``: the library's ``WhisperModel.transcribe`` (greedy, full 30 s windows), the
  baseline of issue 10;
* ``today``: stenod's engine with ``trim_encoder=false`` (the path before issue 10);
* ``trimmed``: stenod's engine as configured by default (trimmed encoder, guard, fallbacks).

``--through-coverage`` decodes each clip the way every entry point does
(``transcribe_with_coverage``: the engine, then the guards that drop loops and doubled clauses,
then the coverage check), which is what a user of the server, the CLI or a job gets.

Each clip is decoded with its set's language (``languages.tsv``; code-switched clips detect it).
WER is per set (CER for Chinese and Japanese), with Whisper's normalizer as everywhere else.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

from stenod.audio import decode_audio  # noqa: E402
from stenod.bench.wer import error_counts, wer  # noqa: E402
from stenod.decoding import transcribe_with_coverage  # noqa: E402
from stenod.engines import TranscriptionOptions  # noqa: E402
from stenod.engines.factory import create_engine  # noqa: E402
from stenod.models import resolve_model_or_raise  # noqa: E402
from stenod.settings import ModelSettings  # noqa: E402

CORPUS = REPO.parent / "shared" / "corpus"
SETS = ("librispeech-clean100-a", "ljspeech-lj001", "en-mfa-voicequality", "en-misc-short", "multilingual-fleurs")
MODES = ("faster-whisper", "today", "trimmed")


def _tsv(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    return dict(line.rstrip("\n").split("\t", 1) for line in path.read_text(encoding="utf-8").splitlines() if "\t" in line)


def _items(name: str) -> list[tuple[Path, str, str | None]]:
    root = CORPUS / name
    refs, langs = _tsv(root / "transcripts.tsv"), _tsv(root / "languages.tsv")
    items = []
    for path in sorted((root / "audio").iterdir()):
        if path.stem in refs:
            lang = langs.get(path.stem, "en")
            items.append((path, refs[path.stem], lang if len(lang) <= 3 else None))
    return items


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="base")
    parser.add_argument("--sets", default=",".join(SETS))
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--cache-dir", type=Path, default=Path(".cache"))
    parser.add_argument("--output", type=Path, default=REPO / "bench-results" / "trimmed-path.json")
    parser.add_argument("--through-coverage", action="store_true",
                        help="Decode each clip as every entry point does (transcribe_with_coverage: the engine, "
                             "then the loop, doubled-clause and density guards and the coverage check) instead "
                             "of the engine alone.")
    parser.add_argument("--pad-frames", type=int, default=None,
                        help="Encoder padding after the audio, in mel frames of 10 ms (TrimPolicy.pad_frames, "
                             "default 100): how sensitive each set's WER is to the trimmed encoder input.")
    parser.add_argument("--min-frames", type=int, default=None,
                        help="Shortest encoder input, in mel frames (TrimPolicy.min_frames, default 1000).")
    args = parser.parse_args()
    resolved = resolve_model_or_raise(args.model, cache_dir=args.cache_dir, offline=True)
    rows: list[dict[str, object]] = []
    for mode in args.modes.split(","):
        if mode == "faster-whisper":
            from faster_whisper import WhisperModel

            model = WhisperModel(str(resolved.path), device="cpu", compute_type="int8", cpu_threads=1, num_workers=1)

            def run(audio, language, model=model):  # type: ignore[no-untyped-def]
                segments, _ = model.transcribe(audio, language=language, beam_size=1, best_of=1)
                return " ".join(s.text for s in segments)
        else:
            settings = ModelSettings(name=args.model, cache_dir=args.cache_dir, trim_encoder=mode == "trimmed")
            engine = create_engine(resolved, settings, threads=1, concurrency=1)
            policy = engine.trim_policy  # type: ignore[attr-defined]
            if policy is not None:
                if args.pad_frames is not None:
                    policy = replace(policy, pad_frames=args.pad_frames)
                if args.min_frames is not None:
                    policy = replace(policy, min_frames=args.min_frames)
                engine.trim_policy = policy  # type: ignore[attr-defined]

            def run(audio, language, engine=engine):  # type: ignore[no-untyped-def]
                options = TranscriptionOptions(language=language)
                if args.through_coverage:
                    return transcribe_with_coverage(engine, audio, options).text
                return engine.transcribe(audio, options).text
        for name in args.sets.split(","):
            items = _items(name)
            audios = [decode_audio(path).samples for path, _, _ in items]
            run(audios[0], items[0][2])  # warm-up
            stats_before = str(engine.fast_path_stats) if mode != "faster-whisper" else ""
            start = _cpu_s()
            hyps = [run(audio, lang) for audio, (_, _, lang) in zip(audios, items, strict=True)]
            cpu = _cpu_s() - start
            by_lang: dict[str | None, tuple[list[str], list[str]]] = defaultdict(lambda: ([], []))
            for (_, ref, lang), hyp in zip(items, hyps, strict=True):
                by_lang[lang][0].append(ref)
                by_lang[lang][1].append(hyp)
            audio_s = sum(len(a) for a in audios) / 16000
            row = {
                "path": "coverage" if args.through_coverage else "engine", "mode": mode, "set": name, "clips": len(items), "audio_s": round(audio_s, 1), "cpu_s": round(cpu, 2),
                "audio_s_per_cpu_s": round(audio_s / cpu, 2),
                "wer": {str(lang): round(100 * wer(r, h, language=lang), 2) for lang, (r, h) in by_lang.items()},
            }
            # Per clip, so that two runs can be compared clip by clip (benchmarks/wer_paired.py).
            row["per_clip"] = [
                {"clip": path.stem, "language": lang, "text": hyp,
                 **dict(zip(("edits", "units"), error_counts([ref], [hyp], language=lang), strict=True))}
                for (path, ref, lang), hyp in zip(items, hyps, strict=True)
            ]
            if mode != "faster-whisper":
                row["fast_path_stats"] = {"before": stats_before, "after": str(engine.fast_path_stats)}
            rows.append(row)
            print(json.dumps(row), flush=True)
            args.output.parent.mkdir(parents=True, exist_ok=True)
            args.output.write_text(json.dumps({"model": args.model, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
