"""Job tests: the slowest contract cases run on the Celery stack only with ``-m slow`` (they pass
on both stacks; the in-process run keeps them in the default suite's time budget)."""

from __future__ import annotations

import pytest

SLOW_ON_CELERY = ("test_cancel_queued_never_runs_and_cancel_running_stops_it",
                  "test_list_is_newest_first_with_cursor_pagination")


@pytest.hookimpl(tryfirst=True)  # before -m deselects
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "[celery-redis]" in item.nodeid and item.nodeid.split("::")[-1].split("[")[0] in SLOW_ON_CELERY:
            item.add_marker(pytest.mark.slow)
