"""whisper.cpp vs faster-whisper on the same weights and threads, in one run.

    python benchmarks/engines_compare.py --models tiny.en,base --threads 1,2 --limit 10

Each bundled CTranslate2 model is converted once to ggml f16, q8_0 and q5_0 (the cached files
the whisper.cpp engine uses), then every configuration runs in a fresh worker process through the
benchmark tool's own machinery (:func:`stenod.bench.matrix.run_config`, so numbers match
``stenod bench engines``): faster-whisper int8 and float32, whisper.cpp f16, q8_0 and q5_0, at
each thread count. Configurations run one after another, every engine of one model and thread
count back to back, so that drift in machine load hits them alike. ``stenod bench engines`` cannot express
q5_0 (its compute types are CTranslate2's), hence this script.

Writes ``<output-dir>/runs.json`` (the EngineRun records) and ``<output-dir>/table.md`` (a
markdown table with ratios against faster-whisper int8 at the same model and threads) and prints
the table. Both files are rewritten after every configuration, so a run that is stopped early
keeps what it measured.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from stenod.bench.corpus import load_corpus_or_raise
from stenod.bench.matrix import BenchConfig, run_config
from stenod.bench.schema import EngineRun
from stenod.models import resolve_model_or_raise
from stenod.models.ggml_cache import ensure_ggml_model_or_raise
from stenod.settings import load_settings

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CORPUS = REPO.parent / "shared" / "corpus" / "librispeech-clean100-a"


@dataclass(frozen=True)
class Variant:
    engine: str
    weights: str
    """f16 / q8_0 / q5_0 for whisper.cpp, int8 / float32 for faster-whisper."""


VARIANTS = (
    Variant("faster-whisper", "int8"),
    Variant("faster-whisper", "float32"),
    Variant("whisper.cpp", "f16"),
    Variant("whisper.cpp", "q8_0"),
    Variant("whisper.cpp", "q5_0"),
)


def _size_mb(path: Path) -> float:
    target = path / "model.bin" if path.is_dir() else path
    return target.stat().st_size / 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tiny.en,base")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--limit", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--output-dir", type=Path, default=Path("bench-results") / f"engines-compare-{time.strftime('%Y%m%d-%H%M%S')}")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")

    settings = load_settings()
    cache_dir, offline = settings.model.cache_dir, True
    items = load_corpus_or_raise([args.corpus], limit=args.limit)
    threads = [int(t) for t in args.threads.split(",")]
    args.output_dir.mkdir(parents=True, exist_ok=True)

    models: dict[str, tuple[Path, dict[str, Path]]] = {}
    for name in args.models.split(","):
        resolved = resolve_model_or_raise(name, cache_dir=cache_dir, offline=offline)
        paths = {"int8": resolved.path, "float32": resolved.path}
        for quant in ("f16", "q8_0", "q5_0"):
            paths[quant] = ensure_ggml_model_or_raise(resolved, cache_dir=cache_dir, quantize=quant).path  # type: ignore[arg-type]
        models[name] = (resolved.path, paths)
    # Thread count outermost: every 1-thread cell first, so a run cut short still compares
    # every engine and weight type at the same thread count.
    cells: list[tuple[str, Variant, int, BenchConfig, float]] = []
    for t in threads:
        for name, (_, paths) in models.items():
            for v in VARIANTS:
                if v.engine == "faster-whisper":
                    config = BenchConfig(name, v.engine, "cpu", v.weights, t)
                else:  # the ggml file itself; compute_type is only a label for whisper.cpp
                    config = BenchConfig(str(paths[v.weights]), v.engine, "cpu", "int8", t)
                cells.append((name, v, t, config, _size_mb(Path(paths[v.weights]))))

    runs: list[tuple[str, Variant, int, float, EngineRun]] = []
    for name, v, t, config, size in cells:
        started = time.perf_counter()
        run = run_config(
            config, items, cache_dir=cache_dir, offline=offline, repeats=args.repeats, warmup=args.warmup,
            language="en", beam_size=1, timeout_s=1800, gpu_name=None,
        )
        run = run.model_copy(update={"model": name, "compute_type": v.weights})
        runs.append((name, v, t, size, run))
        rtf = run.rtf.median if run.rtf else float("nan")
        print(f"{name:8} {v.engine:15} {v.weights:8} t={t}: {run.status} RTF {rtf:.3f} "
              f"WER {run.wer if run.wer is not None else float('nan'):.4f} ({time.perf_counter() - started:.0f} s)",
              file=sys.stderr, flush=True)
        _write(args.output_dir, runs, files=len(items))  # after every cell: a cut-short run keeps its results

    print(_write(args.output_dir, runs, files=len(items)))
    return 0 if all(r.status == "ok" for *_, r in runs) else 1


def _write(output_dir: Path, runs: list[tuple[str, Variant, int, float, EngineRun]], *, files: int) -> str:
    (output_dir / "runs.json").write_text(json.dumps(
        [{"model": n, "engine": v.engine, "weights": v.weights, "threads": t, "file_mb": round(s, 1),
          "run": r.model_dump(mode="json")} for n, v, t, s, r in runs], indent=2))
    table = _table(runs, files=files, audio_s=runs[0][4].audio_s if runs else 0.0)
    (output_dir / "table.md").write_text(table)
    return table


def _table(runs: list[tuple[str, Variant, int, float, EngineRun]], *, files: int, audio_s: float) -> str:
    base = {(n, t): r for n, v, t, _, r in runs if v == VARIANTS[0] and r.rtf}
    lines = [
        f"{files} files, {audio_s:.0f} s of audio; RTF = median inference time / audio time (lower is faster); "
        "speed vs fw-int8 = faster-whisper int8 RTF / this RTF at the same model and threads (>1 is faster).",
        "",
        "| model | engine | weights | threads | file MB | RTF | CPU s per audio s | speed vs fw-int8 | peak RSS MB | WER % | load s | load avg |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for n, v, t, size, r in runs:
        if r.status != "ok" or r.rtf is None:
            lines.append(f"| {n} | {v.engine} | {v.weights} | {t} | {size:.0f} | error: {r.error} | | | | | | |")
            continue
        ref = base.get((n, t))
        ratio = f"{ref.rtf.median / r.rtf.median:.2f}x" if ref and ref.rtf and r.rtf.median > 0 else "-"
        cpu_rtf = getattr(r, "cpu_rtf", None)
        cpu = f"{cpu_rtf.median:.3f}" if cpu_rtf is not None else "-"
        wer = f"{100 * r.wer:.2f}" if r.wer is not None else "-"
        lines.append(
            f"| {n} | {v.engine} | {v.weights} | {t} | {size:.0f} | {r.rtf.median:.3f} | {cpu} | {ratio} | "
            f"{r.peak_rss_mb or 0:.0f} | {wer} | {r.load_s:.2f} | {r.load_avg_1m if r.load_avg_1m is not None else '-'} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
