"""Render results for people: Markdown tables (engine RTF table, load-test table) and the ratio
table of ``stenod bench compare``."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from stenod.bench.schema import EngineBenchResult, EngineRun, LoadLevel, ServerBenchResult


def _f(value: float | None, fmt: str = ".3f", missing: str = "-") -> str:
    return missing if value is None else format(value, fmt)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _row(cells: Iterable[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _table(header: list[str], rows: list[list[str]], align_right_from: int = 0) -> str:
    sep = ["---:" if i >= align_right_from else "---" for i in range(len(header))]
    return "\n".join([_row(header), _row(sep), *(_row(r) for r in rows)]) + "\n"


def _best_rtf_by_model(runs: list[EngineRun]) -> dict[tuple[str, str], float]:
    best: dict[tuple[str, str], float] = {}
    for r in runs:
        if r.rtf is None:
            continue
        key = (r.model, r.device)
        best[key] = min(best.get(key, r.rtf.median), r.rtf.median)
    return best


def engines_markdown(result: EngineBenchResult) -> str:
    """The RTF table: one row per configuration, median RTF with its min-max over the repeats,
    each row's RTF relative to the fastest configuration of the same model in this run, CPU
    seconds per audio second, and the machine's 1-minute load average when the row finished (above
    the core count means neighbours competed for the CPU and wall-clock numbers are inflated)."""
    best = _best_rtf_by_model(result.runs)
    rows: list[list[str]] = []
    for r in result.runs:
        if r.status != "ok" or r.rtf is None:
            rows.append([r.model, r.engine, r.device, r.compute_type, str(r.threads),
                         *(["-"] * 9), f"error: {r.error}"])
            continue
        rows.append([
            r.model, r.engine, r.device + (f" ({r.gpu_name})" if r.gpu_name else ""), r.compute_type, str(r.threads),
            _f(r.load_s, ".2f"),
            f"{r.rtf.median:.3f} ({r.rtf.min:.3f}-{r.rtf.max:.3f})",
            _f(r.speed_x, ".1f"),
            f"{r.rtf.median / best[(r.model, r.device)]:.2f}",
            _f(r.cpu_rtf.median if r.cpu_rtf else None),
            _f(r.total_s, ".1f"),
            _f(r.peak_rss_mb, ".0f"),
            _pct(r.wer),
            _f(r.load_avg_1m, ".1f"),
            "ok",
        ])
    header = ["model", "engine", "device", "compute", "threads", "load s", "RTF median (min-max)",
              "x real time", "RTF / model's best", "CPU s / audio s", "total s", "peak RSS MB", "WER %",
              "load avg", "status"]
    s = result.settings
    audio_s = sum(f.audio_s for f in result.files)
    note = (
        f"\n{len(result.files)} files, {audio_s:.1f} s of audio; warm-up {s.warmup}, {s.repeats} repeats per "
        f"configuration, each configuration in a fresh process; beam {s.beam_size}. Host: "
        f"{result.host.cpu_model}, {result.host.usable_cores} usable cores, load average "
        f"{result.host.load_avg_1m:.2f} at start.\n"
    )
    return _table(header, rows, align_right_from=5) + note


def threads_pivot_markdown(result: EngineBenchResult) -> str:
    """Median RTF with models and compute types as rows and thread counts as columns: the
    threads x compute type view used to pick CPU defaults."""
    threads = sorted({r.threads for r in result.runs})
    keys: list[tuple[str, str, str, str]] = []
    cells: dict[tuple[str, str, str, str, int], EngineRun] = {}
    for r in result.runs:
        key = (r.model, r.engine, r.device, r.compute_type)
        if key not in keys:
            keys.append(key)
        cells[(*key, r.threads)] = r
    header = ["model", "engine", "device", "compute", *[f"RTF t={t}" for t in threads],
              *[f"CPU s/audio s t={t}" for t in threads], *[f"RSS MB t={t}" for t in threads], "WER %"]
    rows: list[list[str]] = []
    for key in keys:
        runs = [cells.get((*key, t)) for t in threads]
        rtfs = [_f(r.rtf.median) if r is not None and r.rtf is not None else "-" for r in runs]
        cpu = [_f(r.cpu_rtf.median) if r is not None and r.cpu_rtf is not None else "-" for r in runs]
        rss = [_f(r.peak_rss_mb, ".0f") if r is not None else "-" for r in runs]
        wers = [r.wer for r in runs if r is not None and r.wer is not None]
        rows.append([*key, *rtfs, *cpu, *rss, _pct(wers[0]) if wers else "-"])
    return _table(header, rows, align_right_from=4)


def server_markdown(result: ServerBenchResult) -> str:
    """One row per concurrency level: throughput, latency percentiles, errors, WER."""
    rows: list[list[str]] = []
    for lv in result.levels:
        lat = lv.latency_s
        errors = ", ".join(f"{k}: {v}" for k, v in sorted(lv.status_counts.items()) if k != "200") or "0"
        rows.append([
            str(lv.concurrency), str(lv.requests), str(lv.ok), errors,
            f"{lv.throughput_audio_s_per_s:.2f}", f"{lv.requests_per_s:.2f}",
            _f(lat.p50 if lat else None, ".2f"), _f(lat.p95 if lat else None, ".2f"), _f(lat.p99 if lat else None, ".2f"),
            _pct(lv.wer), lv.stopped_by,
        ])
    header = ["concurrency", "requests", "ok", "errors", "audio s / s", "req / s", "p50 s", "p95 s", "p99 s",
              "WER %", "stopped by"]
    s = result.settings
    note = (
        f"\n{s.api} API at {s.url}, model {s.model or '-'}; per level at most {s.max_requests} requests "
        f"or {s.max_duration_s:g} s; {len(result.files)} files replayed round-robin.\n"
    )
    return _table(header, rows, align_right_from=0) + note


def result_markdown(result: EngineBenchResult | ServerBenchResult) -> str:
    if isinstance(result, EngineBenchResult):
        return engines_markdown(result)
    return server_markdown(result)


# ----------------------------------------------------------------------------------------------
# compare
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RatioRow:
    """One matched row of two results: B's value over A's for each metric (``None`` where either
    side is missing or A is 0)."""

    key: str
    a: dict[str, float | None]
    b: dict[str, float | None]
    ratios: dict[str, float | None]


ENGINE_METRICS = ("rtf", "cpu_rtf", "load_s", "peak_rss_mb", "wer")
SERVER_METRICS = ("throughput_audio_s_per_s", "p50_s", "p95_s", "p99_s", "error_rate", "wer")


def _engine_values(r: EngineRun) -> dict[str, float | None]:
    return {
        "rtf": r.rtf.median if r.rtf else None,
        "cpu_rtf": r.cpu_rtf.median if r.cpu_rtf else None,
        "load_s": r.load_s if r.status == "ok" else None,
        "peak_rss_mb": r.peak_rss_mb,
        "wer": r.wer,
    }


def _level_values(lv: LoadLevel) -> dict[str, float | None]:
    lat = lv.latency_s
    return {
        "throughput_audio_s_per_s": lv.throughput_audio_s_per_s,
        "p50_s": lat.p50 if lat else None,
        "p95_s": lat.p95 if lat else None,
        "p99_s": lat.p99 if lat else None,
        "error_rate": lv.errors / lv.requests if lv.requests else None,
        "wer": lv.wer,
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or a == 0:
        return None
    return b / a


def compare_results(
    a: EngineBenchResult | ServerBenchResult, b: EngineBenchResult | ServerBenchResult
) -> list[RatioRow]:
    """Match rows of two results of the same kind (engine runs by model, engine, device, compute
    type and threads; load levels by concurrency) and compute B / A for each metric.

    Raises:
        ValueError: the results are of different kinds, or share no row.
    """
    if a.kind != b.kind:
        raise ValueError(f"cannot compare a {a.kind} result with a {b.kind} result")
    rows: list[RatioRow] = []
    if isinstance(a, EngineBenchResult) and isinstance(b, EngineBenchResult):
        b_runs = {(r.model, r.engine, r.device, r.compute_type, r.threads): r for r in b.runs}
        for ra in a.runs:
            key = (ra.model, ra.engine, ra.device, ra.compute_type, ra.threads)
            rb = b_runs.get(key)
            if rb is None:
                continue
            va, vb = _engine_values(ra), _engine_values(rb)
            rows.append(RatioRow(f"{ra.model} {ra.engine} {ra.device}/{ra.compute_type} t={ra.threads}",
                                 va, vb, {m: _ratio(va[m], vb[m]) for m in ENGINE_METRICS}))
    elif isinstance(a, ServerBenchResult) and isinstance(b, ServerBenchResult):
        b_levels = {lv.concurrency: lv for lv in b.levels}
        for la in a.levels:
            lb = b_levels.get(la.concurrency)
            if lb is None:
                continue
            va, vb = _level_values(la), _level_values(lb)
            rows.append(RatioRow(f"concurrency {la.concurrency}", va, vb,
                                 {m: _ratio(va[m], vb[m]) for m in SERVER_METRICS}))
    if not rows:
        raise ValueError("the two results have no configuration in common")
    return rows


def compare_markdown(rows: list[RatioRow], *, a_name: str, b_name: str) -> str:
    """Table of A, B and B/A per metric. For RTF, latency, memory, errors and WER a ratio below
    1 means B is better; for throughput above 1 means B is better."""
    metrics = list(rows[0].ratios)
    header = ["configuration"]
    for m in metrics:
        header += [f"{m} A", f"{m} B", f"{m} B/A"]
    body: list[list[str]] = []
    for row in rows:
        cells = [row.key]
        for m in metrics:
            cells += [_f(row.a[m], ".4g"), _f(row.b[m], ".4g"), _f(row.ratios[m], ".2f")]
        body.append(cells)
    legend = (
        f"\nA = {a_name}, B = {b_name}. B/A below 1 means B is lower: better for RTF, load time, "
        "memory, latency, error rate and WER; for throughput, above 1 means B is better.\n"
    )
    return _table(header, body, align_right_from=1) + legend
