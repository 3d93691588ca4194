"""The README's promises: every setting documented, the two commands present and used by CI."""

from __future__ import annotations

from stenod.settings_reference import settings_reference_markdown
from tests.conftest import REPO_ROOT

README = (REPO_ROOT / "README.md").read_text()


def test_readme_settings_table_matches_the_code() -> None:
    assert settings_reference_markdown() in README, "regenerate with `stenod config reference`"


def test_readme_has_the_two_commands_and_ci_runs_the_test_one() -> None:
    assert ".venv/bin/stenod serve" in README
    assert "bash scripts/test.sh" in README
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    assert "bash scripts/test.sh" in ci


def test_readme_model_sizes_match_models_list(cache_dir) -> None:  # type: ignore[no-untyped-def]
    """The Models table shows what `stenod models list` prints (MB = 10^6 bytes) for bundled models."""
    import re

    from stenod.models.catalog import model_entry

    for name in ("base", "tiny.en"):
        row = next(line for line in README.splitlines() if line.startswith(f"| `{name}`"))
        shown = re.search(r"\| (\d+) MB \|", row)
        assert shown, row
        entry = model_entry(name, default="base", cache_dir=cache_dir)
        assert entry.size_bytes is not None
        assert int(shown.group(1)) == round(entry.size_bytes / 1e6), (name, entry.size_bytes)
