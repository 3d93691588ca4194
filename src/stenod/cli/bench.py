"""``stenod bench engines | server | compare | recommend | report | schema``: measure engines and
servers, compare two runs, and size machines from the measurements.

Every measuring command writes DIR/result.json (schema: ``stenod bench schema``), DIR/result.md
and PNG plots, and prints the Markdown table on stdout; progress goes to stderr.
"""

from __future__ import annotations

import json
import shlex
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

from stenod.cli.common import ConfigOption, build_settings, configure_cli_logging, fail, stderr

if TYPE_CHECKING:  # the bench package is imported lazily, inside each command
    from stenod.bench import (
        BenchConfig,
        CorpusItem,
        EngineBenchResult,
        EngineRun,
        LoadLevel,
        RequestRecord,
        ServerBenchResult,
    )

bench_app = typer.Typer(
    help="Benchmarks: engine RTF/memory/WER matrix, server load tests, comparisons, sizing.",
    no_args_is_help=True,
)

DEFAULT_URL = "http://127.0.0.1:8080"


def _csv(value: str, name: str) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise typer.BadParameter(f"{name} needs at least one value")
    return items


def _csv_ints(value: str, name: str) -> list[int]:
    try:
        values = [int(v) for v in _csv(value, name)]
    except ValueError:
        raise typer.BadParameter(f"{name} takes comma-separated integers, e.g. 1,2,4") from None
    if any(v < 1 for v in values):
        raise typer.BadParameter(f"{name} values must be at least 1")
    return values


def _command_line(ctx: typer.Context) -> str:
    """The command as a user would retype it, defaults made explicit, for the result file.
    Secrets (``--api-key``) are left out."""
    parts = ["stenod", *ctx.command_path.split()[1:]]
    for param in ctx.command.params:
        name = param.name or ""
        value = ctx.params.get(name)
        if name in ("api_key", "config") or value is None or value == []:
            continue
        values = list(value) if isinstance(value, (list, tuple)) else [value]
        if param.param_type_name == "argument":
            parts += [str(v) for v in values]
            continue
        opt = max(param.opts, key=len)
        if getattr(param, "is_flag", False):
            if value:
                parts.append(opt)
            elif param.secondary_opts:
                parts.append(max(param.secondary_opts, key=len))
            continue
        for v in values:
            parts += [opt, str(v)]
    return shlex.join(parts)


def _output_dir(output_dir: Path | None, kind: str) -> Path:
    if output_dir is not None:
        return output_dir
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return Path("bench-results") / f"{kind}-{stamp}"


def _write_outputs(result: Any, markdown: str, out_dir: Path, *, plots: bool) -> None:
    from stenod.bench import plot_result
    from stenod.storage import write_atomic

    out_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(out_dir / "result.json", result.model_dump_json(indent=2) + "\n")
    write_atomic(out_dir / "result.md", markdown)
    written = [out_dir / "result.json", out_dir / "result.md"]
    if plots:
        written += plot_result(result, out_dir)
    stderr.print("wrote " + ", ".join(str(p) for p in written))


def _load_items(corpus: list[Path], files: list[Path], limit: int) -> list[CorpusItem]:
    from stenod.bench import CorpusError, load_corpus_or_raise

    try:
        return load_corpus_or_raise(corpus, files=files, limit=limit)
    except CorpusError as exc:
        fail(str(exc), code=2)


CorpusOption = typer.Option(
    "--corpus", help="Corpus set (audio/ + transcripts.tsv, like ../shared/corpus/<set>) or a folder of audio; repeatable.")
FileOption = typer.Option("--file", help="A single audio file (reference from its set's transcripts.tsv); repeatable.")
LimitOption = typer.Option("--limit", min=0, help="At most N files per --corpus folder, by name (0 = all).")


