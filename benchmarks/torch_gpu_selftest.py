"""Smoke test of the torch engine's CUDA paths with random weights (no download, no real model):
fp16 and bf16 load, batched greedy, beam and sampled decoding, language detection, per-device
stats. Run first on a fresh GPU machine so a crash costs seconds, not a benchmark run.

Usage: python benchmarks/torch_gpu_selftest.py TOKENIZER_JSON
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    from safetensors.numpy import save_file

    from stenod.engines.base import EngineConfig, TranscriptionOptions
    from stenod.engines.torch_whisper.engine import TorchWhisperEngine
    from stenod.engines.torch_whisper.model import ModelDimensions, Whisper
    from stenod.engines.torch_whisper.tokens import WhisperTokenizer
    from stenod.engines.torch_whisper.weights import _iter_hf_tensors, hf_config

    tokenizer_json = Path(sys.argv[1])
    dims = ModelDimensions(80, 1500, 384, 6, 4, 51865, 448, 384, 6, 4)
    torch.manual_seed(0)
    model = Whisper(dims)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.02)
    sd = {k: v.numpy() for k, v in model.state_dict().items()}
    folder = Path(tempfile.mkdtemp()) / "random-hf"
    folder.mkdir()
    special = WhisperTokenizer(tokenizer_json, multilingual=True).special
    config, generation = hf_config(dims, special, suppress_tokens=[-1], alignment_heads=[])
    save_file(dict(_iter_hf_tensors(sd, np.dtype(np.float16))), str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "generation_config.json").write_text(json.dumps(generation))
    (folder / "tokenizer.json").write_bytes(tokenizer_json.read_bytes())
    rng = np.random.default_rng(0)
    clips = [rng.standard_normal(16000 * s).astype(np.float32) * 0.1 for s in (3, 40)]
    for dtype in ("float16", "bfloat16"):
        eng = TorchWhisperEngine(EngineConfig("random", str(folder), True, device="cuda", compute_type=dtype, threads=1))
        for opts in (
            TranscriptionOptions(language="en", vad=False, temperature=(0.0,)),
            TranscriptionOptions(language=None, vad=False, temperature=(0.0,)),
            TranscriptionOptions(language="en", beam_size=5, vad=False, temperature=(0.0,)),
            TranscriptionOptions(language="en", temperature=(0.0, 0.5), vad=False),
            TranscriptionOptions(language="en", batch_size=1, vad=False, temperature=(0.0,)),
            TranscriptionOptions(language="en", word_timestamps=True, vad=False, temperature=(0.0,)),
        ):
            t0 = time.perf_counter()
            out = [eng.transcribe(c, opts) for c in clips]
            print(dtype, opts.beam_size, opts.temperature[:1], opts.batch_size, opts.word_timestamps,
                  round(time.perf_counter() - t0, 2), [len(t.segments) for t in out], out[1].language, flush=True)
        print(eng.detect_language(clips[0]).language, json.dumps(eng.device_stats()))
        eng.close()
    # Decoder-step cost with and without recorded graphs: random weights rarely emit end-of-text,
    # so each window decodes its whole token budget (224 steps) and wall / 224 is one step.
    from concurrent.futures import ThreadPoolExecutor

    for rows in (8, 32):
        batch = [rng.standard_normal(16000 * 5).astype(np.float32) * 0.1 for _ in range(rows)]
        opts = TranscriptionOptions(language="en", vad=False, temperature=(0.0,), without_timestamps=True)
        texts = {}
        for static in (True, False):
            eng = TorchWhisperEngine(EngineConfig("random", str(folder), True, device="cuda", compute_type="float16", threads=1),
                                     static_decoding=static)
            with ThreadPoolExecutor(rows) as pool:
                list(pool.map(lambda a, e=eng, o=opts: e.transcribe(a, o), batch))  # warm-up
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                out = list(pool.map(lambda a, e=eng, o=opts: e.transcribe(a, o), batch))
                torch.cuda.synchronize()
            wall = time.perf_counter() - t0
            texts[static] = [t.text for t in out]
            print(f"rows {rows} static {static}: {wall:.3f} s, {1000 * wall / 224:.2f} ms per step, "
                  f"{sum(len(t.segments[0].tokens) if t.segments else 0 for t in out)} tokens", flush=True)
            eng.close()
        print("same text with and without graphs:", sum(a == b for a, b in zip(texts[True], texts[False], strict=False)), "of", rows)
    print("SELFTEST OK")


if __name__ == "__main__":
    main()
