"""What the trimmed path's guard rejects, and what a retry with more padding gives instead of the full window.

    HF_HUB_OFFLINE=1 python benchmarks/guard_retry.py --cache-dir /work/.cache-stenod \\
        --output docs/bench/guard-retry.json

Every clip of the corpus sets that the trimmed path takes (under 29 s) is decoded trimmed, the
way the engine's one-clip path does it (base int8, 1 worker x 1 thread, greedy, the set's
language). For each clip the guard (``trimmed_decode_problem``) rejects, it then measures, each
in process CPU seconds and WER against the clip's reference:

* ``full``: the full-window fallback (faster-whisper's own decode, whole temperature schedule);
* ``pad_<s>``: the same trimmed decode with ``<s>`` seconds of padding after the audio instead of
  ``TrimPolicy.pad_frames`` (``--pads``), and whether the guard passes it.

Writes JSON with one row per rejected clip (``runaway``: the kind of failure the engine retries)
and the set's totals, and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))

from trimmed_path import SETS, _cpu_s, _items  # noqa: E402

from stenod.audio import decode_audio  # noqa: E402
from stenod.bench.wer import wer  # noqa: E402
from stenod.engines import TranscriptionOptions  # noqa: E402
from stenod.engines.factory import create_engine  # noqa: E402
from stenod.engines.window_guard import DEFAULT_TRIM_POLICY, trimmed_decode_problem  # noqa: E402
from stenod.models import resolve_model_or_raise  # noqa: E402
from stenod.settings import ModelSettings  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="base")
    parser.add_argument("--sets", default=",".join(SETS))
    parser.add_argument("--pads", default="3,5", help="retry paddings to try, seconds")
    parser.add_argument("--cache-dir", type=Path, default=Path(".cache"))
    parser.add_argument("--output", type=Path, default=REPO / "bench-results" / "guard-retry.json")
    args = parser.parse_args()
    resolved = resolve_model_or_raise(args.model, cache_dir=args.cache_dir, offline=True)
    settings = ModelSettings(name=args.model, cache_dir=args.cache_dir, trim_encoder=True, batch_clips=1)
    engine = create_engine(resolved, settings, threads=1, concurrency=1)
    policy = DEFAULT_TRIM_POLICY
    pads = [float(p) for p in args.pads.split(",")]
    rows: list[dict[str, object]] = []
    totals: dict[str, dict[str, float]] = {}

    def measured(run: Callable[[], Any], ref: str, lang: str | None, duration: float) -> tuple[dict[str, object], Any]:
        """``run()``'s CPU seconds, the guard's verdict and WER, and the verdict itself."""
        started = _cpu_s()
        result = run()
        cpu = _cpu_s() - started
        problem = trimmed_decode_problem(result.segments, duration_s=duration, policy=policy)
        text = " ".join(seg.text for seg in result.segments)
        return {"cpu_s": round(cpu, 2), "problem": None if problem is None else problem.reason,
                "wer": round(100 * wer([ref], [text], language=lang), 1)}, problem

    def save() -> None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps({"model": args.model, "pads_s": pads, "totals": totals, "rows": rows}, indent=1) + "\n")

    for name in args.sets.split(","):
        total = totals.setdefault(name, {"clips": 0, "trimmed_cpu_s": 0.0, "rejected": 0, "runaway": 0})
        for path, ref, lang in _items(name):
            audio = decode_audio(path).samples
            duration = len(audio) / 16000
            options = TranscriptionOptions(language=lang)
            kwargs = engine._decode_kwargs(options)
            features = engine._model.feature_extractor(audio)
            content = features.shape[-1] - 1
            if not policy.pays(content):
                continue
            trimmed = functools.partial(engine._decode_trimmed, features, content, options, kwargs, language=lang)
            first, problem = measured(functools.partial(trimmed, policy), ref, lang, duration)
            total["clips"] += 1
            total["trimmed_cpu_s"] = round(total["trimmed_cpu_s"] + float(first["cpu_s"]), 2)  # type: ignore[arg-type]
            if problem is None:
                continue
            row: dict[str, object] = {"set": name, "clip": path.stem, "language": lang, "seconds": round(duration, 1),
                                      "first": first, "runaway": problem.runaway}
            total["rejected"] += 1
            total["runaway"] += int(problem.runaway)
            row["full"] = measured(functools.partial(engine._full_window, audio, kwargs, lang), ref, lang, duration)[0]
            for pad in pads:
                padded = dataclasses.replace(policy, pad_frames=int(pad * 100))
                row[f"pad_{pad:g}"] = measured(functools.partial(trimmed, padded), ref, lang, duration)[0]
            rows.append(row)
            print(json.dumps(row), flush=True)
            save()
    save()
    head = "| clip | s | first problem | runaway | full: CPU s, WER % | " + " | ".join(f"pad {p:g} s: CPU s, WER %, passes" for p in pads) + " |"
    print(head)
    print("|" + "---|" * (5 + len(pads)))
    for row in rows:
        full = row["full"]
        cells = [f"{row[f'pad_{p:g}']['cpu_s']}, {row[f'pad_{p:g}']['wer']}, {'yes' if row[f'pad_{p:g}']['problem'] is None else 'no'}"  # type: ignore[index]
                 for p in pads]
        print(f"| {row['set']}/{row['clip']} | {row['seconds']} | {row['first']['problem']} | {row['runaway']} | "  # type: ignore[index]
              f"{full['cpu_s']}, {full['wer']} | " + " | ".join(cells) + " |")  # type: ignore[index]
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