@bench_app.command("engines")
def engines_command(
    ctx: typer.Context,
    models: Annotated[str, typer.Option("--models", help="Comma-separated model names or paths.")] = "tiny.en,base",
    threads: Annotated[str, typer.Option("--threads", help="Comma-separated thread counts per call.")] = "1,2",
    compute_types: Annotated[str, typer.Option("--compute-types", help="Comma-separated: int8, float32, float16 ...")] = "int8,float32",
    engines: Annotated[str, typer.Option("--engines", help="Comma-separated: faster-whisper, whisper.cpp.")] = "faster-whisper",
    devices: Annotated[str, typer.Option("--devices", help="Comma-separated cpu, cuda; auto = cpu plus cuda when a GPU is found.")] = "auto",
    corpus: Annotated[list[Path], CorpusOption] = [],  # noqa: B006 (typer needs a literal default)
    file: Annotated[list[Path], FileOption] = [],  # noqa: B006
    limit: Annotated[int, LimitOption] = 0,
    repeats: Annotated[int, typer.Option("--repeats", min=1, help="Measured passes over all files per configuration.")] = 3,
    warmup: Annotated[int, typer.Option("--warmup", min=0, help="Discarded transcriptions of the first file before measuring.")] = 1,
    language: Annotated[str, typer.Option("--language", help="Language of files without languages.tsv; auto = detect.")] = "en",
    beam_size: Annotated[int, typer.Option("--beam-size", min=1, max=16)] = 1,
    timeout: Annotated[float, typer.Option("--timeout", min=1, help="Seconds one configuration may take.")] = 1800.0,
    output_dir: Annotated[Path | None, typer.Option("--output-dir", "-o", help="Default: bench-results/engines-<UTC time>.")] = None,
    plots: Annotated[bool, typer.Option("--plots/--no-plots")] = True,
    config: Annotated[Path | None, ConfigOption] = None,
) -> None:
    """Measure load time, RTF, peak memory and WER over models x engines x devices x compute types x threads."""
    configure_cli_logging()
    from stenod.bench import (
        BenchFile,
        EngineBenchResult,
        EngineBenchSettings,
        engines_markdown,
        expand_grid,
        host_info,
        run_matrix,
        threads_pivot_markdown,
    )

    command = _command_line(ctx)
    settings = build_settings(config)
    items = _load_items(corpus, file, limit)
    host = host_info()
    device_list = _csv(devices, "--devices")
    if device_list == ["auto"]:
        device_list = ["cpu", "cuda"] if host.gpu_names else ["cpu"]
    configs = expand_grid(
        models=_csv(models, "--models"), engines=_csv(engines, "--engines"), devices=device_list,
        compute_types=_csv(compute_types, "--compute-types"), threads=_csv_ints(threads, "--threads"),
    )
    lang = None if language.lower() in ("auto", "detect", "") else language.lower()
    stderr.print(f"{len(configs)} configurations x {len(items)} files x {repeats} repeats (+{warmup} warm-up), "
                 f"one fresh process each")

    def progress(cfg: BenchConfig, run: EngineRun) -> None:
        if run.status == "ok" and run.rtf is not None:
            stderr.print(f"  {cfg.label}: RTF {run.rtf.median:.3f} ({run.rtf.min:.3f}-{run.rtf.max:.3f}), "
                         f"load {run.load_s:.2f} s, peak RSS {run.peak_rss_mb:.0f} MB"
                         + (f", WER {100 * run.wer:.1f} %" if run.wer is not None else ""))
        else:
            stderr.print(f"  {cfg.label}: [red]error[/red]: {run.error}", markup=True)

    gpu = host.gpu_names[0] if host.gpu_names else None
    out_dir = _output_dir(output_dir, "engines")
    bench_settings = EngineBenchSettings(repeats=repeats, warmup=warmup, language=lang, beam_size=beam_size,
                                         timeout_s=timeout)
    done: list[EngineRun] = []

    def build(runs: list[EngineRun]) -> EngineBenchResult:
        measured = next((r.files for r in runs if r.files), None)
        files = [BenchFile(file=str(item.path), audio_s=measured[i].audio_s if measured else 0.0,
                           reference=item.reference, language=item.language) for i, item in enumerate(items)]
        return EngineBenchResult(created_at=datetime.now(UTC), command=command, host=host,
                                 settings=bench_settings, files=files, runs=runs)

    def on_run(cfg: BenchConfig, run: EngineRun) -> None:
        progress(cfg, run)
        done.append(run)
        # Keep what is measured so far: a long grid that is interrupted still leaves a valid file.
        from stenod.storage import write_atomic

        out_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(out_dir / "result.json", build(done).model_dump_json(indent=2) + "\n")

    runs = run_matrix(configs, items, settings=settings, bench=bench_settings, gpu_name=gpu, on_run=on_run)
    result = build(runs)
    markdown = engines_markdown(result) + "\n" + threads_pivot_markdown(result)
    _write_outputs(result, markdown, out_dir, plots=plots)
    typer.echo(markdown)
    if not any(r.status == "ok" for r in runs):
        fail("no configuration could run (see the errors above)")


