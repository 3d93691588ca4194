"""What every command shares: settings from flags, logging set-up, one-line user errors."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any, NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from stenod.errors import StenodError
from stenod.settings import Settings, load_settings

stderr = Console(stderr=True, highlight=False, soft_wrap=True)

ConfigOption = typer.Option("--config", help="TOML settings file (see README: Configuration).")


def build_settings(config: Path | None, **overrides: Any) -> Settings:
    try:
        return load_settings(config_file=config, **overrides)
    except (ValidationError, FileNotFoundError, ValueError) as exc:
        fail(f"invalid configuration: {_one_line(exc)}", code=2)


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
    return str(exc)


def fail(message: str, *, code: int = 1) -> NoReturn:
    stderr.print(f"[red]error:[/red] {escape(message)}", markup=True)  # a file named "[x].wav" stays as is
    raise typer.Exit(code)


def report_error(exc: StenodError, *, subject: object | None = None) -> None:
    """One line on stderr; ``subject`` (a file) is named first unless the message already does."""
    message = exc.message
    if subject is not None and not message.startswith(str(subject)):
        message = f"{subject}: {message}"
    stderr.print(f"[red]error:[/red] {escape(message)}", markup=True)


def configure_cli_logging(level: str = "warning") -> None:
    """Quiet library logs for interactive use; the server configures structured logs itself."""
    logging.basicConfig(level=getattr(logging, level.upper(), logging.WARNING), stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("faster_whisper").setLevel(logging.WARNING)
