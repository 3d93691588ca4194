"""Examples shown at the end of every command's ``--help``, kept in one place so each command's
help ends the same way ("Examples:" then commands to paste)."""

from __future__ import annotations

import typer

EXAMPLES: dict[str, list[str]] = {
    "batch": [
        "stenod batch recordings/ -o transcripts/                      # json, srt, vtt, txt per file",
        "stenod batch recordings/ -o out/ -r --formats txt -m tiny.en  # sub-folders, text only",
        "stenod batch recordings/ -o out/ --retry-failed               # rerun: resume, redo failures",
        "stenod batch recordings/ -o out/ --server http://127.0.0.1:8080",
    ],
    "serve": [
        "stenod serve                                   # bundled base model on 127.0.0.1:8080",
        "stenod serve -m tiny.en --host 0.0.0.0 --port 9000 --slots 2 --threads 1",
        "stenod serve --api-key sk-local-1 --log-format console",
    ],
    "worker": ["stenod worker                                  # needs the [jobs] settings (broker, store)"],
    "models": ["stenod models list --all", "stenod models info base",
               "stenod models convert base --to ggml --quantize q8_0"],
    "models list": ["stenod models list", "stenod models list --all --json"],
    "models info": ["stenod models info tiny.en"],
    "models convert": ["stenod models convert base --to ggml --quantize q8_0"],
    "bench": ["stenod bench engines --models tiny.en,base --threads 1,2",
              "stenod bench recommend bench-results/engines-*/result.json --target-audio-hours-per-hour 100"],
    "bench engines": ["stenod bench engines --models tiny.en,base --threads 1,2"],
    "bench server": ["stenod bench server --url http://127.0.0.1:8080 --concurrency 1,2,4"],
    "bench compare": ["stenod bench compare before/result.json after/result.json"],
    "bench report": ["stenod bench report result.json -o report/"],
    "bench recommend": ["stenod bench recommend result.json --target-audio-hours-per-hour 100 --latency-budget-s 5"],
    "bench schema": ["stenod bench schema > result.schema.json"],
    "config": ["stenod config show", "stenod config show --config stenod.toml", "stenod config reference"],
    "config show": ["stenod config show --config stenod.toml", "HF_HUB_OFFLINE=1 stenod config show"],
    "config reference": ["stenod config reference > settings.md"],
    "keys": ["stenod keys create ci --rpm 60 --audio-minutes-per-hour 120 --concurrency 2 --expires-in 90d",
             "stenod keys list", "stenod keys revoke ci"],
    "keys create": ["stenod keys create ci --rpm 60 --audio-minutes-per-hour 120 --concurrency 2",
                    "stenod keys create ops --admin --expires-in 30d --json"],
    "keys list": ["stenod keys list", "stenod keys list --json"],
    "keys revoke": ["stenod keys revoke ci", "stenod keys revoke key_0123456789abcdef"],
}


def epilog(name: str) -> str:
    lines = "\n".join(f"  {line}" for line in EXAMPLES[name])
    return f"\nExamples:\n\n{lines}\n"


def add_examples(group: typer.Typer, prefix: str) -> None:
    """Give each registered subcommand of ``group`` its examples (unless it has an epilog)."""
    for info in group.registered_commands:
        name = f"{prefix} {info.name}"
        if info.epilog is None and name in EXAMPLES:
            info.epilog = epilog(name)