@bench_app.command("report")
def report_command(
    result_file: Annotated[Path, typer.Argument(help="A result.json from bench engines or bench server.")],
    output_dir: Annotated[Path | None, typer.Option("--output-dir", "-o", help="Also write result.md and plots here.")] = None,
) -> None:
    """Print the Markdown table of a saved result (and redraw its plots with --output-dir)."""
    from stenod.bench import EngineBenchResult, result_markdown, threads_pivot_markdown

    result = _read_result(result_file)
    markdown = result_markdown(result)
    if isinstance(result, EngineBenchResult):
        markdown += "\n" + threads_pivot_markdown(result)
    if output_dir is not None:
        _write_outputs(result, markdown, output_dir, plots=True)
    typer.echo(markdown)


def _read_result(path: Path) -> EngineBenchResult | ServerBenchResult:
    from pydantic import ValidationError

    from stenod.bench import load_result_or_raise

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        fail(f"{path}: {exc.strerror or exc}", code=2)
    try:
        return load_result_or_raise(text)
    except ValidationError as exc:
        fail(f"{path}: not a valid bench result: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}", code=2)
    except ValueError as exc:
        fail(f"{path}: {exc}", code=2)


@bench_app.command("compare")
def compare_command(
    a: Annotated[Path, typer.Argument(help="Result A (baseline).")],
    b: Annotated[Path, typer.Argument(help="Result B.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the ratios as JSON.")] = False,
) -> None:
    """Ratio table B/A of two results of the same kind, matched by configuration or concurrency."""
    from dataclasses import asdict

    from stenod.bench import compare_markdown, compare_results

    ra, rb = _read_result(a), _read_result(b)
    try:
        rows = compare_results(ra, rb)
    except ValueError as exc:
        fail(str(exc), code=2)
    if as_json:
        typer.echo(json.dumps({"a": str(a), "b": str(b), "rows": [asdict(r) for r in rows]}, indent=2))
        return
    if ra.created_at and rb.created_at and abs((ra.created_at - rb.created_at).total_seconds()) > 3600:
        stderr.print("note: the two runs are more than an hour apart; on a shared machine, compare runs made side by side")
    typer.echo(compare_markdown(rows, a_name=str(a), b_name=str(b)))


@bench_app.command("schema")
def schema_command() -> None:
    """Print the JSON Schema of result.json (both kinds)."""
    from stenod.bench import json_schema

    typer.echo(json.dumps(json_schema(), indent=2))


