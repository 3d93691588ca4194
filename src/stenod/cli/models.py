"""``stenod models list | info``."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from stenod.cli.common import ConfigOption, build_settings, fail
from stenod.errors import StenodError
from stenod.models.catalog import list_models, model_entry

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
    entries = [e for e in list_models(default=settings.model.name, cache_dir=settings.model.cache_dir)
               if all_models or e.available or e.default]
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
