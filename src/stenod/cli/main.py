"""Entry point: ``stenod transcribe | models | serve | worker | batch | bench``."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import typer
from typer._click import core as click_core
from typer._click import exceptions as click_errors  # typer >= 0.25 vendors click; its errors live here
from typer.core import TyperGroup

from stenod import __version__
from stenod.cli.batch import batch_command
from stenod.cli.bench import bench_app
from stenod.cli.common import EXIT_USAGE, note, stderr
from stenod.cli.compat import rewrite_transcribe_args
from stenod.cli.config import config_app
from stenod.cli.examples import add_examples, epilog
from stenod.cli.keys import keys_app
from stenod.cli.models import models_app
from stenod.cli.serve import serve_command
from stenod.cli.transcribe import EXAMPLES as TRANSCRIBE_EXAMPLES
from stenod.cli.transcribe import transcribe_command
from stenod.cli.worker import worker_command
from stenod.errors import StenodError


class StenodGroup(TyperGroup):
    """The root command: rewrites whisper.cpp's flags for ``transcribe`` before parsing, and turns
    every usage error into one ``error:`` line (exit 2) instead of click's boxed usage text."""

    def main(  # type: ignore[override]
        self, args: Sequence[str] | None = None, prog_name: str | None = None, complete_var: str | None = None,
        standalone_mode: bool = True, **extra: Any,
    ) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        try:
            argv = rewrite_transcribe_args(argv, note)
        except StenodError as exc:  # a whisper.cpp flag with no equivalent
            if not standalone_mode:
                raise
            _usage_error(exc.message, None)
        try:
            result = super().main(args=argv, prog_name=prog_name or "stenod", complete_var=complete_var,
                                  standalone_mode=False, **extra)
        except click_errors.NoArgsIsHelpError:  # `stenod` or `stenod models` alone: help was printed
            if not standalone_mode:
                raise
            sys.exit(EXIT_USAGE)
        except click_errors.NoSuchOption as exc:
            if not standalone_mode:
                raise
            hint = f"; did you mean {' or '.join(sorted(exc.possibilities))}?" if exc.possibilities else ""
            _usage_error(f"no such option {exc.option_name}{hint}", exc.ctx)
        except click_errors.UsageError as exc:
            if not standalone_mode:
                raise
            _usage_error(exc.format_message(), exc.ctx)
        except click_errors.ClickException as exc:
            if not standalone_mode:
                raise
            stderr.print(f"error: {exc.format_message()}", markup=False)
            sys.exit(exc.exit_code)
        except typer.Abort:
            if not standalone_mode:
                raise
            stderr.print("error: aborted", markup=False)
            sys.exit(1)
        if not standalone_mode:
            return result
        sys.exit(result if isinstance(result, int) else 0)  # typer.Exit(n) comes back as n


def _usage_error(message: str, ctx: click_core.Context | None) -> None:
    command = ctx.command_path if ctx is not None else "stenod"
    text = " ".join(message.split())  # click's messages may wrap; the contract is one line
    stderr.print(f"error: {text} (see '{command} --help')", markup=False)
    sys.exit(EXIT_USAGE)


app = typer.Typer(
    name="stenod",
    cls=StenodGroup,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Whisper speech-to-text: transcribe files, serve an OpenAI-compatible API, batch, benchmark.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command("transcribe", epilog=TRANSCRIBE_EXAMPLES)(transcribe_command)
app.command("batch", epilog=epilog("batch"))(batch_command)
app.add_typer(models_app, name="models", epilog=epilog("models"))
app.add_typer(bench_app, name="bench", epilog=epilog("bench"))
app.command("serve", epilog=epilog("serve"))(serve_command)
app.command("worker", epilog=epilog("worker"))(worker_command)
app.add_typer(config_app, name="config", epilog=epilog("config"))
app.add_typer(keys_app, name="keys", epilog=epilog("keys"))
for _group, _name in ((models_app, "models"), (bench_app, "bench"), (config_app, "config"), (keys_app, "keys")):
    add_examples(_group, _name)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"stenod {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """stenod: self-hosted Whisper speech-to-text."""
