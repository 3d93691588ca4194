"""CTranslate2 alone: encoder seconds and decoder milliseconds per token for a batch of long-file
windows, by batch size and threads (the measurement behind ``decoding/coverage.py:
WINDOWS_PER_BATCH``; docs/BENCHMARKS.md "Long files in batched waves").

    python benchmarks/window_batch_costs.py --cache-dir /work/.cache-stenod --output costs.json

Windows are consecutive 22 s pieces of the longform-en LJ Speech file, base int8, greedy, English,
with timestamps; each batch is encoded once and decoded once (``generate``), as the batcher does.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

from stenod.audio import decode_audio  # noqa: E402
from stenod.models import resolve_model_or_raise  # noqa: E402

LJ = REPO.parent / "shared" / "corpus" / "longform-en" / "audio" / "ljspeech_LJ001-0001_0032_concat.flac"
FRAMES = 2200  # 22 s: a first-pass window (21 s of audio) plus the trimmed encoder's 1 s of padding
PROMPT = [50258, 50259, 50359]  # <|startoftranscript|><|en|><|transcribe|>


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="base")
    parser.add_argument("--cache-dir", type=Path, default=Path(".cache"))
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--batches", default="1,2,4,8,11")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    import ctranslate2
    from faster_whisper import WhisperModel

    path = resolve_model_or_raise(args.model, cache_dir=args.cache_dir, offline=True).path
    audio = decode_audio(LJ).samples
    seconds = FRAMES // 100
    rows = []
    for threads in (int(t) for t in args.threads.split(",")):
        model = WhisperModel(str(path), device="cpu", compute_type="int8", cpu_threads=threads, num_workers=1)
        windows = [model.feature_extractor(audio[i * seconds * 16000:(i + 1) * seconds * 16000])[:, :FRAMES]
                   for i in range(max(int(b) for b in args.batches.split(",")))]
        model.model.encode(ctranslate2.StorageView.from_array(np.zeros((1, 80, FRAMES), np.float32)))  # warm-up
        for size in (int(b) for b in args.batches.split(",")):
            batch = np.zeros((size, 80, FRAMES), np.float32)
            for i in range(size):
                batch[i, :, : windows[i].shape[1]] = windows[i]
            started = time.perf_counter()
            encoded = model.model.encode(ctranslate2.StorageView.from_array(batch), to_cpu=False)
            encode_s = time.perf_counter() - started
            started = time.perf_counter()
            results = model.model.generate(encoded, [PROMPT] * size, beam_size=1, max_length=223, return_scores=True)
            generate_s = time.perf_counter() - started
            tokens = sum(len(r.sequences_ids[0]) for r in results)
            row = {"threads": threads, "batch": size, "encoder_s_per_window": round(encode_s / size, 3),
                   "generate_s": round(generate_s, 3), "tokens": tokens,
                   "decoder_ms_per_token_and_window": round(1000 * generate_s / tokens, 1)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.output:
        args.output.write_text(json.dumps({"model": args.model, "frames": FRAMES, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
