"""Score a benchmarks/torch_gpu.py result file: WER of each system per corpus set (and of the CPU
engine's reference hypotheses, benchmarks/cpu_reference.py), throughput ratios torch / pipeline,
as the markdown tables in docs/BENCHMARKS.md.

Usage: python benchmarks/torch_gpu_report.py RESULT.json [--cpu CPU_REFERENCE.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from stenod.bench.wer import wer

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus"


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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("result")
    ap.add_argument("--cpu")
    args = ap.parse_args()
    data = json.loads(Path(args.result).read_text())
    phases = data["phases"]
    cpu = json.loads(Path(args.cpu).read_text())["sets"] if args.cpu else {}
    print("| set | audio s | CPU engine WER % | torch WER % | pipeline WER % | torch x RT | pipeline x RT | ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for key, value in phases.items():
        if not key.startswith("torch/wer/"):
            continue
        set_name = key.split("/", 2)[2]
        other = phases.get(f"pipeline/wer/{set_name}")
        w_t = score(value["hypotheses"], set_name)
        w_p = score(other["hypotheses"], set_name) if other else float("nan")
        w_c = score(cpu[set_name]["hypotheses"], set_name) if set_name in cpu else float("nan")
        ratio = value["x_real_time"] / other["x_real_time"] if other else float("nan")
        print(f"| {set_name} | {value['audio_s']:.0f} | {w_c:.2f} | {w_t:.2f} | {w_p:.2f} | "
              f"{value['x_real_time']:.0f} | {other['x_real_time'] if other else float('nan'):.0f} | {ratio:.2f}x |")
    print()
    print("| phase | torch x RT | pipeline x RT | ratio | torch p50 / p95 s | pipeline p50 / p95 s | torch peak GPU MB | pipeline peak GPU MB |")
    print("|---|---|---|---|---|---|---|---|")
    for key, value in phases.items():
        if not key.startswith("torch/") or "/wer/" in key or key.endswith("/load") or "beam5" in key:
            continue
        phase = key.split("/", 1)[1]
        other = phases.get(f"pipeline/{phase}", {})
        lat_t = f"{value.get('latency_p50_s', '-')} / {value.get('latency_p95_s', '-')}"
        lat_p = f"{other.get('latency_p50_s', '-')} / {other.get('latency_p95_s', '-')}"
        ratio = value["x_real_time"] / other["x_real_time"] if other else float("nan")
        print(f"| {phase} | {value['x_real_time']:.0f} | {other.get('x_real_time', float('nan')):.0f} | {ratio:.2f}x | "
              f"{lat_t} | {lat_p} | {value.get('peak_gpu_mb', '-')} | {other.get('peak_gpu_mb', '-')} |")
    beam = phases.get("torch/beam5-short-32")
    if beam:
        print()
        print(f"beam 5, 32 clients, LibriSpeech: {beam['x_real_time']:.0f}x real time, "
              f"WER {score(beam['hypotheses'], 'librispeech-clean100-a'):.2f} %, peak {beam['peak_gpu_mb']} MB")


if __name__ == "__main__":
    main()
