"""The built book, read as a reader would: served on 127.0.0.1 and opened in headless Chromium.

By default it reads the smoke build made by the test session; with ``MCLIB_BROWSER_HTML=_build/html``
it reads an existing build instead (``.ci/run`` does this after ``make book``). Nothing is skipped: if
Chromium or its driver cannot start, the test fails and says why.

Every page of ``_toc.yml`` is opened once at desktop width (1400 px) and once at phone width (400 px);
what a reader sees is measured then (tables, figures, outputs, reprs, overflow) and the tests below judge
it. Full-page screenshots of the index, the report, A8 and C6 at both widths are kept under
``<build>/screenshots/`` (``report-1400.png``, ``report-400.png``, ...).
"""
from __future__ import annotations

import functools
import http.server
import json
import os
import pkgutil
import re
import shutil
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

import mclib
from mclib import book, claims

CHROMIUM = os.environ.get("MCLIB_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("MCLIB_CHROMEDRIVER", "/usr/bin/chromedriver")
pytestmark = pytest.mark.slow

WIDTHS = (1400, 400)
#: Pages kept as screenshots at both widths, by name: (file stem for the png, toc entry).
SHOTS = {"index": "book/intro", "report": "notebooks/report", "a1": "notebooks/a1_real_paths",
         "a8": "notebooks/a8_detection", "b": "notebooks/b_internal_codes", "c2": "notebooks/c2_backdoor_repair",
         "c6": "notebooks/c6_robustness_hessian", "own_model": "notebooks/own_model"}
MAX_OUTPUT_LINES = 40
REPRS = ("<matplotlib.", "Text(", "Legend at 0x")
#: A markdown table's delimiter row shown as text; docutils' smart quotes turn "---" into an em dash.
PIPE_TABLE = re.compile(r"\|\s*:?(?:-{3,}|[\u2014\u2013]-*)\s*:?\s*\|")
VERDICTS = {"holds": "hold", "fails": "fail", "inconclusive": "inconclusive"}


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
                 "--disable-dev-shm-usage", "--window-size=1400,900", "--hide-scrollbars",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        opts.add_argument(flag)
    try:
        driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    except Exception as err:  # say why, never skip
        pytest.fail(f"headless Chromium could not start: {type(err).__name__}: {err}")
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(30)
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


def _shots(html_dir: Path) -> Path:
    out = html_dir.parent / "screenshots"
    out.mkdir(parents=True, exist_ok=True)
    return out


# What a reader sees on one page, measured in the page itself. "main" is the article (no navigation, no
# sidebars); code *inputs* are left out of the text searched for pipe tables, reprs stay in outputs.
_MEASURE = r"""
const main = document.querySelector('article.bd-article') || document.querySelector('main') || document.body;
const outputs = Array.from(main.querySelectorAll('.cell_output'));
const prose = main.cloneNode(true);
prose.querySelectorAll('.cell_input, script, style, mjx-container').forEach(e => e.remove());
const lines = t => t.replace(/\n+$/, '').split('\n').length;
const scrollable = (el) => {
  for (let e = el; e && e !== main.parentElement; e = e.parentElement) {
    const o = getComputedStyle(e).overflowX;
    if ((o === 'auto' || o === 'scroll') && e.scrollWidth > e.clientWidth - 1) return true;
  }
  return false;
};
const right = main.getBoundingClientRect().right;
return {
  prose: prose.innerText,
  output_text: outputs.map(o => o.innerText).join('\n'),
  long_outputs: outputs.flatMap(o => Array.from(o.querySelectorAll('pre')).map(p => lines(p.innerText))
                                .concat(Array.from(o.querySelectorAll('table')).map(t => t.querySelectorAll('tbody tr').length)))
                       .filter(n => n > %(max)d),
  images: Array.from(main.querySelectorAll('img')).map(i => {
    const fig = i.closest('figure');
    const cap = fig && fig.querySelector('figcaption');
    return {src: i.src.slice(0, 80), alt: i.getAttribute('alt') || '', caption: cap ? cap.innerText.trim() : ''};
  }),
  tables: Array.from(main.querySelectorAll('table')).map(t => ({
    head: t.querySelector('thead th') ? t.querySelector('thead th').innerText.trim() : '',
    ids: Array.from(t.querySelectorAll('tbody tr')).map(r => r.cells.length ? r.cells[0].innerText.trim() : ''),
    links: Array.from(t.querySelectorAll('tbody tr')).map(r => {
      const a = r.cells.length ? r.cells[0].querySelector('a[href]') : null; return a ? a.href : '';
    }),
    heights: Array.from(t.querySelectorAll('tbody tr')).map(r => Math.round(r.getBoundingClientRect().height)),
  })),
  cut_off: Array.from(main.querySelectorAll('table, pre, img, figure, .mclib-card, code'))
    .filter(e => e.getBoundingClientRect().right > right + 1 && !scrollable(e))
    .map(e => e.tagName.toLowerCase() + '.' + (e.className || '').toString().split(' ')[0]),
  page_scrolls_sideways: document.documentElement.scrollWidth > window.innerWidth + 1,
  parameter_cells: Array.from(main.querySelectorAll('.cell_input')).filter(c => /^preset = [\s\S]*^cache_dir = /m.test(c.innerText)).length,
  rerun: Array.from(main.querySelectorAll('.mclib-rerun pre')).map(p => ({
    text: p.innerText, wraps: getComputedStyle(p).whiteSpace.startsWith('pre-wrap'),
    fits: p.scrollWidth <= p.clientWidth + 1})),
  links: Array.from(document.querySelectorAll('a[href]')).map(a => a.href),
  placeholder: document.documentElement.outerHTML.includes('OWNER/REPO'),
  // the summary box under the title: where its verdicts and the build's scale end, from the top of the page
  summary: (() => {
    const box = main.querySelector('.mclib-summary');
    if (!box) return null;
    const bottom = e => Math.round(e.getBoundingClientRect().bottom + window.scrollY);
    return {ids: Array.from(box.querySelectorAll('.mclib-summary-id')).map(a => a.innerText.trim()),
            badges: Array.from(box.querySelectorAll('.mclib-badge')).map(b => ({text: b.innerText.trim(), bottom: bottom(b)})),
            scale: Array.from(box.querySelectorAll('.mclib-summary-scale dd')).map(d => ({text: d.innerText.trim(), bottom: bottom(d)})),
            screen: window.innerHeight};
  })(),
  // the smallest text of each figure as rendered: its font size (points, recorded by mclib.cards.figure_html)
  // at the PNG's dpi, scaled by the displayed over the natural width of the image
  figure_text: Array.from(main.querySelectorAll('figure.mclib-figure img')).map(i => ({
    caption: ((i.closest('figure').querySelector('figcaption') || {}).innerText || '').slice(0, 40),
    px: i.dataset.fontPt && i.naturalWidth
      ? +i.dataset.fontPt * +i.dataset.dpi / 72 * i.getBoundingClientRect().width / i.naturalWidth : null})),
  // stacked table cells (phone width) that show no column label
  unlabelled_cells: Array.from(main.querySelectorAll('.cell_output table.table tbody td:not(:first-child)'))
    .filter(td => getComputedStyle(td).display === 'block')
    .filter(td => { const c = getComputedStyle(td, '::before').content; return !c || c === 'none' || c === 'normal'; }).length,
  // inline code names (no spaces) split over two lines
  broken_names: Array.from(main.querySelectorAll('table code.literal'))
    .filter(c => !/\s/.test(c.innerText.trim()) && c.getClientRects().length > 1).map(c => c.innerText.trim()),
};
""" % {"max": MAX_OUTPUT_LINES}


def _full_page_screenshot(browser, path: Path, width: int) -> None:
    height = browser.execute_script("return Math.max(document.body.scrollHeight, document.documentElement.scrollHeight)")
    browser.set_window_size(width, min(int(height), 12000))
    browser.save_screenshot(str(path))


@pytest.fixture(scope="module")
def pages(browser, server, html_dir):
    """Every page of the toc at both widths: {(entry, width): measurements}; screenshots on the way."""
    shots, found = _shots(html_dir), {}
    names = {entry: name for name, entry in SHOTS.items()}
    for width in WIDTHS:
        for entry in _toc(html_dir):
            browser.set_window_size(width, 900)
            _open(browser, server + entry + ".html")
            found[entry, width] = browser.execute_script(_MEASURE)
            if entry in names:
                # let MathJax typeset before the picture is taken
                browser.execute_async_script(
                    "const done = arguments[arguments.length - 1];"
                    "(window.MathJax && MathJax.startup ? MathJax.startup.promise : Promise.resolve()).then(() => done(1));")
                _full_page_screenshot(browser, shots / f"{names[entry]}-{width}.png", width)
    browser.set_window_size(1400, 900)
    return found


def _problems(pages: dict, check) -> list[str]:
    out = []
    for (entry, width), page in pages.items():
        out += [f"{entry} at {width} px: {p}" for p in check(page, width)]
    return out


# ---- navigation, links, math --------------------------------------------------------------------------


def test_index_loads_and_every_chapter_opens(browser, server, html_dir):
    from selenium.webdriver.support.ui import WebDriverWait

    _open(browser, server)
    # index.html is a redirect to the root page: read the navigation once it has been followed
    root = _toc(html_dir)[0] + ".html"
    WebDriverWait(browser, 30).until(lambda d: d.current_url.endswith(root) and d.execute_script(
        "return document.readyState") == "complete")
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


def _typeset(browser, url) -> int:
    from selenium.webdriver.support.ui import WebDriverWait

    _open(browser, url)
    return WebDriverWait(browser, 30).until(
        lambda d: d.execute_script("return document.querySelectorAll('mjx-container').length") or None)


def test_math_renders_offline_in_pages_and_in_docstrings(browser, server):
    assert _typeset(browser, server + "book/intro.html") >= 2
    scripts = browser.execute_script("return Array.from(document.scripts).map(s => s.src).filter(s => /mathjax/i.test(s))")
    assert scripts and all(s.startswith(server) for s in scripts), f"MathJax must be served locally, got {scripts}"
    # a docstring's .. math:: and :math: (mclib.models.Normalize) render as mathematics, not code
    assert _typeset(browser, server + "book/generated/mclib.models.html") >= 2


# ---- the reproduction report ----------------------------------------------------------------------------


def _report(pages) -> dict:
    """The report page at desktop width, with only its claims tables (first column "id"): a build whose
    claims come from different runs adds a provenance table, which is no claims table."""
    page = dict(pages["notebooks/report", 1400])
    page["tables"] = [t for t in page["tables"] if t.get("head") == "id"]
    return page


def test_report_is_an_html_table_with_one_row_per_catalogued_claim(pages):
    ids = [i for t in _report(pages)["tables"] for i in t["ids"]]
    assert ids, "the report page holds no HTML table (is the markdown output rendered as text?)"
    assert sorted(ids) == sorted(claims.CATALOGUE), f"report rows {ids}, catalogue {list(claims.CATALOGUE)}"


def test_report_links_every_claim_to_its_chapter(pages):
    rows = {i: link for t in _report(pages)["tables"] for i, link in zip(t["ids"], t["links"])}
    unlinked = [i for i, link in rows.items() if not re.search(r"/notebooks/[a-z0-9_]+\.html(#.*)?$", link)]
    assert rows and not unlinked, f"report rows whose id does not link to a chapter: {unlinked}"


#: the tallest report row a reader should meet at desktop width: about 15 lines of the table's text
MAX_REPORT_ROW_PX = 400


def test_report_rows_stay_short_enough_to_scan(pages):
    # long measured values and reasons fold into <details>: a row of a whole paragraph per column made the
    # report 11,857 px tall at 1400 px, the A1 row alone about 1,700 px
    tall = {i: h for t in _report(pages)["tables"] for i, h in zip(t["ids"], t["heights"]) if h > MAX_REPORT_ROW_PX}
    assert not tall, f"report rows taller than {MAX_REPORT_ROW_PX} px at 1400 px: {tall}"


def _counts(html_dir: Path) -> dict[str, int]:
    counts = dict.fromkeys(VERDICTS, 0)
    for path in (html_dir.parent / "claims").glob("*.json"):
        if not path.name.startswith("_"):
            rec = json.loads(path.read_text())
            status = rec.get("status") or ({True: "holds", False: "fails"}.get(rec.get("holds")))
            if status in counts:
                counts[status] += 1
    return counts


def test_report_states_the_holds_fails_inconclusive_counts(pages, html_dir):
    text = re.sub(r"\s+", " ", _report(pages)["prose"])
    missing = []
    for status, n in _counts(html_dir).items():
        stem = VERDICTS[status]
        if not re.search(rf"\b{n}\b\W+(?:\w+\W+){{0,2}}?{stem}|{stem}\w*\W+{n}\b", text, re.I):
            missing.append(f"{n} {status}")
    assert not missing, f"the report page does not state the counts {missing}"


# ---- every page: prose, not dumps --------------------------------------------------------------------------


def test_no_page_shows_pipe_text_tables(pages):
    found = _problems(pages, lambda p, w: ["a markdown table shown as text"]
                      if w == 1400 and PIPE_TABLE.search(p["prose"]) else [])
    assert not found, "\n".join(found)


def test_no_page_shows_python_reprs(pages):
    found = _problems(pages, lambda p, w: [f"output shows {r!r}" for r in REPRS if r in p["output_text"]]
                      if w == 1400 else [])
    assert not found, "\n".join(found)


def test_no_code_output_is_longer_than_40_lines(pages):
    found = _problems(pages, lambda p, w: [f"outputs of {p['long_outputs']} lines/rows"]
                      if w == 1400 and p["long_outputs"] else [])
    assert not found, "\n".join(found)


def test_every_figure_has_a_caption_and_alt_text(pages):
    def check(page, width):
        if width != 1400:
            return []
        out = []
        for img in page["images"]:
            if not img["caption"]:
                out.append(f"image without a caption ({img['src']}...)")
            if not img["alt"].strip() or re.search(r"\.(png|svg|jpe?g)$", img["alt"]):
                out.append(f"image whose alt text is {img['alt']!r}")
        return out

    found = _problems(pages, check)
    assert not found, "\n".join(found)


def test_nothing_is_cut_off_at_desktop_or_phone_width(pages):
    found = _problems(pages, lambda p, w: [f"wider than the text column and not scrollable: {p['cut_off']}"]
                      * bool(p["cut_off"]) + ["the whole page scrolls sideways"] * p["page_scrolls_sideways"])
    assert not found, "\n".join(found)


def test_each_chapter_shows_its_parameters_once_and_a_rerun_command_that_wraps(pages, html_dir):
    def check(page, width):
        out = [f"{page['parameter_cells']} parameter cells"] if page["parameter_cells"] > 1 else []
        for box in page["rerun"]:
            if ".venv/bin/python -m mclib.book run notebooks/" not in box["text"]:
                out.append(f"rerun box without the fresh-clone command: {box['text'][:80]!r}")
            if not (box["wraps"] and box["fits"]):
                out.append("rerun command scrolls instead of wrapping")
        return out

    chapters = {k: v for k, v in pages.items() if k[0].startswith("notebooks/")}
    assert all(p["rerun"] for p in chapters.values()), "a chapter page lacks its rerun box"
    found = _problems(chapters, check)
    assert not found, "\n".join(found)


# ---- reach: launch buttons, repository, bibliography, API -------------------------------------------------------


def test_no_page_publishes_the_placeholder_address(pages, html_dir):
    found = [f"{entry} at {w} px" for (entry, w), p in pages.items() if p["placeholder"]]
    assert not found, f"pages holding OWNER/REPO: {found}"
    # every published file, the API pages and the downloadable notebooks included
    files = [p for p in html_dir.rglob("*") if p.is_file() and p.suffix in (".html", ".ipynb", ".txt", ".js", ".json")]
    held = [str(p.relative_to(html_dir)) for p in files if "OWNER/REPO" in p.read_text(errors="ignore")]
    assert files and not held, f"published files holding OWNER/REPO: {held}"


def test_chapters_have_binder_colab_and_repository_buttons_from_one_url(pages, html_dir):
    cfg = yaml.safe_load((html_dir.parent / "src" / "_config.yml").read_text())
    repo = (cfg["repository"].get("url") or "").rstrip("/")
    if not repo:  # a build that knew no repository address (mclib.site): no launch button at all
        links = pages["notebooks/c6_robustness_hessian", 1400]["links"]
        assert not [u for u in links if "mybinder.org" in u or "colab.research.google.com" in u], links
        return
    path = urllib.parse.urlparse(repo).path  # /OWNER/REPO
    branch = cfg["repository"].get("branch", "main")
    links = pages["notebooks/c6_robustness_hessian", 1400]["links"]
    want = {"binder": f"mybinder.org/v2/gh{path}/{branch}?urlpath=",
            "colab": f"colab.research.google.com/github{path}/blob/{branch}/notebooks/c6_robustness_hessian.ipynb",
            "repository": repo}
    missing = [k for k, frag in want.items() if not any(frag in u for u in links)]
    assert not missing, f"the C6 page lacks the {missing} button(s) built from {repo}"


def test_bibliography_links_every_arxiv_paper(pages, html_dir):
    bib = (html_dir.parent / "src" / "book" / "references.bib").read_text()
    eprints = re.findall(r"eprint\s*=\s*\{([0-9.]+)\}", bib)
    links = set(pages["book/bibliography", 1400]["links"])
    assert len(eprints) >= 3
    unlinked = [e for e in eprints if f"https://arxiv.org/abs/{e}" not in links]
    assert not unlinked, f"bibliography entries without their arXiv link: {unlinked}"


def test_api_page_lists_every_module_with_its_one_line_description(pages):
    rows = {}
    for table in pages["book/api", 1400]["tables"]:
        rows.update(dict.fromkeys(table["ids"]))
    plain = lambda t: " ".join(re.sub(r"[`*:]", "", t).split())  # noqa: E731
    text = plain(pages["book/api", 1400]["prose"])
    modules = [f"mclib.{m.name}" for m in pkgutil.iter_modules(mclib.__path__) if not m.name.startswith("_")]
    missing = [m for m in modules if m not in rows]
    assert not missing, f"book/api.md does not list {missing}"
    for m in modules:
        first = (__import__(m, fromlist=["_"]).__doc__ or "").strip().splitlines()[0]
        # autosummary shows the first sentence
        assert " ".join(plain(first.split(". ")[0]).split()[:4]) in text, f"{m}'s description {first!r} is not on the API page"


# ---- the first screen: verdicts and scale; figures and tables legible at both widths (issue 28) ----------------

#: How far down a reader must find a chapter's verdicts and the build's scale: 1,000 px at 1400 px, two
#: screens at 400 px.
FIRST_SCREEN = {1400: lambda screen: 1000, 400: lambda screen: 2 * screen}
#: The smallest figure text, in CSS px, at each width.
MIN_FIGURE_TEXT_PX = {1400: 11, 400: 9}


def _chapter_claims(html_dir: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for path in (html_dir.parent / "claims").glob("*.json"):
        if not path.name.startswith("_"):
            rec = json.loads(path.read_text())
            out.setdefault(Path(rec.get("chapter") or "").stem, []).append(rec["id"])
    return out


def test_every_chapter_shows_its_verdicts_and_the_builds_scale_on_the_first_screen(pages, html_dir):
    meta = json.loads((html_dir.parent / "claims" / "_meta.json").read_text())
    recorded = _chapter_claims(html_dir)

    def check(page, width, entry):
        box = page["summary"]
        if box is None:
            return ["no summary box"]
        limit = FIRST_SCREEN[width](box["screen"])
        stem = Path(entry).stem
        out = []
        if stem != "report" and sorted(box["ids"]) != sorted(recorded.get(stem, [])):
            out.append(f"the box lists {box['ids']}, the chapter recorded {recorded.get(stem, [])}")
        if (stem == "report" or recorded.get(stem)) and not box["badges"]:
            out.append("no verdict badge")
        late = [b["text"] for b in box["badges"] if b["bottom"] > limit]
        if late:
            out.append(f"verdicts below {limit} px: {late}")
        scale = [d for d in box["scale"] if "preset" in d["text"]]
        if not scale:
            out.append("no 'this build' line")
        elif scale[0]["bottom"] > limit:
            out.append(f"the build's scale ends at {scale[0]['bottom']} px, below {limit} px")
        elif not (f"preset {meta.get('preset')}" in scale[0]["text"] and "seed" in scale[0]["text"]
                  and "train" in scale[0]["text"]):
            out.append(f"the scale line lacks dataset, preset or seed: {scale[0]['text']!r}")
        return out

    chapters = {k: v for k, v in pages.items() if k[0].startswith("notebooks/")}
    found = [f"{entry} at {w} px: {p}" for (entry, w), page in chapters.items() for p in check(page, w, entry)]
    assert not found, "\n".join(found)


def test_figure_text_is_legible_at_phone_and_desktop_width(pages):
    def check(page, width):
        out = []
        for fig in page["figure_text"]:
            if fig["px"] is None:
                out.append(f"figure {fig['caption']!r} records no font size")
            elif fig["px"] < MIN_FIGURE_TEXT_PX[width] - 0.05:
                out.append(f"figure {fig['caption']!r}: smallest text {fig['px']:.1f} px")
        return out

    found = _problems(pages, check)
    assert sum(len(p["figure_text"]) for p in pages.values()) > 0
    assert not found, "\n".join(found)


def test_stacked_report_rows_keep_their_column_labels(pages):
    page = pages["notebooks/report", 400]
    assert page["unlabelled_cells"] == 0, f"{page['unlabelled_cells']} stacked report cells without a column label"


def test_api_page_keeps_module_names_whole(pages):
    broken = pages["book/api", 1400]["broken_names"]
    assert not broken, f"module names broken over two lines at 1400 px: {broken}"
