"""``stenod config show | reference``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from stenod.cli.common import ConfigOption, build_settings
from stenod.settings_reference import effective_settings, settings_reference_markdown

config_app = typer.Typer(help="Show the effective configuration and the settings reference.", no_args_is_help=True)


@config_app.command("show")
def show_command(config: Annotated[Path | None, ConfigOption] = None) -> None:
    """Print the settings in effect (defaults < TOML file < environment), secrets redacted."""
    typer.echo(json.dumps(effective_settings(build_settings(config)), indent=2))


@config_app.command("reference")
def reference_command() -> None:
    """Print every setting as a Markdown table (the README's Configuration section)."""
    typer.echo(settings_reference_markdown())
