"""``stenod models list | info | convert``."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from stenod.cli.common import ConfigOption, build_settings, fail
from stenod.errors import StenodError
from stenod.models import (
    GGML_QUANTIZATIONS,
    GgmlConversionError,
    convert_ct2_to_ggml,
    is_ggml_quantization,
    list_models,
    model_entry,
    validate_ggml_file,
)
from stenod.service import resolve_model

models_app = typer.Typer(help="List, inspect and convert models.", no_args_is_help=True)


def _size(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:.0f} MB"


@models_app.command("list")
def list_command(
    all_models: Annotated[bool, typer.Option("--all", help="Also list hub models not on this machine.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    config: Annotated[Path | None, ConfigOption] = None,
) -> None:
    """Models known to stenod: source, where the weights are, size, languages, default."""
    settings = build_settings(config)
    try:
        known = list_models(default=settings.model.name, cache_dir=settings.model.cache_dir)
    except StenodError as exc:  # e.g. bundled base cannot be assembled into the cache folder
        fail(exc.message)
    entries = [e for e in known if all_models or e.available or e.default]
    if as_json:
        typer.echo(json.dumps([asdict(e) for e in entries], indent=2))
        return
    table = Table("model", "default", "source", "available", "size", "languages")
    table.add_column("path", overflow="fold")  # wrapped, never cut to "…": the path is the point
    for e in entries:
        table.add_row(e.name, "*" if e.default else "", e.source, "yes" if e.available else "no",
                      _size(e.size_bytes), e.languages, e.path or "-")
    console = Console()
    if not console.is_terminal:  # piped into grep or a file: one line per model, nothing folded
        console = Console(width=1000)
    console.print(table)


@models_app.command("info")
def info_command(
    name: Annotated[str, typer.Argument(help="Model name or path.")],
    config: Annotated[Path | None, ConfigOption] = None,
) -> None:
    """Everything known about one model, as JSON."""
    settings = build_settings(config)
    try:
        entry = model_entry(name, default=settings.model.name, cache_dir=settings.model.cache_dir,
                            offline=settings.offline)
    except StenodError as exc:
        fail(exc.message)
    typer.echo(json.dumps(asdict(entry), indent=2))


@models_app.command("convert")
def convert_command(
    src: Annotated[str, typer.Argument(help="A bundled name (tiny.en, base), a CTranslate2 Whisper folder, or (for --to hf) a ggml file.")],
    to: Annotated[str, typer.Option("--to", help="ggml (whisper.cpp file) or hf (transformers folder, for the torch engine and transformers).")] = "ggml",
    quantize: Annotated[str, typer.Option("--quantize", "-q", help="ggml: f16, q8_0 or q5_0 (weights of the 2-D matrices); hf: float16 or float32.")] = "",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="File (ggml) or new folder (hf) to write (default: ./ggml-<name>-<quant>.bin or ./<name>-hf).")] = None,
    config: Annotated[Path | None, ConfigOption] = None,
) -> None:
    """Convert a Whisper model: CTranslate2 to a whisper.cpp ggml file (validated before it is
    written), or CTranslate2 / ggml to a transformers folder (written atomically)."""
    if to == "hf":
        _convert_to_hf(src, quantize or "float16", output, config)
        return
    quantize = quantize or "f16"
    if to != "ggml":
        fail(f"--to {to!r} is not supported; choose ggml or hf", code=2)
    if not is_ggml_quantization(quantize):
        fail(f"--quantize must be one of {', '.join(GGML_QUANTIZATIONS)}, not {quantize!r}", code=2)
    settings = build_settings(config)
    try:
        resolved = resolve_model(settings, src)
    except StenodError as exc:
        fail(exc.message)
    if resolved.format == "ggml":
        fail(f"{src} is already a ggml file")
    if resolved.format == "hf":
        fail(f"{src} is a transformers folder; --to ggml needs a CTranslate2 model (e.g. a bundled name)")
    name = resolved.name if resolved.source == "bundled" else Path(src).expanduser().resolve().name
    out = output if output is not None else Path(f"ggml-{name}-{quantize}.bin")
    started = time.perf_counter()
    try:
        convert_ct2_to_ggml(resolved.path, out, quantize=quantize)
        info = validate_ggml_file(out)
    except GgmlConversionError as exc:
        fail(f"cannot convert {src}: {exc}")
    except OSError as exc:
        fail(f"cannot write {out}: {exc.strerror or exc}")
    typer.echo(
        f"wrote {out} ({info.file_size / 1e6:.1f} MB, {info.weight_type}, {len(info.tensors)} tensors, "
        f"{'multilingual' if resolved.multilingual else 'English-only'}) in {time.perf_counter() - started:.1f} s"
    )


def _convert_to_hf(src: str, dtype: str, output: Path | None, config: Path | None) -> None:
    if dtype not in ("float16", "float32"):
        fail(f"--quantize for --to hf must be float16 or float32, not {dtype!r}", code=2)
    try:
        from stenod.engines.torch_whisper.weights import convert_to_hf
    except ImportError as exc:
        fail(f"--to hf needs PyTorch and safetensors: pip install 'stenod[gpu]' ({exc})")
    settings = build_settings(config)
    try:
        resolved = resolve_model(settings, src)
    except StenodError as exc:
        fail(exc.message)
    if resolved.format == "hf":
        fail(f"{src} is already a transformers folder")
    name = resolved.name if resolved.source == "bundled" else Path(src).expanduser().resolve().stem
    out = output if output is not None else Path(f"{name}-hf")
    started = time.perf_counter()
    try:
        convert_to_hf(resolved.path, out, dtype=dtype)
    except StenodError as exc:
        fail(f"cannot convert {src}: {exc.message}")
    except OSError as exc:
        fail(f"cannot write {out}: {exc.strerror or exc}")
    size = sum(f.stat().st_size for f in out.iterdir())
    typer.echo(
        f"wrote {out}/ ({size / 1e6:.1f} MB, {dtype}, "
        f"{'multilingual' if resolved.multilingual else 'English-only'}) in {time.perf_counter() - started:.1f} s"
    )
