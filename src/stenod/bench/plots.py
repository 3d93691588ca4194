"""PNG plots of results with matplotlib's Agg backend (no display needed, safe in servers/CI).

* engines: RTF vs threads, one panel per model, one line per engine/device/compute type, with the
  min-max of the repeats as error bars.
* server: throughput (audio s per s) and p95 latency vs concurrency.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from stenod.bench.schema import EngineBenchResult, ServerBenchResult


def _pyplot() -> ModuleType:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_engines(result: EngineBenchResult, out_dir: Path) -> list[Path]:
    """Write ``rtf_vs_threads.png``; returns the written paths (none when no run succeeded)."""
    runs = [r for r in result.runs if r.status == "ok" and r.rtf is not None]
    if not runs:
        return []
    plt = _pyplot()
    models = list(dict.fromkeys(r.model for r in runs))
    fig, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 4), squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        series: dict[str, list[tuple[int, float, float, float]]] = {}
        for r in runs:
            if r.model != model or r.rtf is None:
                continue
            label = f"{r.engine} {r.device}/{r.compute_type}"
            series.setdefault(label, []).append((r.threads, r.rtf.median, r.rtf.min, r.rtf.max))
        for label, points in series.items():
            points.sort()
            xs = [p[0] for p in points]
            ys = [p[1] for p in points]
            err = [[p[1] - p[2] for p in points], [p[3] - p[1] for p in points]]
            ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=label)
        ax.set_title(model)
        ax.set_xlabel("threads per call")
        ax.set_ylabel("RTF (inference s / audio s, lower is faster)")
        ax.set_xticks(sorted({r.threads for r in runs}))
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"RTF vs threads ({result.host.cpu_model}, median and min-max of {result.settings.repeats} repeats)",
                 fontsize=9)
    fig.tight_layout()
    out = out_dir / "rtf_vs_threads.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return [out]


def plot_server(result: ServerBenchResult, out_dir: Path) -> list[Path]:
    """Write ``load_vs_concurrency.png`` (throughput and p95 latency on twin axes)."""
    levels = sorted(result.levels, key=lambda lv: lv.concurrency)
    if not levels:
        return []
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    xs = [lv.concurrency for lv in levels]
    ax.plot(xs, [lv.throughput_audio_s_per_s for lv in levels], marker="o", color="tab:blue", label="throughput")
    ax.set_xlabel("concurrent clients")
    ax.set_ylabel("throughput (audio s per wall s)", color="tab:blue")
    ax.set_xscale("log", base=2)
    ax.set_xticks(xs, [str(x) for x in xs])
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax2 = ax.twinx()
    p95 = [lv.latency_s.p95 if lv.latency_s else float("nan") for lv in levels]
    ax2.plot(xs, p95, marker="s", color="tab:red", label="p95 latency")
    ax2.set_ylabel("p95 latency (s)", color="tab:red")
    ax2.set_ylim(bottom=0)
    ax.set_title(f"{result.settings.api} API at {result.settings.url}", fontsize=9)
    fig.tight_layout()
    out = out_dir / "load_vs_concurrency.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return [out]


def plot_result(result: EngineBenchResult | ServerBenchResult, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    if isinstance(result, EngineBenchResult):
        return plot_engines(result, out_dir)
    return plot_server(result, out_dir)
