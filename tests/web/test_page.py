"""The browser page at ``/``, driven in a real headless Chromium (Debian's, through Playwright).

One real ``stenod serve`` (tiny.en, in-process jobs, an API key) serves the page; the test works it
as a person would: enters the key, uploads a corpus clip, waits for the transcript, plays from a
segment, searches, downloads the SRT and sees the error for a file that is not audio. Screenshots
at desktop and phone widths are saved under ``test-artifacts/web/`` for review.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.conftest import ServerProcess, start_server
from tests.conftest import JFK, REPO_ROOT
from tests.wer_utils import normalize

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = REPO_ROOT / "test-artifacts" / "web"
API_KEY = "sk-web-test-4f1c"
TRANSCRIPT_TIMEOUT_MS = 180_000
CHROMIUM_ARGS = [
    # Offline machine: no background connections; root in CI: no sandbox; audio plays unmuted
    # without a gesture so the position can be observed.
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--autoplay-policy=no-user-gesture-required",
]

if not Path(CHROMIUM).exists():
    if os.environ.get("CI"):
        pytest.fail(f"Chromium not found at {CHROMIUM}: scripts/ci-deps.sh installs it", pytrace=False)
    pytest.skip("Chromium is not installed (apt-get install chromium)", allow_module_level=True)

if os.environ.get("CI"):
    from playwright import sync_api  # under CI a missing Playwright is a failure, not a skip
else:
    sync_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def web_server(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Iterator[ServerProcess]:
    data = tmp_path_factory.mktemp("web-data")
    srv = start_server(
        tmp_path_factory.mktemp("web-server"), cache_dir, "--model", "tiny.en", "--slots", "1",
        env={"STENOD_SERVER__API_KEYS": API_KEY, "STENOD_JOBS__DATABASE_URL": f"sqlite:///{data}/jobs.db",
             "STENOD_JOBS__BLOB_URL": f"file://{data}/blobs"},
    )
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture()
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    pg = context.new_page()
    pg.set_default_timeout(30_000)
    yield pg
    context.close()


def _screenshot(pg: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    pg.screenshot(path=str(path), full_page=True)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return path


SRT_TIME = r"(\d\d):(\d\d):(\d\d),(\d\d\d)"


def _srt_cues(text: str) -> list[tuple[float, float, str]]:
    """Parse SRT strictly: numbered cues from 1, 'start --> end', text, blank line."""
    cues = []
    blocks = [b for b in text.strip().replace("\r\n", "\n").split("\n\n") if b.strip()]
    for number, block in enumerate(blocks, start=1):
        lines = block.split("\n")
        assert lines[0] == str(number), block
        m = re.fullmatch(f"{SRT_TIME} --> {SRT_TIME}", lines[1])
        assert m, lines[1]
        h1, m1, s1, ms1, h2, m2, s2, ms2 = map(int, m.groups())
        start, end = h1 * 3600 + m1 * 60 + s1 + ms1 / 1000, h2 * 3600 + m2 * 60 + s2 + ms2 / 1000
        assert end > start
        assert "\n".join(lines[2:]).strip()
        cues.append((start, end, "\n".join(lines[2:])))
    assert [c[0] for c in cues] == sorted(c[0] for c in cues)
    return cues


def test_page_is_self_contained_and_locked_down(web_server: ServerProcess) -> None:
    res = httpx.get(f"{web_server.url}/")
    assert res.status_code == 200
    assert "default-src 'self'" in res.headers["content-security-policy"]
    assert "http://" not in res.text and "https://" not in res.text, "the page must load nothing from elsewhere"
    assert '<option value="de">German</option>' in res.text
    for name in ("app.js", "app.css"):
        asset = httpx.get(f"{web_server.url}/web/{name}")
        assert asset.status_code == 200 and "https://" not in asset.text
    assert httpx.get(f"{web_server.url}/web/..%2f..%2fsettings.py").status_code == 404
    assert httpx.get(f"{web_server.url}/web/index.html").status_code == 404


def test_upload_transcribe_play_search_download(page: Any, web_server: ServerProcess, tmp_path: Path) -> None:
    urls: list[str] = []
    page.on("request", lambda req: urls.append(req.url))
    page.goto(web_server.url + "/")

    # Without the key the recent-jobs list shows the 401 in words.
    page.wait_for_selector("#jobs-error:not([hidden])")
    assert "API key" in page.inner_text("#jobs-error")

    page.fill("#api-key", API_KEY)
    page.click("#key-save")
    page.wait_for_selector("#key-state:has-text('key set')")
    assert page.evaluate("sessionStorage.getItem('stenod.apiKey')") == API_KEY
    assert page.evaluate("localStorage.length") == 0

    page.set_input_files("#files", str(JFK))
    page.click("#start")
    page.wait_for_selector("#uploads li[data-status='completed']", timeout=TRANSCRIPT_TIMEOUT_MS)
    page.wait_for_selector("#segments li", timeout=30_000)
    text = " ".join(page.locator("#segments li .x").all_inner_texts())
    assert "ask not what your country can do for you" in normalize(text)
    _screenshot(page, "desktop-transcript")

    # Click a later segment: the audio jumps there and plays, and that segment is highlighted.
    buttons = page.locator("#segments li button")
    target = buttons.nth(buttons.count() - 1)
    start = float(target.get_attribute("data-start") or 0)
    target.click()
    # Polled from Python: the page's CSP (no 'unsafe-eval') rightly refuses wait_for_function.
    deadline = time.monotonic() + 15
    while page.evaluate("document.querySelector('#player').currentTime") <= start + 0.3:
        assert time.monotonic() < deadline, "audio did not play from the clicked segment"
        page.wait_for_timeout(100)
    page.wait_for_selector("#segments li.current")
    assert page.locator("#segments li.current button").get_attribute("data-start") == target.get_attribute("data-start")

    # Search marks the matches and counts them.
    page.fill("#search", "country")
    page.wait_for_selector("#segments mark")
    assert page.locator("#segments mark").count() >= 2
    assert "match" in page.inner_text("#search-count")

    # Download the SRT and validate it as a subtitle file.
    with page.expect_download() as download_info:
        page.click(".downloads button[data-format='srt']")
    download = download_info.value
    assert download.suggested_filename == "jfk.srt"
    srt_path = tmp_path / "jfk.srt"
    download.save_as(str(srt_path))
    cues = _srt_cues(srt_path.read_text(encoding="utf-8"))
    assert "ask not what your country" in normalize(" ".join(c[2] for c in cues))
    assert cues[-1][1] <= 11.5

    # The job appears in the recent list with its duration, speed and model.
    page.click("#refresh")
    row = page.locator("#jobs tbody tr").first
    row.wait_for()
    cells = row.locator("td").all_inner_texts()
    assert cells[0] == "jfk.flac" and cells[1] == "completed" and cells[3].endswith("x")

    assert not [u for u in urls if API_KEY in u], "the API key must never appear in a URL"


def test_not_audio_shows_readable_error(page: Any, web_server: ServerProcess, tmp_path: Path) -> None:
    page.goto(web_server.url + "/")
    page.fill("#api-key", API_KEY)
    page.click("#key-save")
    notes = tmp_path / "notes.txt"
    notes.write_text("this is not audio\n" * 50)
    page.set_input_files("#files", str(notes))
    page.click("#start")
    error = page.locator("#uploads li[data-file='notes.txt'] .error")
    error.wait_for()
    assert "Not an audio file" in error.inner_text()


def test_phone_width_layout(browser: Any, web_server: ServerProcess) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    pg = context.new_page()
    pg.goto(web_server.url + "/")
    pg.wait_for_selector("#start")
    # Nothing wider than the screen: no horizontal scrolling of the page itself.
    assert pg.evaluate("document.documentElement.scrollWidth") <= 390
    # Every form control has an accessible name (a label).
    unlabeled = pg.evaluate("""[...document.querySelectorAll('input, select')]
        .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')).map(e => e.id)""")
    assert unlabeled == []
    _screenshot(pg, "phone")
    context.close()
