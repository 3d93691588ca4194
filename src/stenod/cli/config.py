"""``stenod config show | reference``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from stenod.cli.common import ConfigOption, build_settings
from stenod.engines import cpu_count, plan_cpu
from stenod.engines.factory import cpu_batch_clips
from stenod.settings import Settings
from stenod.settings_reference import effective_settings, settings_reference_markdown

config_app = typer.Typer(
    help="Show the configuration in effect and the settings reference.",
    no_args_is_help=True,
)


def resolved_settings(settings: Settings, *, cores: int) -> dict[str, Any]:
    """The settings as ``serve`` and ``batch`` would run them: "choose" values (0) replaced by the
    numbers chosen on this machine, ``offline`` true when ``HF_HUB_OFFLINE`` says so; ``auto``
    lists what was filled in and why."""
    data = effective_settings(settings)
    auto: dict[str, str] = {}
    data["model"]["offline"] = settings.offline
    if settings.offline and not settings.model.offline:
        auto["model.offline"] = "HF_HUB_OFFLINE is set"
    plan = plan_cpu(cores=cores, threads=settings.model.threads, concurrency=settings.server.slots)
    if settings.model.threads == 0:
        data["model"]["threads"] = plan.threads
        auto["model.threads"] = (f"chosen for {cores} cores: {plan.threads} per server slot "
                                 f"(stenod transcribe gives its one call {min(8, cores)})")
    if settings.server.slots == 0:
        batch = cpu_batch_clips(settings.model, slots=0)
        data["server"]["slots"] = plan.concurrency * batch
        auto["server.slots"] = (f"chosen for {cores} cores: {plan.concurrency} workers x batches of {batch} clips"
                                if batch > 1 else f"chosen for {cores} cores")
    if settings.model.batch_clips == 0:
        data["model"]["batch_clips"] = cpu_batch_clips(settings.model, slots=settings.server.slots)
        auto["model.batch_clips"] = "measured best on CPU (docs/ARCHITECTURE.md); 1 where nothing batches"
    b = settings.batch
    batch_plan = plan_cpu(cores=cores, threads=b.threads or settings.model.threads, concurrency=b.workers)
    if b.workers == 0 and b.batch_size <= 1:
        data["batch"]["workers"] = batch_plan.concurrency
        auto["batch.workers"] = f"chosen for {cores} cores (never more than the files to do)"
    if b.threads == 0:
        workers = data["batch"]["workers"] or 1
        data["batch"]["threads"] = b.threads or settings.model.threads or max(1, cores // workers)
        auto["batch.threads"] = "cores // workers"
    data["auto"] = auto
    return data


@config_app.command("show")
def show_command(config: Annotated[Path | None, ConfigOption] = None) -> None:
    """Print the settings in effect (defaults < TOML file < STENOD_* environment), secrets redacted,
    with "choose" values (0) replaced by what this machine gets; "auto" says which and why."""
    typer.echo(json.dumps(resolved_settings(build_settings(config), cores=cpu_count()), indent=2))


@config_app.command("reference")
def reference_command() -> None:
    """Print every setting as a Markdown table (the README's Configuration section)."""
    typer.echo(settings_reference_markdown())
