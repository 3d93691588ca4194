"""Checks of what the user configured that pydantic-settings lets pass silently: unknown keys in
the TOML file (named with file and line), unknown ``STENOD_*`` variables, and TOML syntax errors
(reported with file, line and column instead of tomllib's bare "Invalid value").

Returned as strings; the CLI prints them as ``warning:`` / ``error:`` lines.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel

from stenod.errors import ConfigFileError
from stenod.settings import Settings

ENV_PREFIX = "STENOD_"
IGNORED_ENV_PREFIXES = ("STENOD_TEST_",)
"""The test suite's own variables (corpus and cache locations), not settings."""
TOP_LEVEL_ENV = {"STENOD_CONFIG_FILE"}


def _sections() -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for name, field in Settings.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            out[name] = set(annotation.model_fields)
    return out


def _suggest(word: str, choices: set[str] | list[str]) -> str:
    match = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def read_toml_or_raise(path: Path) -> dict[str, object]:
    """Parse ``path``; a syntax error names ``path:line:column``.

    Raises:
        ConfigFileError: the file is missing, unreadable or not valid TOML.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigFileError(f"{path}: config file not found", param="config") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigFileError(f"{path}: cannot read the config file ({getattr(exc, 'strerror', None) or exc})",
                              param="config") from exc
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        where = re.search(r"\(at line (\d+), column (\d+)\)", message)
        if where:
            reason = message[: where.start()].strip()
            raise ConfigFileError(f"{path}:{where.group(1)}:{where.group(2)}: invalid TOML: {reason}",
                                  param="config") from exc
        raise ConfigFileError(f"{path}: invalid TOML: {message}", param="config") from exc


def _key_lines(text: str) -> dict[tuple[str, str], int]:
    """``(section, key) -> line number`` for ``key = ...`` lines under ``[section]`` headers."""
    lines: dict[tuple[str, str], int] = {}
    section = ""
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        header = re.match(r"^\[\s*([A-Za-z0-9_.-]+)\s*\]", stripped)
        if header:
            section = header.group(1)
            lines.setdefault((section, ""), number)
            continue
        key = re.match(r"^([A-Za-z0-9_\"'.-]+)\s*=", stripped)
        if key:
            lines.setdefault((section, key.group(1).strip("\"'")), number)
    return lines


def toml_key_line(path: Path, section: str, key: str) -> int | None:
    """The line of ``key = ...`` under ``[section]`` in ``path`` (for error messages)."""
    try:
        return _key_lines(path.read_text(encoding="utf-8")).get((section, key))
    except (OSError, UnicodeDecodeError):
        return None


def toml_warnings(path: Path) -> list[str]:
    """One line per unknown section or key in the TOML file, with its line number."""
    data = read_toml_or_raise(path)
    lines = _key_lines(path.read_text(encoding="utf-8"))
    sections = _sections()
    warnings: list[str] = []
    for section, value in data.items():
        if section not in sections:
            if section == "config_file":
                continue
            line = lines.get((section, "")) or lines.get(("", section), 0)
            warnings.append(f"{path}:{line}: unknown section [{section}], ignored{_suggest(section, set(sections))}")
            continue
        if not isinstance(value, dict):
            line = lines.get(("", section), 0)
            warnings.append(f"{path}:{line}: {section} must be a [{section}] table, ignored")
            continue
        for key in value:
            if key not in sections[section]:
                line = lines.get((section, key), 0)
                warnings.append(f"{path}:{line}: unknown key {key!r} in [{section}], ignored"
                                f"{_suggest(key, sections[section])}")
    return warnings


def env_warnings(environ: Mapping[str, str]) -> list[str]:
    """One line per ``STENOD_*`` variable that names no setting (typos are otherwise ignored)."""
    sections = _sections()
    known = set(TOP_LEVEL_ENV) | {f"{ENV_PREFIX}{s.upper()}__{k.upper()}" for s, keys in sections.items() for k in keys}
    warnings = []
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper in known or upper.startswith(IGNORED_ENV_PREFIXES):
            continue
        warnings.append(f"environment variable {name} is not a stenod setting, ignored{_suggest(upper, sorted(known))}")
    return warnings
