"""The web page at ``GET /`` in a real headless Chromium against the real server (issue 11).

Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them) are driven by Selenium with an
explicit driver path, so Selenium Manager never downloads anything; without them the tests are skipped with
the reason. The server is the real app under a real uvicorn on 127.0.0.1 with the test model, so a page
test transcribes for real (``slow``).

- ``test_page_is_self_contained_and_never_inserts_html``: ``GET /`` without a key; no outside URL, no HTML
  parsing of server text, a Content-Security-Policy.
- ``test_page_transcribes_a_file_and_offers_every_download``: key (sessionStorage only), JFK through
  ``/v1/jobs`` (queued/running shown), the engine's words, txt/srt/vtt/json saved by the browser, the
  subtitles readable (42 characters a line, 2 lines a cue: the page's default).
- ``test_page_shows_server_errors_as_text``: a wrong key's 401 message; a failed job whose message holds
  ``<b>`` is shown literally.
- ``test_page_retries_a_full_queue_then_falls_back_when_jobs_answer_404``: 429 then 404 from ``/v1/jobs``;
  the page waits, then transcribes with ``/v1/audio/transcriptions`` and asks it for srt and vtt too: they
  equal the engine's output for the page's options (the readable layout, as ``run --local`` writes it).

Measured on 2 shared CPU cores: 35-80 s for the module (engine load ~8 s, six transcriptions of 11 s).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from bench.fixtures import clip_path, find_test_model, normalize_text, word_error_rate

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
CHROMEDRIVER_CANDIDATES = ("/usr/bin/chromedriver",)
TRANSCRIBE_TIMEOUT_S = 300.0
ERROR_TIMEOUT_S = 60.0


def _first_executable(candidates: tuple[str, ...], name: str) -> str | None:
    for candidate in candidates:
        if os.access(candidate, os.X_OK):
            return candidate
    return shutil.which(name)


@pytest.fixture(scope="module")
def download_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the browser saves downloads."""
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture(scope="module")
def browser(download_dir: Path) -> Iterator[Any]:
    """A headless Chromium through chromedriver (Debian's packages); skipped with the reason if absent.

    Downloads land in ``download_dir`` without a prompt.
    """
    chromium = _first_executable(CHROMIUM_CANDIDATES, "chromium")
    driver_path = _first_executable(CHROMEDRIVER_CANDIDATES, "chromedriver")
    if chromium is None or driver_path is None:
        pytest.skip(
            "needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver; "
            ".ci/run installs them)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in (
        "--headless=new",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1200,1000",
        "--no-first-run",
        "--disable-extensions",
    ):
        options.add_argument(argument)
    if os.geteuid() == 0:
        options.add_argument("--no-sandbox")  # Chromium's sandbox refuses to run as root
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    options.add_experimental_option(
        "prefs",
        {
            "download.default_directory": str(download_dir),
            "download.prompt_for_download": False,
            "safebrowsing.enabled": False,
        },
    )
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_script_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


class WebServer(NamedTuple):
    """The server under test: its URL, its API key and the engine it serves."""

    base_url: str
    key: str
    engine: Any


@pytest.fixture(scope="module")
def web_server() -> Iterator[WebServer]:
    """The real app under uvicorn on 127.0.0.1 (``tests/fixtures/server.py``), the test model, a key."""
    model = find_test_model()
    if model is None:
        pytest.skip("no test model: run `make offline-model` (or set GPU_TRANSCRIBE_TEST_MODEL)")
    from gpu_transcribe_api.config import ServerConfig
    from gpu_transcribe_engine.engine import WhisperEngine
    from tests.fixtures.server import live_server, reuse_engine, wait_until

    key = "web-test-key"
    engine = WhisperEngine.load(str(model), device="cpu")
    with live_server(ServerConfig(api_key=key), reuse_engine(engine)) as server:
        wait_until(server.state.loaded.is_set, what="the engine to be handed to the server")
        yield WebServer(server.url, key, engine)


def open_page(browser: Any, base_url: str, key: str) -> None:
    """Load the page and type the API key."""
    from selenium.webdriver.common.by import By

    browser.get(f"{base_url}/")
    field = browser.find_element(By.ID, "api-key")
    field.clear()
    field.send_keys(key)


def record_statuses(browser: Any) -> None:
    """Keep every text the status line shows in ``window.__statuses`` (queued/running pass quickly)."""
    browser.execute_script(
        "window.__statuses = [];"
        "const line = document.getElementById('status');"
        "new MutationObserver(() => window.__statuses.push(line.textContent))"
        ".observe(line, {childList: true, characterData: true, subtree: true});"
    )


