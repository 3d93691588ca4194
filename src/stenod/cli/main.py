"""Entry point: ``stenod transcribe | models | serve | worker | batch | bench``."""

from __future__ import annotations

import typer

from stenod import __version__
from stenod.cli.batch import batch_command
from stenod.cli.bench import bench_app
from stenod.cli.config import config_app
from stenod.cli.keys import keys_app
from stenod.cli.models import models_app
from stenod.cli.serve import serve_command
from stenod.cli.transcribe import transcribe_command
from stenod.cli.worker import worker_command

app = typer.Typer(
    name="stenod",
    help="Whisper speech-to-text: transcribe files, serve an OpenAI-compatible API, batch, benchmark.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command("transcribe")(transcribe_command)
app.command("batch")(batch_command)
app.add_typer(models_app, name="models")
app.add_typer(bench_app, name="bench")
app.command("serve")(serve_command)
app.command("worker")(worker_command)
app.add_typer(config_app, name="config")
app.add_typer(keys_app, name="keys")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"stenod {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """stenod: self-hosted Whisper speech-to-text."""
