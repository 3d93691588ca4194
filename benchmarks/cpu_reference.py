"""Hypotheses of the CPU engine (faster-whisper) on the corpus sets the GPU benchmark scores, same
bundled weights, greedy, no VAD, language en, so benchmarks/torch_gpu_report.py can compare WER.

Usage: python benchmarks/cpu_reference.py --model base --compute-type float32 --out cpu_reference.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

SETS = ("en-misc-short", "ljspeech-lj001", "librispeech-clean100-a", "en-mfa-voicequality", "longform-en")


def main() -> None:
    from stenod.audio import decode_audio
    from stenod.engines import TranscriptionOptions, create_engine
    from stenod.models import resolve_model_or_raise
    from stenod.settings import ModelSettings

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="base")
    ap.add_argument("--compute-type", default="float32")
    ap.add_argument("--corpus", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "corpus"))
    ap.add_argument("--cache-dir", default=str(Path.home() / ".cache" / "stenod"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    settings = ModelSettings(name=args.model, engine="faster-whisper", device="cpu", compute_type=args.compute_type,
                             cache_dir=Path(args.cache_dir))
    model = resolve_model_or_raise(args.model, cache_dir=Path(args.cache_dir), offline=True)
    engine = create_engine(model, settings, threads=args.threads)
    opts = TranscriptionOptions(language="en", vad=False)
    out: dict = {"engine": "faster-whisper", "model": args.model, "compute_type": args.compute_type, "sets": {}}
    for name in SETS:
        t0 = time.perf_counter()
        hyps = {f.stem: engine.transcribe(decode_audio(f).samples, opts).text
                for f in sorted((Path(args.corpus) / name / "audio").iterdir())}
        out["sets"][name] = {"hypotheses": hyps, "wall_s": round(time.perf_counter() - t0, 1)}
        Path(args.out).write_text(json.dumps(out, indent=1))
        print(name, out["sets"][name]["wall_s"], flush=True)
    engine.close()


if __name__ == "__main__":
    main()