def submit(browser: Any, path: Path, language: str) -> None:
    """Choose ``path`` in the file field, pick the language and press Transcribe."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    browser.find_element(By.ID, "file").send_keys(str(path))
    Select(browser.find_element(By.ID, "language")).select_by_value(language)
    browser.find_element(By.ID, "submit").click()


def wait_for_outcome(browser: Any, timeout_s: float) -> tuple[str, str]:
    """Wait until the page shows a transcript or an error; returns (transcript text, error text)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def outcome(driver: Any) -> tuple[str, str] | None:
        error = driver.find_element(By.ID, "error")
        transcript = driver.find_element(By.ID, "transcript")
        links = driver.find_elements(By.CSS_SELECTOR, "#downloads a")
        done = "Done" in driver.find_element(By.ID, "status").text
        if error.is_displayed():
            return "", error.text
        if transcript.is_displayed() and transcript.text.strip() and done and links:
            return transcript.text, ""
        return None

    result = WebDriverWait(browser, timeout_s, poll_frequency=0.5).until(outcome)
    assert result is not None
    return result


def download(browser: Any, download_dir: Path, link: Any, timeout_s: float = 20.0) -> str:
    """Click a download link and return the text of the file the browser saved."""
    from selenium.webdriver.support.ui import WebDriverWait

    target = download_dir / link.get_attribute("download")
    target.unlink(missing_ok=True)
    link.click()
    WebDriverWait(browser, timeout_s, poll_frequency=0.2).until(lambda _: target.exists())
    text: str = target.read_text(encoding="utf-8")
    return text


def severe_console_messages(browser: Any) -> list[str]:
    """The browser console's errors since the last call (CSP violations, failed loads, script errors)."""
    return [entry["message"] for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]


def test_page_is_self_contained_and_never_inserts_html(web_server: WebServer) -> None:
    """GET / needs no key and serves one file that loads nothing from elsewhere and never parses HTML."""
    import httpx

    base_url = web_server.base_url
    response = httpx.get(f"{base_url}/", timeout=10.0)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    for outside in ("http://", "https://", "//cdn", "<script src", "@import", "url("):
        assert outside not in page, outside
    for parser in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert parser not in page, parser
    assert "Content-Security-Policy" in page and "connect-src 'self'" in page


@pytest.mark.slow
def test_page_transcribes_a_file_and_offers_every_download(
    browser: Any, web_server: WebServer, download_dir: Path
) -> None:
    """Key, file, language, submit: the job is shown queued or running, then the engine's words, then a
    Blob download for txt, srt, vtt and json, each rendered by the server in its format."""
    from selenium.webdriver.common.by import By

    base_url, key, _ = web_server
    open_page(browser, base_url, key)
    for field in ("api-key", "file", "language"):
        assert browser.find_element(By.CSS_SELECTOR, f"label[for='{field}']").text.strip()
    assert browser.execute_script("return sessionStorage.getItem('gpu-transcribe.api-key')") == key
    assert browser.execute_script("return localStorage.length") == 0
    record_statuses(browser)
    audio = clip_path("en_jfk.flac")
    submit(browser, audio, "en")
    transcript, error = wait_for_outcome(browser, TRANSCRIBE_TIMEOUT_S)
    assert not error, error
    statuses = browser.execute_script("return window.__statuses")
    assert any(s.startswith(("Queued", "Running")) for s in statuses), statuses

    from gpu_transcribe_engine.options import TranscribeOptions

    # The server is idle now (the page has its answer), so the engine is free for the reference run.
    expected = web_server.engine.transcribe_file(audio, TranscribeOptions(language="en")).text
    assert word_error_rate(expected, transcript, "en") <= 0.05, (expected, transcript)
    assert normalize_text(transcript, "en").startswith("and so my fellow americans")

    links = {
        link.get_attribute("data-format"): link
        for link in browser.find_elements(By.CSS_SELECTOR, "#downloads a")
    }
    assert set(links) == {"txt", "srt", "vtt", "json"}
    bodies = {}
    for fmt, link in links.items():
        assert link.get_attribute("download") == f"en_jfk.{fmt}"
        assert link.get_attribute("href").startswith("blob:")
        bodies[fmt] = download(browser, download_dir, link)
    assert word_error_rate(expected, bodies["txt"], "en") <= 0.05, bodies["txt"]
    assert bodies["srt"].startswith("1\n00:00:00,"), bodies["srt"]
    assert " --> " in bodies["srt"]
    # readable subtitles are the page's default: at most 42 characters a line, 2 lines a cue
    assert all(len(line) <= 42 for line in bodies["srt"].splitlines()), bodies["srt"]
    assert all(len(cue.splitlines()) <= 4 for cue in bodies["srt"].strip().split("\n\n")), bodies["srt"]
    assert bodies["vtt"].startswith("WEBVTT"), bodies["vtt"]
    verbose = json.loads(bodies["json"])
    assert verbose["language"] == "english" and verbose["segments"], verbose  # OpenAI names the language
    assert severe_console_messages(browser) == []


