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