@bench_app.command("server")
def server_command(
    ctx: typer.Context,
    url: Annotated[str, typer.Option("--url", help="Base URL of the endpoint (no path).")] = DEFAULT_URL,
    api: Annotated[str, typer.Option("--api", help="openai (/v1/audio/transcriptions) or whispercpp (/inference).")] = "openai",
    concurrency: Annotated[str, typer.Option("--concurrency", help="Comma-separated client counts, one level each.")] = "1,2,4,8,16",
    corpus: Annotated[list[Path], CorpusOption] = [],  # noqa: B006
    file: Annotated[list[Path], FileOption] = [],  # noqa: B006
    limit: Annotated[int, LimitOption] = 0,
    model: Annotated[str | None, typer.Option("--model", help="Sent as the model field (default: the server's).")] = None,
    language: Annotated[str | None, typer.Option("--language", help="Sent as language for files without languages.tsv.")] = None,
    requests: Annotated[int, typer.Option("--requests", min=1, help="At most this many requests per level.")] = 200,
    duration: Annotated[float, typer.Option("--duration", min=0.1, help="No new request after this many seconds per level.")] = 60.0,
    request_timeout: Annotated[float, typer.Option("--request-timeout", min=0.1, help="Seconds one request may take.")] = 300.0,
    api_key: Annotated[str | None, typer.Option("--api-key", help="Bearer token, if the server needs one (never written to the result).")] = None,
    allow_remote: Annotated[bool, typer.Option("--allow-remote", help="Allow a URL that is not on this machine.")] = False,
    output_dir: Annotated[Path | None, typer.Option("--output-dir", "-o", help="Default: bench-results/server-<UTC time>.")] = None,
    plots: Annotated[bool, typer.Option("--plots/--no-plots")] = True,
) -> None:
    """Load-test an OpenAI-compatible or whisper.cpp endpoint: throughput, latency p50/p95/p99, errors, WER."""
    import asyncio

    from stenod.bench import (
        EndpointUnreachableError,
        LoadOptions,
        ServerBenchResult,
        ServerBenchSettings,
        failure_summary,
        host_info,
        is_loopback_url,
        load_items_or_raise,
        run_load,
        server_markdown,
    )
    from stenod.errors import StenodError

    configure_cli_logging()
    command = _command_line(ctx)
    if api not in ("openai", "whispercpp"):
        fail(f"--api must be openai or whispercpp, not {api!r}", code=2)
    api_kind: Literal["openai", "whispercpp"] = "openai" if api == "openai" else "whispercpp"
    if not url.startswith(("http://", "https://")):
        fail(f"--url must start with http:// or https://, not {url!r}", code=2)
    if not is_loopback_url(url) and not allow_remote:
        fail(f"{url} is not on this machine; a load test sends many requests, so pass --allow-remote "
             "to confirm you mean to load that server", code=2)
    levels_wanted = _csv_ints(concurrency, "--concurrency")
    corpus_items = _load_items(corpus, file, limit)
    try:
        items, files = load_items_or_raise(corpus_items)
    except StenodError as exc:
        fail(exc.message, code=2)
    options = LoadOptions(url=url, api=api_kind, model=model, language=language, max_requests=requests,
                          max_duration_s=duration, request_timeout_s=request_timeout, api_key=api_key)

    last_detail: list[str] = []

    def on_level(level: LoadLevel, records: list[RequestRecord]) -> None:
        lat = level.latency_s
        errors = {k: v for k, v in level.status_counts.items() if k != "200"}
        stderr.print(
            f"  concurrency {level.concurrency}: {level.ok}/{level.requests} ok, "
            f"{level.throughput_audio_s_per_s:.2f} audio s/s"
            + (f", p50 {lat.p50:.2f} s, p95 {lat.p95:.2f} s" if lat else "")
            + (f", errors {errors}" if errors else "")
        )
        last_detail[:] = [r.detail for r in records if r.detail][:1] or last_detail

    stderr.print(f"load test of {url} ({api}): levels {levels_wanted}, at most {requests} requests or "
                 f"{duration:g} s each, {len(items)} files")
    try:
        levels = asyncio.run(run_load(options, items, levels_wanted, on_level=on_level))
    except EndpointUnreachableError as exc:
        fail(str(exc))
    result = ServerBenchResult(
        created_at=datetime.now(UTC), command=command, host=host_info(gpus=[]),
        settings=ServerBenchSettings(url=url, api=api_kind, model=model, language=language, max_requests=requests,
                                     max_duration_s=duration, request_timeout_s=request_timeout),
        files=files, levels=levels,
    )
    markdown = server_markdown(result)
    _write_outputs(result, markdown, _output_dir(output_dir, "server"), plots=plots)
    typer.echo(markdown)
    if not any(level.ok for level in levels):
        fail(f"no request to {url} succeeded ({failure_summary(levels)})"
             + (f": {last_detail[0]}" if last_detail else ""))


