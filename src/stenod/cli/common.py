"""What every command shares: settings from flags, logging set-up, one-line user errors."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from stenod.config_check import env_warnings, toml_key_line, toml_warnings
from stenod.errors import StenodError
from stenod.settings import Settings, load_settings

stderr = Console(stderr=True, highlight=False, soft_wrap=True)

EXIT_FAILED = 1
"""Some file failed, or the work could not start (model would not load, server unreachable)."""
EXIT_USAGE = 2
"""Bad flag, value, file argument or configuration: nothing was done."""
EXIT_INTERRUPTED = 130
"""Ctrl-C (128 + SIGINT)."""

ConfigOption = typer.Option("--config", help="TOML settings file (see README: Configuration).")


def build_settings(config: Path | None, *, flags: dict[str, str] | None = None, **overrides: Any) -> Settings:
    """Settings from defaults < TOML < ``STENOD_*`` < flags (``overrides``, ``None`` = not given).

    Unknown TOML keys and ``STENOD_*`` variables are printed as warnings; a bad value is one
    ``error:`` line naming where it came from (the flag, the variable, or ``file:line``) and
    exits 2. ``flags`` maps ``"section.key"`` to the flag's name where it is not ``--key``.
    """
    config_path = config or (Path(os.environ["STENOD_CONFIG_FILE"]) if os.environ.get("STENOD_CONFIG_FILE") else None)
    try:
        notes = env_warnings(os.environ) + (toml_warnings(config_path) if config_path is not None else [])
    except StenodError as exc:
        fail(exc.message, code=EXIT_USAGE)
    for note in notes:
        warn(note)
    try:
        return load_settings(config_file=config, **overrides)
    except ValidationError as exc:
        fail(_validation_message(exc, overrides, config_path, flags or {}), code=EXIT_USAGE)
    except (FileNotFoundError, ValueError) as exc:
        fail(f"invalid configuration: {exc}", code=EXIT_USAGE)


def _validation_message(
    exc: ValidationError, overrides: dict[str, Any], config_path: Path | None, flags: dict[str, str]
) -> str:
    """The first bad value, named the way the user set it (pydantic would say ``model.engine``)."""
    error = exc.errors()[0]
    loc = [str(p) for p in error["loc"]]
    section, key = [*loc, ""][:2]
    value = error.get("input")
    given = overrides.get(section) if isinstance(overrides.get(section), dict) else {}
    env_name = f"STENOD_{section.upper()}__{key.upper()}"
    if given and given.get(key) is not None:
        where = flags.get(f"{section}.{key}", f"--{key.replace('_', '-')}")
    elif env_name in os.environ:
        where = env_name
    elif config_path is not None:
        line = toml_key_line(config_path, section, key)
        where = f"{config_path}:{line}: [{section}] {key}" if line else f"{config_path}: [{section}] {key}"
    else:
        where = ".".join(loc)
    shown = f" {value!r}" if value is not None and not isinstance(value, dict) else ""
    return f"{where}: invalid value{shown}: {error['msg']}"


def note(message: str) -> None:
    """One ``note:`` line on stderr: how input was read, nothing wrong."""
    stderr.print(f"note: {escape(message)}", markup=True)


def warn(message: str) -> None:
    """One ``warning:`` line on stderr (the run goes on)."""
    stderr.print(f"[yellow]warning:[/yellow] {escape(message)}", markup=True)


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
