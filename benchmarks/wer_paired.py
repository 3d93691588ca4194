"""Two runs of ``benchmarks/trimmed_path.py`` compared clip by clip: per set and language, the
change in error rate and what the set can resolve (a paired bootstrap over its clips).

    python benchmarks/wer_paired.py today.json trimmed.json --a-mode today --b-mode trimmed \\
        --output docs/bench/wer-paired.json

Issue 10's contract is that no corpus set's WER rises by more than 0.3 points. The sets have
6-50 clips; one word of a 10-clip FLEURS set is 0.6 points. The interval says whether a
difference is the path's or the handful of words a set this size moves by anyway.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

from stenod.bench.wer import PairedDifference, paired_difference  # noqa: E402


def _clips(path: Path, mode: str) -> dict[tuple[str, str], dict[str, dict[str, object]]]:
    """{(set, language): {clip: record}} of one mode's rows."""
    out: dict[tuple[str, str], dict[str, dict[str, object]]] = defaultdict(dict)
    for row in json.loads(path.read_text(encoding="utf-8"))["rows"]:
        if row["mode"] != mode:
            continue
        if "per_clip" not in row:
            raise SystemExit(f"{path}: rows without per_clip (rerun benchmarks/trimmed_path.py)")
        for clip in row["per_clip"]:
            out[(row["set"], str(clip["language"]))][str(clip["clip"])] = clip
    return out


def _row(set_name: str, language: str, changed: int | None, d: PairedDifference, clips: int) -> dict[str, object]:
    return {"set": set_name, "language": language, "clips": clips, "clips_changed": changed, "units": d.units,
            "wer_a": round(100 * d.edits_a / max(d.units, 1), 2), "wer_b": round(100 * d.edits_b / max(d.units, 1), 2),
            "edits_a": d.edits_a, "edits_b": d.edits_b, "difference": d.difference, "low": d.low, "high": d.high}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    parser.add_argument("--a-mode", default="today")
    parser.add_argument("--b-mode", default="trimmed")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    a, b = _clips(args.a, args.a_mode), _clips(args.b, args.b_mode)
    rows: list[dict[str, object]] = []
    pooled: tuple[list[int], list[int], list[int]] = ([], [], [])
    per_set: dict[str, tuple[list[int], list[int], list[int]]] = defaultdict(lambda: ([], [], []))
    for key in sorted(set(a) & set(b)):
        names = sorted(set(a[key]) & set(b[key]))
        edits_a = [int(a[key][n]["edits"]) for n in names]  # type: ignore[call-overload]
        edits_b = [int(b[key][n]["edits"]) for n in names]  # type: ignore[call-overload]
        units = [int(a[key][n]["units"]) for n in names]  # type: ignore[call-overload]
        changed = sum(1 for n in names if a[key][n]["text"] != b[key][n]["text"])
        rows.append(_row(key[0], key[1], changed, paired_difference(edits_a, edits_b, units), len(names)))
        for target, values in zip(per_set[key[0]], (edits_a, edits_b, units), strict=True):
            target.extend(values)
        if key[1] not in ("ja", "zh", "None"):  # pool word-scored sets only
            for target, values in zip(pooled, (edits_a, edits_b, units), strict=True):
                target.extend(values)
    # A set of several languages as a whole, as the issue names sets (edits over words, and over
    # characters for ja and zh, summed as stenod.bench.wer.grouped_wer does).
    for name, lists in sorted(per_set.items()):
        if sum(1 for key in a if key[0] == name) > 1:
            rows.append(_row(name, "all", None, paired_difference(*lists), len(lists[2])))
    rows.append(_row("all word-scored sets", "", None, paired_difference(*pooled), len(pooled[2])))
    print(f"| set | language | clips (changed) | units | {args.a_mode} % | {args.b_mode} % | edits | change, points | 95 % interval |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['set']} | {r['language']} | {r['clips']} ({r['clips_changed']}) | {r['units']} | {r['wer_a']} | "
              f"{r['wer_b']} | {r['edits_a']} -> {r['edits_b']} | {r['difference']:+.2f} | {r['low']:+.2f} .. {r['high']:+.2f} |")
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps({"a": str(args.a), "a_mode": args.a_mode, "b": str(args.b),
                                           "b_mode": args.b_mode, "rows": rows}, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