@bench_app.command("recommend")
def recommend_command(
    result_file: Annotated[Path, typer.Argument(help="result.json of `stenod bench engines`.")],
    target_audio_hours_per_hour: Annotated[float, typer.Option("--target-audio-hours-per-hour", min=0.0, help="Load to carry, e.g. 100 = 100 hours of audio per hour.")] = 10.0,
    latency_budget_s: Annotated[float, typer.Option("--latency-budget-s", min=0.0, help="Longest acceptable processing time of one request.")] = 10.0,
    request_audio_s: Annotated[float, typer.Option("--request-audio-s", min=0.0, help="Typical request length in audio seconds.")] = 30.0,
    cores: Annotated[int, typer.Option("--cores", min=0, help="Cores per machine (0 = the measured machine's).")] = 0,
    max_memory_gb: Annotated[float, typer.Option("--max-memory-gb", min=0.0, help="Memory per machine (0 = the measured machine's).")] = 0.0,
    utilization: Annotated[float, typer.Option("--utilization", min=0.05, max=1.0, help="Planned busy fraction of each slot.")] = 0.7,
    wer_tolerance: Annotated[float, typer.Option("--wer-tolerance", min=0.0, help="WER difference (0.005 = 0.5 points) treated as equal.")] = 0.005,
    as_json: Annotated[bool, typer.Option("--json", help="Print the recommendation as JSON.")] = False,
) -> None:
    """Suggest model, threads per slot, slots per machine and machines for a target load, from measured RTF and memory."""
    from stenod.bench import EngineBenchResult, SizingTarget, recommend

    result = _read_result(result_file)
    if not isinstance(result, EngineBenchResult):
        fail(f"{result_file} is a server load test; recommend needs a `stenod bench engines` result", code=2)
    target = SizingTarget(
        audio_hours_per_hour=target_audio_hours_per_hour, latency_budget_s=latency_budget_s,
        request_audio_s=request_audio_s, cores_per_machine=cores, max_memory_gb=max_memory_gb,
        utilization=utilization, wer_tolerance=wer_tolerance,
    )
    try:
        rec = recommend(result, target)
    except ValueError as exc:
        fail(str(exc), code=2)
    if as_json:
        c = rec.chosen
        typer.echo(json.dumps({
            "chosen": None if c is None else {
                "model": c.run.model, "engine": c.run.engine, "device": c.run.device,
                "compute_type": c.run.compute_type, "threads_per_slot": c.run.threads, "slots_per_machine": c.slots,
                "machines": c.machines, "capacity_audio_s_per_s": c.capacity_audio_s_per_s,
                "latency_s": c.latency_s, "memory_mb": c.memory_mb, "wer": c.run.wer,
                "languages": c.languages,
            },
            "sample": rec.sample,
            "serve_command": rec.serve_command,
            "reasons": rec.reasons,
        }, indent=2))
    else:
        for line in rec.reasons:
            typer.echo(f"- {line}")
        typer.echo("")
        typer.echo("| configuration | languages | RTF | slots | audio s/s per machine | latency s | memory MB | WER % | machines | fits |")
        typer.echo("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
        for c in sorted(rec.candidates, key=lambda c: (c.machines, c.latency_s)):
            wer_text = "-" if c.run.wer is None else f"{100 * c.run.wer:.1f}"
            mark = "**chosen**" if c is rec.chosen else ("yes" if c.fits else f"no: {c.why_not}")
            rtf = "-" if c.run.rtf is None else f"{c.run.rtf.median:.3f}"  # candidates are measured runs
            typer.echo(f"| {c.label} | {c.languages} | {rtf} | {c.slots} | {c.capacity_audio_s_per_s:.1f} | "
                       f"{c.latency_s:.1f} | {c.memory_mb:.0f} | {wer_text} | {c.machines} | {mark} |")
        if rec.chosen is not None:
            c = rec.chosen
            typer.echo(f"\nRecommendation: model {c.run.model} ({c.run.engine}, {c.run.device}/{c.run.compute_type}), "
                       f"{c.run.threads} thread(s) per slot, {c.slots} slot(s) per machine, {c.machines} machine(s).")
            typer.echo(f"Run it on each machine with:\n  {rec.serve_command}")
    if rec.chosen is None:
        raise typer.Exit(1)
