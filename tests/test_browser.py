"""The built book, read as a reader would: served on 127.0.0.1 and opened in headless Chromium.

By default it reads the smoke build made by the test session; with ``MCLIB_BROWSER_HTML=_build/html``
it reads an existing build instead (``.ci/run`` does this after ``make book``). Nothing is skipped: if
Chromium or its driver cannot start, the test fails and says why. Screenshots of the index and of one
chapter are saved under ``<build>/screenshots/`` for inspection.
"""
from __future__ import annotations

import functools
import http.server
import os
import shutil
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from mclib import book

CHROMIUM = os.environ.get("MCLIB_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("MCLIB_CHROMEDRIVER", "/usr/bin/chromedriver")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def html_dir(request):
    given = os.environ.get("MCLIB_BROWSER_HTML")
    if given:
        path = Path(given).resolve()
        assert (path / "index.html").exists(), f"MCLIB_BROWSER_HTML={given} holds no index.html"
        return path
    return Path(request.getfixturevalue("smoke_build")["html"]).parent


@pytest.fixture(scope="module")
def server(html_dir):
    handler = functools.partial(_QuietHandler, directory=str(html_dir))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists() and not shutil.which(p)]
    if missing:
        pytest.fail(f"cannot start the browser test: {missing} not found; install Debian's chromium and "
                    "chromium-driver (apt-get install chromium chromium-driver) or set MCLIB_CHROMIUM/MCLIB_CHROMEDRIVER")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1280,900",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        opts.add_argument(flag)
    try:
        driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    except Exception as err:  # say why, never skip
        pytest.fail(f"headless Chromium could not start: {type(err).__name__}: {err}")
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code


def _toc(html_dir: Path) -> list[str]:
    """The pages of the build being read, from the _toc.yml staged beside it."""
    return book.toc_files(html_dir.parent / "src")


def _open(browser, url):
    browser.get(url)
    assert "404" not in browser.title and "Error response" not in browser.page_source[:2000], url


def test_index_loads_and_every_chapter_opens(browser, server, html_dir):
    _open(browser, server)
    browser.save_screenshot(str(_shots(html_dir) / "index.png"))
    nav = browser.execute_script(
        "return Array.from(document.querySelectorAll('nav.bd-docs-nav a, .bd-sidebar-primary a.reference'))"
        ".map(a => a.href)")
    chapters = {u.split("#")[0] for u in nav if u.startswith(server)}
    for entry in _toc(html_dir)[1:]:
        assert any(u.endswith(entry + ".html") for u in chapters), f"the navigation lacks {entry}"
    for url in sorted(chapters):
        _open(browser, url)


def test_no_broken_internal_link_or_missing_image(browser, server, html_dir):
    pages = [server + f + ".html" for f in _toc(html_dir)]
    checked: dict[str, int] = {}
    for page in pages:
        _open(browser, page)
        links = browser.execute_script("return Array.from(document.querySelectorAll('a[href]')).map(a => a.href)")
        for link in {u.split("#")[0] for u in links if u.startswith(server)}:
            if link not in checked:
                checked[link] = _status(link)
            assert checked[link] == 200, f"{page} links to {link}, which answers {checked[link]}"
        broken = browser.execute_script(
            "return Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)")
        assert not broken, f"{page} has images that did not load: {broken}"
    assert len(checked) > len(pages)


def test_math_renders_offline(browser, server, html_dir):
    from selenium.webdriver.support.ui import WebDriverWait

    _open(browser, server + "book/intro.html")
    scripts = browser.execute_script("return Array.from(document.scripts).map(s => s.src).filter(s => /mathjax/i.test(s))")
    assert scripts and all(s.startswith(server) for s in scripts), f"MathJax must be served locally, got {scripts}"
    count = WebDriverWait(browser, 30).until(
        lambda d: d.execute_script("return document.querySelectorAll('mjx-container').length") or None)
    assert count >= 2
    chapter = next((f for f in _toc(html_dir) if f.startswith("notebooks/") and f != "notebooks/report"),
                   "notebooks/report")
    _open(browser, server + chapter + ".html")
    browser.save_screenshot(str(_shots(html_dir) / "chapter.png"))


def _shots(html_dir: Path) -> Path:
    out = html_dir.parent / "screenshots"
    out.mkdir(parents=True, exist_ok=True)
    return out
