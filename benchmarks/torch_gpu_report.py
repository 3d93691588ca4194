"""Score a benchmarks/torch_gpu.py result file: WER of each system and variant per corpus set (and
of the CPU engine's reference hypotheses, benchmarks/cpu_reference.py), throughput ratios torch /
pipeline, as the markdown tables in docs/BENCHMARKS.md.

Usage: python benchmarks/torch_gpu_report.py RESULT.json [--cpu CPU_REFERENCE.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from stenod.bench.wer import wer

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus"
WER_VARIANTS = (
    ("torch/wer", "torch, timestamps"),
    ("torch/wer-nots", "torch, no timestamps"),
    ("torch/wer-t0", "torch, timestamps, no fallback"),
    ("pipeline/wer", "pipeline, no timestamps"),
    ("pipeline/wer-ts", "pipeline, return_timestamps"),
    ("torch/wer-beam5", "torch beam 5, timestamps"),
    ("pipeline/wer-beam5", "pipeline beam 5, no timestamps"),
)


def references(set_name: str) -> dict[str, str]:
    refs = {}
    for line in (CORPUS / set_name / "transcripts.tsv").read_text(encoding="utf-8").splitlines():
        if "\t" in line:
            stem, text = line.split("\t", 1)
            refs[stem] = text
    return refs


def score(hyps: dict[str, str], set_name: str) -> float:
    refs = references(set_name)
    keys = [k for k in hyps if k in refs]
    return 100 * wer([refs[k] for k in keys], [hyps[k] for k in keys])


def _cell(phases: dict, key: str, set_name: str) -> tuple[str, str]:
    value = phases.get(f"{key}/{set_name}")
    if not value:
        return "-", "-"
    return f"{score(value['hypotheses'], set_name):.2f}", f"{value['x_real_time']:.0f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("result")
    ap.add_argument("--cpu")
    args = ap.parse_args()
    phases = json.loads(Path(args.result).read_text())["phases"]
    cpu = json.loads(Path(args.cpu).read_text())["sets"] if args.cpu else {}
    sets = [k.split("/", 2)[2] for k in phases if k.startswith("torch/wer/")]
    print("WER % (x real time of that phase)")
    print("| set | audio s | CPU engine | " + " | ".join(label for _, label in WER_VARIANTS) + " |")
    print("|---|---|---|" + "---|" * len(WER_VARIANTS))
    for set_name in sets:
        audio = phases[f"torch/wer/{set_name}"]["audio_s"]
        w_c = f"{score(cpu[set_name]['hypotheses'], set_name):.2f}" if set_name in cpu else "-"
        cells = [_cell(phases, key, set_name) for key, _ in WER_VARIANTS]
        print(f"| {set_name} | {audio:.0f} | {w_c} | " + " | ".join(f"{w} ({x}x)" for w, x in cells) + " |")
    print()
    print("| phase | torch x RT | pipeline x RT | ratio | torch-eager x RT | torch p50 / p95 s | pipeline p50 / p95 s | "
          "torch peak GPU MB | pipeline peak GPU MB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for key, value in phases.items():
        if not key.startswith("torch/") or "/wer" in key or key.endswith(("/load", "/device_stats")) or "beam5" in key:
            continue
        phase = key.split("/", 1)[1]
        other = phases.get(f"pipeline/{phase}", {})
        eager = phases.get(f"torch-eager/{phase}", {})
        lat_t = f"{value.get('latency_p50_s', '-')} / {value.get('latency_p95_s', '-')}"
        lat_p = f"{other.get('latency_p50_s', '-')} / {other.get('latency_p95_s', '-')}"
        ratio = value["x_real_time"] / other["x_real_time"] if other else float("nan")
        rounds = lambda v: "/".join(f"{x:.0f}" for x in v.get("x_real_time_rounds", []))  # noqa: E731
        print(f"| {phase} | {value['x_real_time']:.0f} ({rounds(value)}) | {other.get('x_real_time', float('nan')):.0f} "
              f"({rounds(other)}) | {ratio:.2f}x | {eager.get('x_real_time', '-')} | {lat_t} | {lat_p} | "
              f"{value.get('peak_gpu_mb', '-')} | {other.get('peak_gpu_mb', '-')} |")
    beams = {tag: phases.get(f"{tag}/beam5-short-32") for tag in ("torch", "pipeline")}
    for tag, beam in beams.items():
        if beam:
            print(f"{tag} beam 5, 32 clients, LibriSpeech: {beam['x_real_time']:.0f}x real time, "
                  f"p50 {beam.get('latency_p50_s')} s, WER {score(beam['hypotheses'], 'librispeech-clean100-a'):.2f} %, "
                  f"peak {beam['peak_gpu_mb']} MB")
    if all(beams.values()):
        print(f"beam 5 ratio torch / pipeline: {beams['torch']['x_real_time'] / beams['pipeline']['x_real_time']:.2f}x")


if __name__ == "__main__":
    main()