def test_page_shows_server_errors_as_text(browser: Any, web_server: WebServer, tmp_path: Path) -> None:
    """A wrong key shows OpenAI's ``{"error": {"message"}}``; a message containing markup (the name of a
    file that is not audio, ``<b>not audio.wav``) is shown literally: no element is made of it."""
    from selenium.webdriver.common.by import By

    base_url, key, _ = web_server
    bogus = tmp_path / "<b>not audio.wav"
    bogus.write_bytes(b"this is text, not a recording\n" * 100)

    open_page(browser, base_url, "wrong-key")
    submit(browser, clip_path("en_jfk.flac"), "en")
    _, error = wait_for_outcome(browser, ERROR_TIMEOUT_S)
    assert "401" in error, error

    open_page(browser, base_url, key)
    submit(browser, bogus, "en")
    _, error = wait_for_outcome(browser, ERROR_TIMEOUT_S)
    assert "<b>not audio.wav" in error, error
    box = browser.find_element(By.ID, "error")
    assert box.find_elements(By.TAG_NAME, "b") == []
    assert "<b>not audio.wav" in box.get_attribute("textContent")
    assert browser.find_element(By.ID, "result").is_displayed() is False


@pytest.mark.slow
def test_page_retries_a_full_queue_then_falls_back_when_jobs_answer_404(
    browser: Any, web_server: WebServer, download_dir: Path
) -> None:
    """``POST /v1/jobs`` answered 429 with ``Retry-After: 1`` is sent again after a second; then a server
    without jobs (404; both made by the page's own fetch): the page asks ``POST /v1/audio/transcriptions``
    for verbose_json, then for srt and vtt, and still offers every download; the subtitles are the engine's,
    in the layout the page asked for."""
    from selenium.webdriver.common.by import By

    base_url, key, _ = web_server
    open_page(browser, base_url, key)
    browser.execute_script(
        "const real = window.fetch;"
        "let jobPosts = 0;"
        "window.fetch = (url, init) => !String(url).endsWith('v1/jobs') ? real(url, init)"
        "  : Promise.resolve(++jobPosts === 1"
        "    ? new Response('{}', {status: 429, headers: {'Retry-After': '1'}})"
        '    : new Response(\'{"detail": "Not Found"}\', {status: 404}));'
    )
    record_statuses(browser)
    submit(browser, clip_path("en_jfk.flac"), "en")
    transcript, error = wait_for_outcome(browser, TRANSCRIBE_TIMEOUT_S)
    assert not error, error
    assert normalize_text(transcript, "en").startswith("and so my fellow americans")
    links = browser.find_elements(By.CSS_SELECTOR, "#downloads a")
    assert {link.get_attribute("data-format") for link in links} == {"txt", "srt", "vtt", "json"}
    statuses = browser.execute_script("return window.__statuses")
    assert any(s.startswith("The server is busy; trying again in 1 s") for s in statuses), statuses
    by_format = {link.get_attribute("data-format"): link for link in links}
    srt = download(browser, download_dir, by_format["srt"])
    vtt = download(browser, download_dir, by_format["vtt"])
    assert srt.startswith("1\n00:00:00,") and "fellow Americans" in srt, srt

    from gpu_transcribe_engine.options import TranscribeOptions
    from gpu_transcribe_engine.writers import render

    # The subtitles are the engine's, laid out as the page asked (its default: readable, 42 x 2): what
    # `run --local --max-line-width 42 --max-line-count 2` writes for the same clip.
    options = TranscribeOptions(language="en", max_line_width=42, max_line_count=2)
    reference = web_server.engine.transcribe_file(clip_path("en_jfk.flac"), options)
    assert srt == render(reference, "srt"), (srt, render(reference, "srt"))
    assert vtt == render(reference, "vtt"), (vtt, render(reference, "vtt"))
    assert srt.count(" --> ") > len(reference.segments), srt  # cues split inside segments
